"""Server interceptors, applied in this order: observability (request id, logs, metrics, errors), then auth."""

import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterable

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.common.context import principal_var, set_deadline_from
from services.common.errors import StatusError, database_unavailable
from services.common.logging import request_id_var
from services.common.tokens import InvalidToken, KeysUnavailable, TokenVerifier

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# Health checks and reflection never need a token.
ALWAYS_OPEN_PREFIXES = tuple(
    f"/{pb2.DESCRIPTOR.services_by_name[name].full_name}/"
    for pb2, name in ((health_pb2, "Health"), (reflection_pb2, "ServerReflection"))
)
# Successful calls at least this slow are logged at INFO.
SLOW_CALL_SECONDS = 1.0


def _wrap_handler(handler: grpc.RpcMethodHandler, around: Callable) -> grpc.RpcMethodHandler:
    """Rebuilds `handler` with its behaviour passed through `around(behavior, streams_response)`."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            around(handler.unary_unary, False), handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            around(handler.stream_unary, False), handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            around(handler.unary_stream, True), handler.request_deserializer, handler.response_serializer
        )
    return grpc.stream_stream_rpc_method_handler(
        around(handler.stream_stream, True), handler.request_deserializer, handler.response_serializer
    )


def _metadata(details: grpc.HandlerCallDetails) -> dict[str, str]:
    return {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}


class RpcMetrics:
    """Prometheus counters and latency histograms per RPC, in the server's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "grpc_server_handled", "RPCs completed, by method and status code.", ["method", "code"], registry=registry
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds", "RPC latency in seconds, by method.", ["method"], registry=registry
        )


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Gives each call a request id, logs and measures it, and answers its errors: a StatusError with its status,
    a database that cannot be reached with UNAVAILABLE (in every service alike), anything else with INTERNAL."""

    def __init__(self, metrics: RpcMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None:
            return None
        request_id = _metadata(details).get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        return _wrap_handler(handler, lambda behavior, streams: self._around(behavior, streams, details, request_id))

    def _around(self, behavior, streams_response: bool, details, request_id: str):
        method = details.method

        async def unary(request, context):
            started = self._begin(context, request_id)
            try:
                return await behavior(request, context)
            except Exception as exc:
                await self._fail(exc, context)
            finally:
                self._finish(method, context, started)

        async def streaming(request, context):
            started = self._begin(context, request_id)
            try:
                async for reply in behavior(request, context):
                    yield reply
            except Exception as exc:
                await self._fail(exc, context)
            finally:
                self._finish(method, context, started)

        return streaming if streams_response else unary

    @staticmethod
    def _begin(context: grpc.aio.ServicerContext, request_id: str) -> float:
        request_id_var.set(request_id)
        set_deadline_from(context)
        context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
        return time.perf_counter()

    @staticmethod
    async def _fail(exc: Exception, context: grpc.aio.ServicerContext) -> None:
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        if _database_unreachable(exc):
            log.debug("database unreachable: %r", exc)
            await _abort_with(context, database_unavailable())
        if isinstance(exc, StatusError):
            await _abort_with(context, exc)
        log.exception("unhandled error")
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id_var.get()})")

    def _finish(self, method: str, context: grpc.aio.ServicerContext, started: float) -> None:
        elapsed = time.perf_counter() - started
        code = context.code() or grpc.StatusCode.OK
        code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        self._metrics.handled.labels(method, code_name).inc()
        self._metrics.latency.labels(method).observe(elapsed)
        level = rpc_log_level(code_name, elapsed)
        if not log.isEnabledFor(level):
            return
        log.log(
            level,
            "rpc %s %s",
            method,
            code_name,
            extra={"method": method, "code": code_name, "ms": round(elapsed * 1000, 2)},
        )


def _database_unreachable(exc: Exception) -> bool:
    """Whether `exc` means the database could not be reached. Looked up only in processes that loaded the
    database plumbing, so services without a database never import its driver."""
    db = sys.modules.get("services.common.db")
    return db is not None and isinstance(exc, db.UNREACHABLE)


async def _abort_with(context: grpc.aio.ServicerContext, error: StatusError) -> None:
    """Answers `error`; the request id stays in the trailing metadata, which abort would otherwise replace."""
    trailing = ((REQUEST_ID_HEADER, request_id_var.get()), *error.trailing_metadata)
    await context.abort(error.code, error.message, trailing_metadata=trailing)


def rpc_log_level(code_name: str, elapsed: float) -> int:
    """Server faults warn; other failures and slow calls are INFO; a quick success is DEBUG, since the gateway's
    access log and the metrics already cover it and a log line per internal call costs CPU on every hop."""
    if code_name in ("INTERNAL", "UNKNOWN", "DATA_LOSS"):
        return logging.WARNING
    if code_name != "OK" or elapsed >= SLOW_CALL_SECONDS:
        return logging.INFO
    return logging.DEBUG


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires a valid bearer access token on every method except the open ones."""

    def __init__(self, verifier: TokenVerifier, *, open_methods: Iterable[str] = ()) -> None:
        self._verifier = verifier
        self._open = frozenset(open_methods)

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or details.method in self._open or details.method.startswith(ALWAYS_OPEN_PREFIXES):
            return handler
        token = _bearer_token(_metadata(details).get("authorization", ""))
        return _wrap_handler(handler, lambda behavior, streams: self._around(behavior, streams, token))

    def _around(self, behavior, streams_response: bool, token: str | None):
        async def unary(request, context):
            await self._authenticate(token, context)
            return await behavior(request, context)

        async def streaming(request, context):
            await self._authenticate(token, context)
            async for reply in behavior(request, context):
                yield reply

        return streaming if streams_response else unary

    async def _authenticate(self, token: str | None, context: grpc.aio.ServicerContext) -> None:
        if not token:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token in 'authorization' metadata")
        try:
            principal_var.set(await self._verifier.verify(token))
        except InvalidToken as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except KeysUnavailable as exc:
            # Auth cannot be asked about the token's key: a retry may succeed, a new login would not help.
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))


def _bearer_token(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
