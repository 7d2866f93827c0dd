"""Slow clients are cut off: a deadline for the request head (uvicorn has none) and a minimum pace for the body.

A client that trickles its request line and headers, or its body, would otherwise hold its connection, its memory
and a task for as long as it liked (slowloris). The rules follow nginx's client_header_timeout and Apache's
mod_reqtimeout: the head must arrive within a fixed time; the body may pause at most a while, and the time allowed
grows with the bytes received, so a slow but real upload finishes and a trickle does not.
"""

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.gateway.errors import ApiError


def _head_timeout_response() -> bytes:
    body = b"the request headers did not arrive in time"
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


def head_timeout_protocol(seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, closing a connection whose request head is not complete `seconds` after the
    connection opened or the request's first byte arrived (408, then close)."""

    class HeadTimeoutProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        # uvicorn's HttpToolsProtocol already narrows asyncio's BaseTransport to Transport; this follows uvicorn.
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._head_timer is None:
                self._arm_head_timer()

        def on_headers_complete(self) -> None:
            self._disarm_head_timer()
            super().on_headers_complete()

        def _arm_head_timer(self) -> None:
            self._head_timer = self.loop.call_later(seconds, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.write(_head_timeout_response())
                self.transport.close()

    return HeadTimeoutProtocol


class BodyTimeout(ApiError):
    def __init__(self) -> None:
        super().__init__(408, "the request body arrived too slowly; send it again", headers={"Connection": "close"})


class BodyReadTimeout:
    """ASGI middleware: each read of the body must arrive within `seconds` plus one second per `min_rate` bytes
    received so far; otherwise the route fails with 408 and the connection closes."""

    def __init__(self, app: ASGIApp, *, seconds: float, min_rate: int) -> None:
        self.app = app
        self.seconds = seconds
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, received, complete = time.monotonic(), 0, False

        async def paced_receive() -> Message:
            nonlocal received, complete
            if complete:
                # After the body only a disconnect can come, which responses may wait for as long as they stream.
                return await receive()
            allowed = started + self.seconds + received / self.min_rate - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(allowed, 0.0))
            except TimeoutError:
                raise BodyTimeout() from None
            received += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, paced_receive, send)
