"""The one error a service raises for a failure its caller can act on; the shared interceptor answers it."""

from collections.abc import Sequence

import grpc

# Suggested wait before a client tries again after UNAVAILABLE: about the time health takes to notice a recovery.
RETRY_AFTER_SECONDS = 2


class StatusError(Exception):
    """Answered with `code` and `message` (and `trailing_metadata`), whichever service raises it."""

    def __init__(
        self, code: grpc.StatusCode, message: str, *, trailing_metadata: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailing_metadata = tuple(trailing_metadata)


def invalid(message: str) -> StatusError:
    return StatusError(grpc.StatusCode.INVALID_ARGUMENT, message)


def unavailable(message: str) -> StatusError:
    """UNAVAILABLE for an outage of a dependency (a database, object storage): a Retry-After hint, and a pushback
    that stops the caller's channel from retrying at once, since an outage lasts longer than gRPC's sub-second
    retries, which only multiplied the wait."""
    return StatusError(
        grpc.StatusCode.UNAVAILABLE,
        message,
        trailing_metadata=(("retry-after", str(RETRY_AFTER_SECONDS)), ("grpc-retry-pushback-ms", "-1")),
    )


def database_unavailable() -> StatusError:
    return unavailable("the database is unavailable; try again shortly")
