"""What the client raises: the API's own error code and message, or why the server could not be reached."""


class TagsmithError(Exception):
    """Base of every error this package raises."""


class ApiError(TagsmithError):
    """The API answered an error: `status` (HTTP), `code` (e.g. not_found, payload_too_large) and `message`."""

    def __init__(self, status: int, code: str, message: str, *, request_id: str = "", retry_after: float | None = None):
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after


class NotLoggedIn(TagsmithError):
    """No access token, refresh token or credentials to get one."""


class ConnectionFailed(TagsmithError):
    """The server could not be reached, or the connection broke, even after retries."""


def api_error(status: int, body: object, *, retry_after: float | None = None) -> ApiError:
    """Reads the gateway's {"error": {"code", "message", "request_id"}}; anything else keeps the status alone."""
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        return ApiError(
            status,
            str(detail.get("code") or "error"),
            str(detail.get("message") or f"HTTP {status}"),
            request_id=str(detail.get("request_id") or ""),
            retry_after=retry_after,
        )
    return ApiError(status, "error", f"the server answered HTTP {status}", retry_after=retry_after)
