"""Reads a multipart/form-data body part by part, straight from the socket, without buffering whole files."""

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from services.gateway.errors import ApiError

if TYPE_CHECKING:
    # Declared for checkers only by python-multipart.
    from python_multipart.multipart import MultipartCallbacks

CHUNK_BYTES = 1024 * 1024
_MAX_HEADER_BYTES = 16 * 1024


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type; 415 for any other type."""
    media_type, params = parse_options_header(content_type or "")
    if media_type != b"multipart/form-data":
        raise ApiError(415, "send the files as multipart/form-data")
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "the multipart/form-data Content-Type has no boundary")
    return boundary


def check_content_length(header: str | None, limit: int) -> None:
    """Refuses an announced body over `limit` before reading any of it."""
    if header is None:
        return
    if not header.isdigit():
        raise ApiError(400, "Content-Length must be a number")
    if int(header) > limit:
        raise ApiError(413, f"the request is larger than the limit of {limit} bytes")


class MultipartReader:
    """Pull-style access to a push parser: next_part() then data() for each part, in order."""

    def __init__(self, body: AsyncIterator[bytes], boundary: bytes, *, limit: int) -> None:
        self._body = body
        self._limit = limit
        self._read = 0
        self._events: deque[tuple] = deque()
        self._ended = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._parser = MultipartParser(boundary, callbacks=self._callbacks())

    def _callbacks(self) -> "MultipartCallbacks":
        def on_header_field(data, start, end):
            self._header_field += data[start:end]

        def on_header_value(data, start, end):
            self._header_value += data[start:end]

        def on_header_end():
            if len(self._header_value) <= _MAX_HEADER_BYTES:
                self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
            self._header_field.clear()
            self._header_value.clear()

        def on_headers_finished():
            self._events.append(("part", self._headers))
            self._headers = {}

        return {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": lambda data, start, end: self._events.append(("data", bytes(data[start:end]))),
            "on_part_end": lambda: self._events.append(("end", None)),
        }

    async def _next_event(self) -> tuple:
        while not self._events:
            if self._ended:
                return ("eof", None)
            chunk = await anext(self._body, b"")
            self._read += len(chunk)
            if self._read > self._limit:
                raise ApiError(413, f"the request is larger than the limit of {self._limit} bytes")
            try:
                if chunk:
                    self._parser.write(chunk)
                else:
                    self._parser.finalize()
                    self._ended = True
            except MultipartParseError as exc:
                raise ApiError(400, f"malformed multipart body: {exc}") from None
        return self._events.popleft()

    async def next_part(self) -> Part | None:
        """Skips the rest of the current part and returns the next one's headers; None after the last."""
        while True:
            kind, value = await self._next_event()
            if kind == "eof":
                return None
            if kind == "part":
                return _part(value)

    async def data(self) -> AsyncIterator[bytes]:
        """The current part's bytes, in chunks of at most 1 MiB; 400 when the body ends mid-part."""
        pending = bytearray()
        while True:
            kind, value = await self._next_event()
            if kind == "data":
                pending += value
                while len(pending) >= CHUNK_BYTES:
                    yield bytes(pending[:CHUNK_BYTES])
                    del pending[:CHUNK_BYTES]
            elif kind == "end":
                if pending:
                    yield bytes(pending)
                return
            else:
                raise ApiError(400, "the multipart body ended in the middle of a file")


def _part(headers: dict[bytes, bytes]) -> Part:
    _, params = parse_options_header(headers.get(b"content-disposition", b""))
    filename = params.get(b"filename")
    return Part(
        name=params.get(b"name", b"").decode("utf-8", "replace"),
        filename=None if filename is None else filename.decode("utf-8", "replace"),
        content_type=headers.get(b"content-type", b"application/octet-stream").decode("latin-1").strip(),
    )
