"""The one table from gRPC status to HTTP status, and the error shape."""

import grpc
import pytest

from services.gateway.errors import HTTP_STATUS, ApiError, error_body, from_rpc_error


def rpc_error(code: grpc.StatusCode, details: str = "", trailing=()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNKNOWN, 500),
    ],
)
def test_status_table(code, status):
    assert from_rpc_error(rpc_error(code, "why")).status == status


def test_client_errors_keep_the_backend_message():
    error = from_rpc_error(rpc_error(grpc.StatusCode.NOT_FOUND, "no image abc"))
    assert (error.code, error.message) == ("not_found", "no image abc")


def test_internal_details_never_reach_the_client():
    error = from_rpc_error(rpc_error(grpc.StatusCode.INTERNAL, "Traceback: psycopg password=hunter2"))
    assert "hunter2" not in error.message and "Traceback" not in error.message
    assert error.code == "internal"


def test_unavailable_says_try_again_and_sets_retry_after():
    error = from_rpc_error(rpc_error(grpc.StatusCode.UNAVAILABLE, "connect failed 10.0.0.3:50053"))
    assert "10.0.0.3" not in error.message
    assert error.headers["Retry-After"] == "1"


def test_retry_after_comes_from_trailing_metadata():
    error = from_rpc_error(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", [("retry-after", "42")]))
    assert error.status == 429
    assert error.headers["Retry-After"] == "42"


def test_unauthenticated_challenges_for_a_bearer_token():
    error = from_rpc_error(rpc_error(grpc.StatusCode.UNAUTHENTICATED, "token expired"))
    assert error.headers["WWW-Authenticate"].startswith("Bearer")


def test_overrides_change_one_route_only():
    error = from_rpc_error(
        rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "too big"), overrides={grpc.StatusCode.RESOURCE_EXHAUSTED: 413}
    )
    assert (error.status, error.code) == (413, "payload_too_large")
    assert HTTP_STATUS[grpc.StatusCode.RESOURCE_EXHAUSTED] == 429


def test_error_body_shape():
    body = error_body(ApiError(404, "gone").code, "gone")
    assert body == {"error": {"code": "not_found", "message": "gone", "request_id": "-"}}
