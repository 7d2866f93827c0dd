"""The one table from gRPC status to HTTP status, the JSON error shape, and the handlers that use them."""

import logging

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.logging import request_id_var

log = logging.getLogger(__name__)

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 503,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Statuses whose backend message may describe internals; the client gets a generic one instead.
_OPAQUE = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
_PLAIN_MESSAGES = {
    grpc.StatusCode.UNAVAILABLE: "a backend service is unavailable; try again shortly",
    grpc.StatusCode.DEADLINE_EXCEEDED: "a backend service did not answer in time; try again",
    grpc.StatusCode.CANCELLED: "the backend call was cancelled; try again",
}
_HTTP_CODES = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "already_exists",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "resource_exhausted",
    500: "internal",
    503: "unavailable",
    504: "deadline_exceeded",
}


class ApiError(Exception):
    """An error answered as {"error": {"code", "message"}} with the given HTTP status."""

    def __init__(self, status: int, message: str, *, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _HTTP_CODES.get(status, "error")
        self.message = message
        self.headers = headers or {}


def unauthenticated(message: str = "missing bearer token in the Authorization header") -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": 'Bearer realm="tagsmith"'})


def from_rpc_error(error: grpc.aio.AioRpcError, *, overrides: dict[grpc.StatusCode, int] | None = None) -> ApiError:
    """Translates a backend failure; `overrides` changes the HTTP status of some codes for one route."""
    code = error.code()
    status = (overrides or {}).get(code) or HTTP_STATUS.get(code, 500)
    if code in _OPAQUE or status >= 500:
        log.warning("backend call failed: %s %s", code.name, error.details())
        message = _PLAIN_MESSAGES.get(code, f"internal error (request id {request_id_var.get()})")
    else:
        message = error.details() or code.name.lower()
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="tagsmith", error="invalid_token"'
    if status in (429, 503):
        headers["Retry-After"] = _retry_after(error)
    return ApiError(status, message, code=_HTTP_CODES.get(status, code.name.lower()), headers=headers)


def _retry_after(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "retry-after" and str(value).isdigit():
            return str(value)
    return "1"


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "request_id": request_id_var.get()}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(error.code, error.message), status_code=error.status, headers=error.headers)


def install(app: FastAPI) -> None:
    """Makes failures from routes, backends, validation and routing answer in the one shape.

    Anything else is caught by the request middleware, which answers 500 without details.
    """

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(grpc.aio.AioRpcError)
    async def _rpc_error(request: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED and getattr(request.state, "anonymous", False):
            # The shared anonymous token was refused (e.g. auth's keys changed): log in afresh next time.
            request.app.state.anonymous.invalidate()
        return error_response(from_rpc_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(ApiError(400, _describe_validation(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(ApiError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {})))


def _describe_validation(exc: RequestValidationError) -> str:
    """One readable sentence per problem, e.g. "query.page_size: Input should be less than or equal to 100"."""
    parts = []
    for problem in exc.errors()[:5]:
        where = ".".join(str(p) for p in problem.get("loc", ()))
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
