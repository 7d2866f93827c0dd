"""Streaming multipart parsing: parts in order, bounded chunks, and refusals before the body is read."""

import pytest

from services.gateway.errors import ApiError
from services.gateway.multipart import (
    CHUNK_BYTES,
    MultipartReader,
    check_content_length,
    multipart_boundary,
)

BOUNDARY = b"xYzBoundary"
LIMIT = 10 * CHUNK_BYTES


def form(*parts: tuple[str, str | None, bytes]) -> bytes:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition.encode() + b"\r\n"
        body += b"Content-Type: image/png\r\n\r\n" + data + b"\r\n"
    return body + b"--" + BOUNDARY + b"--\r\n"


async def pieces(body: bytes, size: int = 1000):
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def read_all(reader: MultipartReader) -> list[tuple[str, str | None, list[bytes]]]:
    found = []
    while (part := await reader.next_part()) is not None:
        found.append((part.name, part.filename, [chunk async for chunk in reader.data()]))
    return found


async def test_parts_arrive_in_order_with_their_bytes():
    body = form(("note", None, b"hello"), ("image", "a.png", b"A" * 5000), ("image", "b.png", b"B" * 10))
    parts = await read_all(MultipartReader(pieces(body), BOUNDARY, limit=LIMIT))
    assert [(name, filename, b"".join(chunks)) for name, filename, chunks in parts] == [
        ("note", None, b"hello"),
        ("image", "a.png", b"A" * 5000),
        ("image", "b.png", b"B" * 10),
    ]


async def test_chunks_never_exceed_one_mebibyte():
    data = bytes(range(256)) * (3 * CHUNK_BYTES // 256 + 7)
    parts = await read_all(MultipartReader(pieces(form(("image", "big.png", data)), 65536), BOUNDARY, limit=LIMIT))
    chunks = parts[0][2]
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) == CHUNK_BYTES
    assert len(chunks) == 4


async def test_unread_data_is_skipped_when_moving_on():
    body = form(("image", "a.png", b"A" * 3000), ("image", "b.png", b"B"))
    reader = MultipartReader(pieces(body), BOUNDARY, limit=LIMIT)
    await reader.next_part()
    second = await reader.next_part()
    assert second.filename == "b.png"
    assert b"".join([chunk async for chunk in reader.data()]) == b"B"


async def test_utf8_filenames_survive():
    body = form(("image", "café ☕.png", b"x"))
    parts = await read_all(MultipartReader(pieces(body), BOUNDARY, limit=LIMIT))
    assert parts[0][1] == "café ☕.png"


async def test_a_body_cut_mid_file_is_an_error_not_a_short_file():
    body = form(("image", "a.png", b"A" * 5000))[:3000]
    reader = MultipartReader(pieces(body), BOUNDARY, limit=LIMIT)
    await reader.next_part()
    with pytest.raises(ApiError) as err:
        [chunk async for chunk in reader.data()]
    assert err.value.status == 400


async def test_body_is_pulled_lazily():
    pulled = []

    async def counting():
        async for piece in pieces(form(("image", "a.png", b"A" * 100_000)), 1000):
            pulled.append(len(piece))
            yield piece

    reader = MultipartReader(counting(), BOUNDARY, limit=LIMIT)
    await reader.next_part()
    assert sum(pulled) < 2000


async def test_a_body_past_the_limit_is_refused_whatever_its_parts():
    body = form(("note", None, b"x" * 50_000))
    reader = MultipartReader(pieces(body), BOUNDARY, limit=10_000)
    await reader.next_part()
    with pytest.raises(ApiError) as err:
        await reader.next_part()
    assert err.value.status == 413


def test_boundary_and_media_type():
    assert multipart_boundary('multipart/form-data; boundary="abc"') == b"abc"
    with pytest.raises(ApiError) as err:
        multipart_boundary("application/json")
    assert err.value.status == 415
    with pytest.raises(ApiError) as err:
        multipart_boundary("multipart/form-data")
    assert err.value.status == 400


def test_content_length_is_checked_before_reading():
    check_content_length(None, 10)
    check_content_length("10", 10)
    with pytest.raises(ApiError) as err:
        check_content_length("11", 10)
    assert err.value.status == 413
    with pytest.raises(ApiError):
        check_content_length("ten", 10)
