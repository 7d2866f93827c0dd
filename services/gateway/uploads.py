"""Uploads: the whole form is received and checked against every per-request limit first, then each file is
streamed to the catalog; a request over a limit stores nothing."""

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO

import grpc
from fastapi import Request
from tagsmith.catalog.v1 import catalog_pb2

from services.common.imageformats import DESCRIPTION
from services.gateway import schemas
from services.gateway.clients import CatalogClient
from services.gateway.config import Settings
from services.gateway.errors import ApiError, error_body, from_rpc_error
from services.gateway.multipart import CHUNK_BYTES, MultipartReader, Part, check_content_length, multipart_boundary

FIELD = "image"
# A refused file in a batch is reported and the next one tried; other failures end the whole request.
_PER_FILE_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
# The catalog answers RESOURCE_EXHAUSTED for a file over its size limit, and for a file over the caller's storage
# quota with this reason; the quota is answered 403, as Google Drive and Box do, since retrying cannot help.
_UPLOAD_OVERRIDES = {grpc.StatusCode.RESOURCE_EXHAUSTED: 413}
QUOTA_REASON = ("error-reason", "STORAGE_QUOTA_EXCEEDED")
# Bytes of one request kept in memory while it is received; the rest waits in temporary files.
_IN_MEMORY_PER_REQUEST = 8 * 1024 * 1024

UPLOAD_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {
                        FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": f"One or more image files ({DESCRIPTION}).",
                        }
                    },
                },
                "encoding": {FIELD: {"contentType": "image/*"}},
            }
        },
    }
}


def open_form(request: Request, *, limit: int) -> MultipartReader:
    """Checks the announced size and type, then reads the body as it streams in."""
    check_content_length(request.headers.get("content-length"), limit)
    boundary = multipart_boundary(request.headers.get("content-type"))
    return MultipartReader(request.stream(), boundary, limit=limit)


async def next_file(form: MultipartReader) -> Part | None:
    while (part := await form.next_part()) is not None:
        if part.name == FIELD:
            return part
    return None


async def upload_one(
    catalog: CatalogClient, form: MultipartReader, part: Part, *, token: str, max_bytes: int
) -> catalog_pb2.Image | ApiError:
    """The stored image, or why the catalog refused this one file; failures of the whole request raise."""
    try:
        return await catalog.upload(
            token, filename=part.filename or "", content_type=part.content_type, chunks=form.data(), max_bytes=max_bytes
        )
    except grpc.aio.AioRpcError as exc:
        return refusal(exc)


@dataclass
class ReceivedFile:
    filename: str
    content_type: str
    data: IO[bytes]
    size: int

    async def chunks(self) -> AsyncIterator[bytes]:
        self.data.seek(0)
        while chunk := self.data.read(CHUNK_BYTES):
            yield chunk


async def _receive_file(form: MultipartReader, part: Part, *, max_bytes: int, in_memory: int) -> ReceivedFile:
    """Spools one file part; 413 the moment it passes `max_bytes`."""
    name = part.filename or "the file"
    spool = tempfile.SpooledTemporaryFile(max_size=in_memory, prefix="tagsmith-gateway-")  # noqa: SIM115
    size = 0
    try:
        async for chunk in form.data():
            size += len(chunk)
            if size > max_bytes:
                raise ApiError(413, f"{name} is larger than the limit of {max_bytes} bytes; nothing was stored")
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    return ReceivedFile(part.filename or "", part.content_type, spool, size)


async def receive_files(form: MultipartReader, settings: Settings) -> list[ReceivedFile]:
    """Every file of the form, checked against the count and size limits before any is stored."""
    files: list[ReceivedFile] = []
    try:
        while (part := await next_file(form)) is not None:
            if len(files) == settings.max_files_per_request:
                raise ApiError(
                    400, f"send at most {settings.max_files_per_request} files per request; nothing was stored"
                )
            in_memory = max(0, _IN_MEMORY_PER_REQUEST - sum(f.size for f in files))
            files.append(await _receive_file(form, part, max_bytes=settings.max_upload_bytes, in_memory=in_memory))
    except BaseException:
        close_all(files)
        raise
    if not files:
        raise ApiError(400, f"the form has no file in field '{FIELD}'")
    return files


def close_all(files: list[ReceivedFile]) -> None:
    for received in files:
        received.data.close()


async def store_one(catalog: CatalogClient, received: ReceivedFile, *, token: str, max_bytes: int):
    """The stored image, or why the catalog refused this one file; failures of the whole request raise."""
    try:
        return await catalog.upload(
            token,
            filename=received.filename,
            content_type=received.content_type,
            chunks=received.chunks(),
            max_bytes=max_bytes,
        )
    except grpc.aio.AioRpcError as exc:
        return refusal(exc)


def refusal(exc: grpc.aio.AioRpcError) -> ApiError:
    """Why the catalog refused one file; raises instead when the failure is the whole request's."""
    if QUOTA_REASON in tuple(exc.trailing_metadata() or ()):
        return quota_exceeded(exc.details() or "the storage quota is used up")
    error = from_rpc_error(exc, overrides=_UPLOAD_OVERRIDES)
    if exc.code() in _PER_FILE_CODES:
        return error
    raise error from None


def quota_exceeded(message: str) -> ApiError:
    return ApiError(403, message, code="quota_exceeded")


async def storage_or_none(catalog: CatalogClient, token: str) -> schemas.Storage | None:
    """The caller's storage quota and usage, or None while the catalog cannot tell."""
    try:
        return schemas.storage_from(await catalog.usage(token))
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise
        return None


async def check_quota(catalog: CatalogClient, token: str, files: list[ReceivedFile]) -> None:
    """Refuses a batch that cannot fit the caller's quota before storing any of it; the catalog still checks each
    file atomically, so concurrent requests cannot overshoot either way."""
    storage = await storage_or_none(catalog, token)
    if storage is None:
        return
    size = sum(received.size for received in files)
    if storage.images_limit and storage.images_used + len(files) > storage.images_limit:
        raise quota_exceeded(
            f"storage quota exceeded: you have {storage.images_used} of {storage.images_limit} images and sent"
            f" {len(files)} more; nothing was stored"
        )
    if storage.bytes_limit and storage.bytes_used + size > storage.bytes_limit:
        raise quota_exceeded(
            f"storage quota exceeded: you use {storage.bytes_used} of {storage.bytes_limit} bytes and these files"
            f" need {size} more; nothing was stored"
        )


async def upload_all(
    request: Request, catalog: CatalogClient, token: str, settings: Settings
) -> tuple[list[catalog_pb2.Image], list[schemas.UploadFailure], int]:
    """(stored images, refused files, files sent). Raises when nothing was stored or the whole request failed."""
    files = await receive_files(open_form(request, limit=settings.max_request_bytes), settings)
    stored, refused = [], []
    try:
        if len(files) > 1:
            await check_quota(catalog, token, files)
        for received in files:
            result = await store_one(catalog, received, token=token, max_bytes=settings.max_upload_bytes)
            if isinstance(result, ApiError):
                refused.append((received.filename, result))
            else:
                stored.append(result)
    finally:
        close_all(files)
    if not stored:
        raise refused[0][1]
    failures = [
        schemas.UploadFailure(filename=name, error=error_body(err.code, err.message)["error"]) for name, err in refused
    ]
    return stored, failures, len(files)
