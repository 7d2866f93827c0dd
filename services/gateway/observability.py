"""ASGI middleware giving every request an id, a log line, metrics, and a clean 500 for unexpected errors."""

import logging
import re
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.interceptors import REQUEST_ID_HEADER
from services.common.logging import request_id_var
from services.gateway.errors import ApiError, error_response

log = logging.getLogger("services.gateway.access")

# A client-supplied id is kept only if it is short and plain, so it is safe in logs and gRPC metadata.
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]


class HttpMetrics:
    """Request counts, latencies and in-flight requests by route template, in the app's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to the end of the response, by method and route.",
            ["method", "route"],
            registry=registry,
        )
        self.in_flight = Gauge("http_requests_in_flight", "Requests being answered now.", registry=registry)


class RequestContext:
    """Outermost middleware: sets the request id for logs and backend calls, and returns it in X-Request-ID."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        request_id_var.set(request_id)
        state = {"status": 500, "started": False}
        extra_headers = [(REQUEST_ID_HEADER.encode(), request_id.encode()), *_COMMON_HEADERS]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
                present = {key.lower() for key, _ in message.get("headers", [])}
                added = [(key, value) for key, value in extra_headers if key not in present]
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        began = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            state["status"] = 499
            log.info("client went away during %s %s", scope["method"], scope["path"])
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not state["started"]:
                response = error_response(ApiError(500, f"internal error (request id {request_id})"))
                await response(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, state["status"], time.perf_counter() - began)

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        self.metrics.requests.labels(scope["method"], route, str(status)).inc()
        self.metrics.latency.labels(scope["method"], route).observe(elapsed)
        client = (scope.get("client") or ("",))[0]
        extra = {"route": route, "status": status, "ms": round(elapsed * 1000, 2), "client": client}
        log.info("%s %s %d", scope["method"], scope["path"], status, extra=extra)


def _request_id(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == REQUEST_ID_HEADER.encode():
            candidate = value.decode("latin-1")
            if _CLIENT_REQUEST_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex
