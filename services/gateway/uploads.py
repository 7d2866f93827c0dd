"""Uploads: each file of a multipart form streamed to the catalog as it arrives."""

import grpc
from fastapi import Request
from tagsmith.catalog.v1 import catalog_pb2

from services.common.imageformats import DESCRIPTION
from services.gateway import schemas
from services.gateway.clients import CatalogClient
from services.gateway.config import Settings
from services.gateway.errors import ApiError, error_body, from_rpc_error
from services.gateway.multipart import MultipartReader, Part, check_content_length, multipart_boundary

FIELD = "image"
# A refused file in a batch is reported and the next one tried; other failures end the whole request.
_PER_FILE_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
# The catalog answers RESOURCE_EXHAUSTED for a file over its size limit.
_UPLOAD_OVERRIDES = {grpc.StatusCode.RESOURCE_EXHAUSTED: 413}

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
        error = from_rpc_error(exc, overrides=_UPLOAD_OVERRIDES)
        if exc.code() in _PER_FILE_CODES:
            return error
        raise error from None


async def upload_all(
    request: Request, catalog: CatalogClient, token: str, settings: Settings
) -> tuple[list[catalog_pb2.Image], list[schemas.UploadFailure], int]:
    """(stored images, refused files, files sent). Raises when nothing was stored or the whole request failed."""
    form = open_form(request, limit=settings.max_request_bytes)
    stored, refused, count = [], [], 0
    while (part := await next_file(form)) is not None:
        count += 1
        if count > settings.max_files_per_request:
            raise ApiError(400, f"send at most {settings.max_files_per_request} files per request")
        result = await upload_one(catalog, form, part, token=token, max_bytes=settings.max_upload_bytes)
        if isinstance(result, ApiError):
            refused.append((part.filename or "", result))
        else:
            stored.append(result)
    if count == 0:
        raise ApiError(400, f"the form has no file in field '{FIELD}'")
    if not stored:
        raise refused[0][1]
    failures = [
        schemas.UploadFailure(filename=name, error=error_body(err.code, err.message)["error"]) for name, err in refused
    ]
    return stored, failures, count
