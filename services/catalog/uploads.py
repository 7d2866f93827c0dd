"""UploadImage: receive and check the stream, reserve a row, store the bytes, classify, make the row visible."""

import asyncio
import hashlib
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import BinaryIO

import grpc
from tagsmith.catalog.v1 import catalog_pb2

from services.catalog import images
from services.catalog.content import ContentBytes
from services.catalog.errors import CatalogError, invalid
from services.catalog.ids import new_uid
from services.catalog.inference_client import InferenceClient, InferenceFailed, InferenceRejected, InferenceUnavailable
from services.catalog.models import ImageRow, NewImage, Outcome
from services.catalog.store import CatalogStore
from services.common.context import time_remaining
from services.common.tokens import Principal

log = logging.getLogger(__name__)

MAX_CHUNK_BYTES = 1024 * 1024
# Uploads up to this size stay in memory; larger ones spill to a temporary file.
_SPOOL_IN_MEMORY = 4 * 1024 * 1024
# Time kept back from the caller's deadline to store the outcome after classifying.
_DEADLINE_MARGIN = 0.5
# How often an upload starts over after the identical upload it joined was abandoned.
_RESERVE_ATTEMPTS = 3


@dataclass
class Received:
    file: BinaryIO
    size: int
    sha256: str


async def file_chunks(source: BinaryIO) -> AsyncIterator[bytes]:
    source.seek(0)
    while chunk := source.read(MAX_CHUNK_BYTES):
        yield chunk


async def read_header(messages: AsyncIterator[catalog_pb2.UploadImageRequest]) -> catalog_pb2.UploadHeader:
    first = await anext(messages, None)
    if first is None:
        raise invalid("the upload is empty: send a header, then the image bytes")
    if first.WhichOneof("part") != "header":
        raise invalid("the first message of an upload must be the header")
    return first.header


async def receive(messages: AsyncIterator[catalog_pb2.UploadImageRequest], *, max_bytes: int) -> Received:
    """Spools the chunks, hashing as they come; stops at the first byte over the limit."""
    # Handed to the caller, who closes it; closed here only on failure.
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY, prefix="tagsmith-upload-")  # noqa: SIM115
    digest, size = hashlib.sha256(), 0
    try:
        async for message in messages:
            if message.WhichOneof("part") != "chunk":
                raise invalid("after the header an upload may only contain chunks")
            if len(message.chunk) > MAX_CHUNK_BYTES:
                raise invalid("upload chunks must be at most 1 MiB each")
            size += len(message.chunk)
            if size > max_bytes:
                raise CatalogError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, f"the image is larger than the limit of {max_bytes} bytes"
                )
            digest.update(message.chunk)
            spool.write(message.chunk)
        if size == 0:
            raise invalid("the upload is empty: send the image bytes after the header")
    except BaseException:
        spool.close()
        raise
    return Received(spool, size, digest.hexdigest())


class Uploader:
    """Runs one upload to completion; on any failure the reservation and unshared bytes are removed."""

    def __init__(
        self,
        *,
        store: CatalogStore,
        contents: ContentBytes,
        inference: InferenceClient,
        max_bytes: int,
        max_pixels: int,
        inference_timeout: float,
    ) -> None:
        self._store = store
        self._contents = contents
        self._inference = inference
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._timeout = inference_timeout

    async def upload(self, messages: AsyncIterator, caller: Principal) -> tuple[ImageRow, bool]:
        """Returns (image, duplicate)."""
        header = await read_header(messages)
        received = await receive(messages, max_bytes=self._max_bytes)
        try:
            new = await self._describe(header, received, caller)
            return await self._store_and_classify(new, received, caller)
        finally:
            received.file.close()

    async def _describe(self, header: catalog_pb2.UploadHeader, received: Received, caller: Principal) -> NewImage:
        try:
            info = await asyncio.to_thread(images.inspect, received.file, max_pixels=self._max_pixels)
        except images.UnsupportedImage as exc:
            raise invalid(str(exc)) from None
        uid = new_uid()
        return NewImage(
            uid=uid,
            owner_id=caller.subject,
            sha256=received.sha256,
            filename=images.clean_filename(header.filename, fallback_stem=uid, extension=info.extension),
            content_type=info.content_type,
            size_bytes=received.size,
            width=info.width,
            height=info.height,
            thumb_format=info.thumb_format,
            orientation=info.orientation,
        )

    async def _store_and_classify(self, new: NewImage, received: Received, caller: Principal) -> tuple[ImageRow, bool]:
        """Reserves a row (or joins the caller's identical upload in flight), then stores and classifies.

        A joined upload can be cancelled under us, taking its row along; then we start over with our own row.
        """
        for _ in range(_RESERVE_ATTEMPTS):
            row, created = await self._store.reserve(new)
            if row.status != "uploading":
                return row, True
            final = await self._complete(row, created, new, received, caller.token)
            if final is not None:
                return final
        raise CatalogError(grpc.StatusCode.ABORTED, "identical uploads kept interrupting each other; try again")

    async def _complete(
        self, row: ImageRow, created: bool, new: NewImage, received: Received, token: str
    ) -> tuple[ImageRow, bool] | None:
        """Bytes, classification, then the row made visible; None when the joined row vanished meanwhile."""
        try:
            await self._contents.save_original(new.sha256, received.file, new.size_bytes, content_type=new.content_type)
            outcome = await self._classify(received, token)
            await self._contents.save_thumbnail(new.sha256, outcome.classification, thumb_format=new.thumb_format)
            final = await self._store.finalize(row.id, outcome)
        except BaseException:
            if created:
                await asyncio.shield(self._abandon(row.id))
            raise
        if final is not None:
            return final, False
        # An identical upload by the same caller finished first, or was abandoned.
        existing = await self._store.get_by_id(row.id)
        return None if existing is None else (existing, True)

    async def _abandon(self, image_id: int) -> None:
        try:
            await self._store.abandon(image_id, self._contents.remove)
        except Exception:
            log.warning("could not undo an unfinished upload; the sweeper will", exc_info=True)

    async def _classify(self, received: Received, token: str) -> Outcome:
        timeout = self._timeout
        remaining = time_remaining()
        if remaining is not None:
            timeout = max(0.05, min(timeout, remaining - _DEADLINE_MARGIN))
        try:
            result = await self._inference.classify(file_chunks(received.file), token=token, timeout=timeout)
        except InferenceUnavailable as exc:
            log.info("stored as pending: %s", exc)
            return Outcome("pending", "waiting for the classifier, which is unavailable or slow")
        except InferenceRejected as exc:
            return Outcome("failed", f"the classifier rejected the image: {exc}")
        except InferenceFailed as exc:
            log.warning("stored as pending after a classifier error: %s", exc)
            return Outcome("pending", "waiting for the classifier after an error")
        return Outcome("classified", classification=result)
