"""A lean HTTP/1.1 load generator: requests encoded once up front, sent over kept-alive connections.

A general client (httpx) spends about 2 ms of CPU per upload building and parsing messages; on a small machine
that CPU is taken from the system under test. This one spends about 0.1 ms: it only writes prepared bytes and
reads a status line, headers and a Content-Length body.
"""

import asyncio
import json
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit


class ProtocolError(RuntimeError):
    """The server answered something this client does not read (no Content-Length, a broken status line)."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def json(self):
        return json.loads(self.body)


def request(method: str, url: str, *, headers: dict[str, str], body: bytes = b"", content_type: str = "") -> bytes:
    """The bytes of one request to `url` (scheme, host and port are used for the Host header only)."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def form_file(field: str, filename: str, content_type: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file, and its Content-Type."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Connection:
    """One kept-alive connection, used by one task at a time; reopened when the server closes it."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self._host, self._port = parts.hostname, parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, prepared: bytes) -> Reply:
        reader, writer = await self._streams()
        writer.write(prepared)
        status, length, close = _head(await reader.readuntil(b"\r\n\r\n"))
        body = await reader.readexactly(length)
        if close:
            await self.close()
        return Reply(status, body)

    async def _streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()
            self._reader = self._writer = None


def _head(raw: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length, whether the server closes the connection) of a response head."""
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[1].isdigit():
        raise ProtocolError(f"not an HTTP status line: {status_line!r}")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise ProtocolError("the response has no Content-Length")
    return int(fields[1]), int(headers["content-length"]), headers.get("connection", "").lower() == "close"
