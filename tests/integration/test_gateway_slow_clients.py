"""Slow clients against the real gateway server (uvicorn on a real socket): trickled heads and bodies are cut off,
a crowd of them does not hold up other clients, and idle keep-alive connections outlive a proxy's timeout."""

import asyncio
import time

import pytest
import uvicorn

from services.gateway.__main__ import uvicorn_config
from services.gateway.config import Settings
from tests.support.gateway_fixtures import gateway_settings
from tests.support.waiting import eventually

HEAD_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
SLACK = 1.5


@pytest.fixture
async def server(fake_backends):
    """The gateway as `python -m services.gateway` runs it, on a free port, with one-second timeouts."""
    address, _ = fake_backends
    settings = gateway_settings(
        address,
        host="127.0.0.1",
        port=0,
        header_timeout_seconds=HEAD_TIMEOUT,
        body_timeout_seconds=BODY_TIMEOUT,
        body_min_rate_bytes=500,
        keep_alive_timeout_seconds=3,
    )
    running = uvicorn.Server(uvicorn_config(settings))
    task = asyncio.create_task(running.serve())
    await eventually(lambda: running.started or task.done(), awaiting="the gateway to listen", interval=0.01)
    assert running.started, "the gateway did not start"
    yield running.servers[0].sockets[0].getsockname()[1]
    running.should_exit = True
    await task


async def _connect(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent before closing; fails if it keeps the connection open longer than `seconds`."""
    return await asyncio.wait_for(reader.read(), seconds)


async def _get(reader, writer, path: str = "/healthz") -> bytes:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    return head + await reader.readexactly(length)


def test_the_defaults_outlast_proxies_and_bound_heads_and_bodies():
    settings = Settings()
    config = uvicorn_config(settings)
    assert config.timeout_keep_alive == 75 > 60
    assert (settings.header_timeout_seconds, settings.body_timeout_seconds) == (10.0, 20.0)


async def test_a_connection_that_sends_nothing_is_closed(server):
    reader, writer = await _connect(server)
    started = time.monotonic()
    answer = await _closed_within(reader, HEAD_TIMEOUT + SLACK)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started >= HEAD_TIMEOUT * 0.9
    writer.close()


async def test_a_trickled_head_is_cut_off_at_the_head_timeout(server):
    reader, writer = await _connect(server)
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
    closed = asyncio.ensure_future(reader.read())
    for _ in range(20):
        if closed.done():
            break
        writer.write(b"X")  # one byte of a header every 0.2 s, forever
        await asyncio.sleep(0.2)
    answer = await asyncio.wait_for(closed, SLACK)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < HEAD_TIMEOUT + SLACK
    writer.close()


async def test_hundreds_of_trickling_sockets_do_not_hold_up_a_normal_client(server):
    crowd = [await _connect(server) for _ in range(300)]
    for _, writer in crowd:
        writer.write(b"GET /healthz HTTP/1.1\r\nHos")
    started = time.monotonic()
    reader, writer = await _connect(server)
    assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200 ")
    assert time.monotonic() - started < 1.0
    answers = await asyncio.gather(*(_closed_within(r, HEAD_TIMEOUT + SLACK + 2) for r, _ in crowd))
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)
    for _, w in [*crowd, (reader, writer)]:
        w.close()


def _upload_head(token: str, length: int) -> bytes:
    return (
        "POST /v1/images HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def test_a_stalled_body_is_answered_408_and_closed(server, test_keys):
    reader, writer = await _connect(server)
    writer.write(_upload_head(test_keys.token("ada"), 100_000) + b"--b\r\n")
    await writer.drain()
    started = time.monotonic()
    answer = await _closed_within(reader, BODY_TIMEOUT + SLACK)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"the request body arrived too slowly" in answer
    assert time.monotonic() - started >= BODY_TIMEOUT * 0.9
    writer.close()


async def test_a_slow_but_steady_upload_is_not_cut_off(server, test_keys, fake_backends):
    """1,000 bytes a second for 3 s: longer than the body timeout, but every byte earns time."""
    _, recorded = fake_backends
    png = b"\x89PNG\r\n\x1a\n" + bytes(2900)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="slow.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--b--\r\n"
    )
    reader, writer = await _connect(server)
    writer.write(_upload_head(test_keys.token("id-ada", name="ada"), len(body)))
    for start in range(0, len(body), 100):
        writer.write(body[start : start + 100])
        await writer.drain()
        await asyncio.sleep(0.1)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 201 "), head
    assert len(recorded.images) == 1
    writer.close()


async def test_an_idle_keep_alive_connection_is_reused_within_its_timeout(server):
    reader, writer = await _connect(server)
    assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200 ")
    await asyncio.sleep(HEAD_TIMEOUT + 0.5)  # idle longer than the head timeout: that clock runs only mid-request
    assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200 ")
    assert await _closed_within(reader, 3 + SLACK) == b""
    writer.close()
