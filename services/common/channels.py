"""Client channels: round-robin over every address, retries on UNAVAILABLE, a deadline on every call."""

import asyncio
import json
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import TypeVar

import grpc

from services.common.context import time_remaining
from services.common.interceptors import REQUEST_ID_HEADER
from services.common.logging import NO_REQUEST_ID, request_id_var

MAX_MESSAGE_BYTES = 4 * 1024 * 1024

_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


def grpc_target(address: str) -> str:
    """Turns "host:port", "a:1,b:2" or a full "dns:///name:port" target into a gRPC target string.

    A comma-separated list becomes one static target, so round-robin spreads calls over all of them.
    """
    if "://" in address or address.startswith(("ipv4:", "ipv6:", "unix:")):
        return address
    parts = [p.strip() for p in address.split(",") if p.strip()]
    if len(parts) == 1:
        return f"dns:///{parts[0]}"
    return "ipv4:" + ",".join(parts)


class _CallDefaults:
    """Adds the request id and a deadline (the caller's remaining time, capped by a default) to every call."""

    def __init__(self, default_timeout: float, token_provider: Callable[[], str | None] | None) -> None:
        self._default_timeout = default_timeout
        self._token_provider = token_provider

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        request_id = request_id_var.get()
        if metadata.get(REQUEST_ID_HEADER) is None and request_id != NO_REQUEST_ID:
            metadata.add(REQUEST_ID_HEADER, request_id)
        token = self._token_provider() if self._token_provider else None
        if token and metadata.get("authorization") is None:
            metadata.add("authorization", f"Bearer {token}")
        timeout = details.timeout if details.timeout is not None else self._default_timeout
        remaining = time_remaining()
        if remaining is not None:
            timeout = min(timeout, remaining)
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )


# The stubs' interceptor methods are generic in the request and response types; so are these.
Request = TypeVar("Request")
Response = TypeVar("Response")
Requests = AsyncIterable[Request] | Iterable[Request]


class _UnaryUnary(_CallDefaults, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Request], Awaitable[grpc.aio.UnaryUnaryCall[Request, Response]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Request,
    ) -> grpc.aio.UnaryUnaryCall[Request, Response]:
        return await continuation(self._details(client_call_details), request)


class _UnaryStream(_CallDefaults, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Request], Awaitable[grpc.aio.UnaryStreamCall[Request, Response]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Request,
    ) -> grpc.aio.UnaryStreamCall[Request, Response]:
        return await continuation(self._details(client_call_details), request)


class _StreamUnary(_CallDefaults, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Requests[Request]], Awaitable[grpc.aio.StreamUnaryCall[Request, Response]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Requests[Request],
    ) -> grpc.aio.StreamUnaryCall[Request, Response]:
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStream(_CallDefaults, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Requests[Request]], Awaitable[grpc.aio.StreamStreamCall[Request, Response]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Requests[Request],
    ) -> grpc.aio.StreamStreamCall[Request, Response]:
        return await continuation(self._details(client_call_details), request_iterator)


def open_channel(
    address: str,
    *,
    default_timeout: float = 10.0,
    token_provider: Callable[[], str | None] | None = None,
    retries: bool = True,
) -> grpc.aio.Channel:
    """Opens an insecure channel (TLS is the mesh's or ingress's job) with the project's call defaults.

    `token_provider`, when given, supplies a bearer token for calls that carry none (service identity).
    """
    interceptors = [
        cls(default_timeout, token_provider) for cls in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)
    ]
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_retries", 1 if retries else 0),
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.keepalive_time_ms", 30_000),
        # gRPC's default reconnect backoff grows to 120 s; a restarted backend should be noticed within seconds.
        ("grpc.max_reconnect_backoff_ms", 10_000),
    ]
    return grpc.aio.insecure_channel(grpc_target(address), options=options, interceptors=interceptors)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata forwarding a caller's token downstream."""
    return (("authorization", f"Bearer {token}"),)


async def stream_answer(call: Awaitable[Response], *, peer: str) -> Response:
    """The answer of a client-streaming call. When the connection breaks while the request is being written, grpc's
    asyncio client cancels the call itself and raises CancelledError from it, though nobody cancelled the caller:
    that is the peer gone away, so it is raised as UNAVAILABLE, as any broken connection is."""
    try:
        return await call
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the caller itself is being cancelled (its client went away, a deadline)
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details=f"the connection to {peer} broke while the request was being sent",
        ) from None
