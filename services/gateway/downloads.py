"""Streams an image or thumbnail from the catalog to the client, with caching headers and a safe filename."""

import mimetypes
import unicodedata
from collections.abc import AsyncIterator
from urllib.parse import quote

import grpc
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from tagsmith.catalog.v1 import catalog_pb2

from services.common.imageformats import EXTENSIONS
from services.gateway.clients import CatalogClient
from services.gateway.errors import ApiError

# Downloaded bytes are only ever shown as images, never run as a page of this origin.
_DOWNLOAD_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox",
    "Cache-Control": "private, max-age=86400",
}
_MAX_FILENAME_CHARS = 150


def safe_filename(filename: str, content_type: str) -> str:
    """The last path component without control or formatting characters; a fallback name when nothing is left."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.strip().lstrip(".")[:_MAX_FILENAME_CHARS]
    extension = EXTENSIONS.get(content_type)
    return name or "image" + (f".{extension}" if extension else mimetypes.guess_extension(content_type) or "")


def content_disposition(filename: str, content_type: str, *, attachment: bool) -> str:
    """RFC 6266 header: an ASCII fallback name plus the exact name in RFC 5987 encoding."""
    name = safe_filename(filename, content_type)
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\%;' else "_" for ch in name)
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


# What a thumbnail's ETag adds to its original's: the bytes of each size differ.
_ETAG_SUFFIXES = {None: "", catalog_pb2.THUMBNAIL_SIZE_SMALL: "-thumb", catalog_pb2.THUMBNAIL_SIZE_DISPLAY: "-display"}


def etag_for(sha256: str, thumbnail: catalog_pb2.ThumbnailSize | None) -> str:
    return f'"{sha256}{_ETAG_SUFFIXES[thumbnail]}"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    candidates = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


async def stream_image(
    catalog: CatalogClient,
    request: Request,
    token: str,
    uid: str,
    *,
    thumbnail: catalog_pb2.ThumbnailSize | None = None,
    attachment: bool = False,
) -> Response:
    """The original, or a thumbnail of the given size: 304 when the client's copy is current; otherwise the bytes,
    with the headers set before the first byte."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match:
        image = await catalog.get(token, uid)
        etag = etag_for(image.sha256, thumbnail)
        if etag_matches(if_none_match, etag):
            return Response(status_code=304, headers={"ETag": etag, **_DOWNLOAD_HEADERS})
    call = catalog.download(token, uid, thumbnail=thumbnail)
    image, first_chunk = await _opening(call)
    headers = {
        "Content-Length": str(image.size_bytes),
        "ETag": etag_for(image.sha256, thumbnail),
        "Content-Disposition": content_disposition(image.filename, image.content_type, attachment=attachment),
        **_DOWNLOAD_HEADERS,
    }
    media_type = image.content_type or "application/octet-stream"
    return StreamingResponse(_chunks(call, first_chunk), media_type=media_type, headers=headers)


async def _opening(call: grpc.aio.UnaryStreamCall) -> tuple[catalog_pb2.Image, bytes]:
    """The metadata and the first chunk of bytes, read before any header is sent.

    Until then a failing catalog can still be answered with an error status (503 and Retry-After for an outage);
    once the headers are out, a failure can only cut the body short, which clients take for a broken download.
    """
    try:
        first = await call.read()
        # read() answers grpc.aio.EOF at the end, typed only as object: the type check stands for the EOF check.
        if not isinstance(first, catalog_pb2.DownloadImageResponse) or not first.HasField("image"):
            raise ApiError(503, "the catalog sent no image metadata; try again", headers={"Retry-After": "1"})
        second = await call.read()
        if not isinstance(second, catalog_pb2.DownloadImageResponse):
            if first.image.size_bytes:
                raise ApiError(503, "the catalog sent no bytes of this image; try again", headers={"Retry-After": "1"})
            return first.image, b""
        return first.image, second.chunk
    except BaseException:
        call.cancel()
        raise


async def _chunks(call: grpc.aio.UnaryStreamCall, first_chunk: bytes) -> AsyncIterator[bytes]:
    """The rest of the stream; a failure mid-way can only cut the response short, so it is cancelled and re-raised."""
    try:
        if first_chunk:
            yield first_chunk
        while isinstance(message := await call.read(), catalog_pb2.DownloadImageResponse):
            if message.HasField("chunk"):
                yield message.chunk
    finally:
        call.cancel()
