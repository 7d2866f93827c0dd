"""/v1 trash, restore and ZIP downloads of several images: the photo library's bulk and undo operations."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import StreamingResponse
from tagsmith.catalog.v1 import catalog_pb2

from services.gateway import schemas
from services.gateway.archive import MAX_ARCHIVE_BYTES, ZipStream, unique_names
from services.gateway.clients import CatalogClient
from services.gateway.deps import BackendsDep, Token
from services.gateway.downloads import safe_filename
from services.gateway.errors import ApiError

router = APIRouter(prefix="/v1", tags=["images"])

Uid = Annotated[str, Path(max_length=128, description="The image's uid.")]
_ZIP: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}
}
# Metadata look-ups in flight at once while checking an archive's images.
_LOOKUPS = 16


@router.get("/trash", response_model=schemas.TrashPage)
async def trash(
    token: Token,
    backends: BackendsDep,
    page_size: Annotated[int, Query(ge=1, le=100, description="Images per page.")] = 50,
    page_token: Annotated[str, Query(max_length=2048, description="next_page_token of the previous page.")] = "",
) -> Response:
    """Deleted images, most recently deleted first, each with the time it will be deleted for good."""
    reply = await backends.catalog.list_trash(token, page_size=page_size, page_token=page_token)
    page = schemas.TrashPage.model_construct(
        images=[schemas.image_from(image) for image in reply.images],
        next_page_token=reply.next_page_token,
        retention_days=reply.retention_days,
    )
    return schemas.json_response(page)


@router.post("/images/{uid}/restore", response_model=schemas.Image)
async def restore(uid: Uid, token: Token, backends: BackendsDep) -> Response:
    """Takes an image out of the trash, with its labels and tags as they were."""
    return schemas.json_response(schemas.image_from(await backends.catalog.restore(token, uid)))


@router.delete("/trash/{uid}", status_code=204, response_class=Response)
async def delete_forever(uid: Uid, token: Token, backends: BackendsDep) -> Response:
    """Deletes an image and its bytes at once, without waiting for the trash to expire. Cannot be undone."""
    await backends.catalog.delete(token, uid)
    return Response(status_code=204)


@router.post("/images/archive", response_class=StreamingResponse, responses=_ZIP)
async def archive(body: schemas.ArchiveRequest, token: Token, backends: BackendsDep) -> StreamingResponse:
    """One ZIP of the originals of up to 100 images, streamed as it is read (never assembled in memory).

    Every image is looked up first, so a missing one answers 404 before any byte is sent; a failure after that can
    only cut the download short.
    """
    uids = list(dict.fromkeys(body.uids))
    images = await _lookup(backends.catalog, token, uids)
    if sum(image.size_bytes for image in images) > MAX_ARCHIVE_BYTES:
        raise ApiError(413, "these photos add up to more than 4 GB; download them in smaller groups")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    headers = {
        "Content-Disposition": f'attachment; filename="photos-{stamp}.zip"',
        "Cache-Control": "no-store",
    }
    return StreamingResponse(_zip(backends.catalog, token, images), media_type="application/zip", headers=headers)


async def _lookup(catalog: CatalogClient, token: str, uids: list[str]) -> list[catalog_pb2.Image]:
    slots = asyncio.Semaphore(_LOOKUPS)

    async def one(uid: str) -> catalog_pb2.Image:
        async with slots:
            try:
                return await catalog.get(token, uid)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    raise ApiError(404, f"photo {uid} is not in your library (deleted meanwhile?)") from None
                raise

    return list(await asyncio.gather(*(one(uid) for uid in uids)))


async def _zip(catalog: CatalogClient, token: str, images: list[catalog_pb2.Image]) -> AsyncIterator[bytes]:
    stream = ZipStream()
    names = unique_names([safe_filename(image.filename, image.content_type) for image in images])
    for image, name in zip(images, names, strict=True):
        modified = image.created_at.ToDatetime(tzinfo=UTC)
        async for piece in stream.entry(name, modified, _original(catalog, token, image.uid)):
            yield piece
    yield stream.end()


async def _original(catalog: CatalogClient, token: str, uid: str) -> AsyncIterator[bytes]:
    call = catalog.download(token, uid)
    try:
        while isinstance(message := await call.read(), catalog_pb2.DownloadImageResponse):
            if message.HasField("chunk"):
                yield message.chunk
    finally:
        call.cancel()
