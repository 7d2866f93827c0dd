"""UploadImage: receive and check the stream, reserve a row, store the bytes, classify, make the row visible."""

import asyncio
import hashlib
import io
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from typing import IO, TypeVar

import grpc
import psycopg
from tagsmith.catalog.v1 import catalog_pb2

from services.catalog import images
from services.catalog.content import ContentBytes
from services.catalog.ids import new_uid
from services.catalog.inference_client import InferenceClient, InferenceFailed, InferenceRejected, InferenceUnavailable
from services.catalog.models import ImageRow, NewImage, Outcome, QuotaExceeded
from services.catalog.store import CatalogStore
from services.catalog.store.similarity import SimilarityIndex
from services.common.context import time_remaining
from services.common.db import UNREACHABLE as DATABASE_UNREACHABLE
from services.common.errors import StatusError, invalid
from services.common.tokens import Principal

log = logging.getLogger(__name__)
A = TypeVar("A")
B = TypeVar("B")

MAX_CHUNK_BYTES = 1024 * 1024
# Uploads up to this size stay in memory; larger ones spill to a temporary file.
_SPOOL_IN_MEMORY = 4 * 1024 * 1024
# Most bytes read and dropped after an upload passed the size limit, before answering (see _drain).
_DRAIN_BYTES = 64 * 1024 * 1024
# Time kept back from the caller's deadline to store the outcome after classifying.
_DEADLINE_MARGIN = 0.5
# How long an unfinished upload's undo keeps trying while the database is unreachable.
_UNDO_RETRY_SECONDS = 120.0
# How long the failed call waits for its undo: one attempt, a database checkout included.
_UNDO_WAIT_SECONDS = 3.0
# How often an upload starts over after the identical upload it joined was abandoned.
_RESERVE_ATTEMPTS = 3


class Received:
    """The bytes of one upload, checked and hashed: in memory up to a bound, else in a temporary file. Each reader
    is independent, so the original is stored while the classifier reads it."""

    def __init__(self, size: int, sha256: str, *, data: bytes | None = None, spill: IO[bytes] | None = None) -> None:
        self.size = size
        self.sha256 = sha256
        self._data = data
        self._spill = spill

    def reader(self) -> IO[bytes]:
        if self._data is not None:
            return io.BytesIO(self._data)  # shares the bytes, no copy
        if self._spill is None:
            raise ValueError("received bytes hold neither data nor a spill file")
        return open(self._spill.name, "rb")  # closed by the caller

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()


async def file_chunks(source: IO[bytes]) -> AsyncIterator[bytes]:
    with source:
        while chunk := source.read(MAX_CHUNK_BYTES):
            yield chunk


async def read_header(messages: AsyncIterator[catalog_pb2.UploadImageRequest]) -> catalog_pb2.UploadHeader:
    first = await anext(messages, None)
    if first is None:
        raise invalid("the upload is empty: send a header, then the image bytes")
    if first.WhichOneof("part") != "header":
        raise invalid("the first message of an upload must be the header")
    return first.header


async def _drain(messages: AsyncIterator[catalog_pb2.UploadImageRequest]) -> None:
    """Reads and drops what the client is still sending, up to a bound, before the refusal: an asyncio gRPC client
    whose write meets a call the server already ended reports INTERNAL instead of the server's status
    (grpc/grpc#36066), so the gateway would answer 500 instead of 413. HTTP servers drain a refused body likewise."""
    drained = 0
    async for message in messages:
        drained += len(message.chunk)
        if drained > _DRAIN_BYTES:
            return


async def receive(messages: AsyncIterator[catalog_pb2.UploadImageRequest], *, max_bytes: int) -> Received:
    """Keeps the chunks, hashing as they come; stops at the first byte over the limit."""
    chunks: list[bytes] = []
    spill: IO[bytes] | None = None
    digest, size = hashlib.sha256(), 0
    try:
        async for message in messages:
            if message.WhichOneof("part") != "chunk":
                raise invalid("after the header an upload may only contain chunks")
            if len(message.chunk) > MAX_CHUNK_BYTES:
                raise invalid("upload chunks must be at most 1 MiB each")
            size += len(message.chunk)
            if size > max_bytes:
                await _drain(messages)
                raise StatusError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, f"the image is larger than the limit of {max_bytes} bytes"
                )
            digest.update(message.chunk)
            if spill is None and size > _SPOOL_IN_MEMORY:
                spill = tempfile.NamedTemporaryFile(prefix="tagsmith-upload-")  # noqa: SIM115  # Received closes it
                spill.writelines(chunks)
                chunks.clear()
            if spill is None:
                chunks.append(message.chunk)
            else:
                spill.write(message.chunk)
        if size == 0:
            raise invalid("the upload is empty: send the image bytes after the header")
    except BaseException:
        if spill is not None:
            spill.close()
        raise
    if spill is None:
        return Received(size, digest.hexdigest(), data=b"".join(chunks))
    spill.flush()
    return Received(size, digest.hexdigest(), spill=spill)


async def all_or_none(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Runs both at once and returns both results; when one fails (or the caller is cancelled), the other is
    cancelled and waited for before the error goes on, so an undo never races a write still in progress."""
    tasks = (asyncio.ensure_future(first), asyncio.ensure_future(second))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error
        return tasks[0].result(), tasks[1].result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Cleanups:
    """Undoes unfinished uploads in tasks of their own, so a cancelled call (client gone, deadline) cannot cut the
    undo short and leave an invisible row behind; while the database is unreachable the undo is retried."""

    def __init__(self, *, store: CatalogStore, contents: ContentBytes, retry_for: float = _UNDO_RETRY_SECONDS) -> None:
        self._store = store
        self._contents = contents
        self._retry_for = retry_for
        self._tasks: set[asyncio.Task[None]] = set()

    async def undo(self, uid: str, *, cause: BaseException) -> None:
        """Starts the undo and waits a little for it, so a refused upload is usually gone when the caller hears of
        it; the undo goes on after this returns or is cancelled. With the database unreachable (the cause) the
        caller is not kept waiting for an undo that cannot succeed yet."""
        task = asyncio.create_task(self._undo(uid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not isinstance(cause, DATABASE_UNREACHABLE):
            await asyncio.wait({task}, timeout=_UNDO_WAIT_SECONDS)

    async def _undo(self, uid: str) -> None:
        deadline = time.monotonic() + self._retry_for
        pause = 0.2
        while True:
            try:
                await self._store.abandon(uid, self._contents.remove)
                return
            except Exception:
                if time.monotonic() + pause > deadline:
                    log.warning("could not undo an unfinished upload; the sweeper will", exc_info=True)
                    return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def wait(self, timeout: float = _UNDO_WAIT_SECONDS) -> None:
        """At shutdown, before the pool closes: lets the undos in progress finish for a while, then stops them
        (the sweeper removes what they leave)."""
        if not self._tasks:
            return
        _, unfinished = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in unfinished:
            task.cancel()


class Uploader:
    """Runs one upload to completion; on any failure the reservation and unshared bytes are removed."""

    def __init__(
        self,
        *,
        store: CatalogStore,
        contents: ContentBytes,
        inference: InferenceClient,
        similarity: SimilarityIndex,
        max_bytes: int,
        max_pixels: int,
        inference_timeout: float,
    ) -> None:
        self._store = store
        self._similarity = similarity
        self._contents = contents
        self._inference = inference
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._timeout = inference_timeout
        self._cleanups = Cleanups(store=store, contents=contents)

    @property
    def cleanups(self) -> "Cleanups":
        return self._cleanups

    async def upload(
        self, messages: AsyncIterator[catalog_pb2.UploadImageRequest], caller: Principal
    ) -> tuple[ImageRow, bool, str]:
        """Returns (image, duplicate, uid of the earlier image it nearly duplicates or "")."""
        header = await read_header(messages)
        received = await receive(messages, max_bytes=self._max_bytes)
        try:
            new = await self._describe(header, received, caller)
            return await self._store_and_classify(new, received, caller)
        finally:
            received.close()

    async def _describe(self, header: catalog_pb2.UploadHeader, received: Received, caller: Principal) -> NewImage:
        try:
            with received.reader() as source:
                info = await asyncio.to_thread(images.inspect, source, max_pixels=self._max_pixels)
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
            **info.taken.fields(),
        )

    async def _store_and_classify(
        self, new: NewImage, received: Received, caller: Principal
    ) -> tuple[ImageRow, bool, str]:
        """Reserves a row (or joins the caller's identical upload in flight), then stores and classifies.

        A joined upload can be cancelled under us, taking its row along; then we start over with our own row.
        """
        for _ in range(_RESERVE_ATTEMPTS):
            try:
                row, created = await self._store.reserve(new)
            except QuotaExceeded:
                raise
            except BaseException as exc:
                # Cancelled or failed after the insert may have committed: our uid names the row if it exists.
                await self._cleanups.undo(new.uid, cause=exc)
                raise
            if row.status != "uploading":
                return row, True, ""
            final = await self._complete(row, created, new, received, caller.token)
            if final is not None:
                return final
        raise StatusError(grpc.StatusCode.ABORTED, "identical uploads kept interrupting each other; try again")

    async def _complete(
        self, row: ImageRow, created: bool, new: NewImage, received: Received, token: str
    ) -> tuple[ImageRow, bool, str] | None:
        """Bytes, classification, then the row made visible; None when the joined row vanished meanwhile."""
        try:
            saving = self._save_original(new, received)
            _, outcome = await all_or_none(saving, self._classify(received, token))
            # The thumbnail is best effort (rendered on request when missing), so it need not precede the row.
            thumbnail = self._contents.save_thumbnail(new.sha256, outcome.classification, thumb_format=new.thumb_format)
            _, final = await all_or_none(thumbnail, self._store.finalize(row.id, outcome))
        except BaseException as exc:
            if created:
                await self._cleanups.undo(row.uid, cause=exc)
            raise
        if final is not None:
            return final, False, await self._embed(final, outcome)
        # An identical upload by the same caller finished first, or was abandoned.
        existing = await self._store.get_by_id(row.id)
        return None if existing is None else (existing, True, "")

    async def _embed(self, row: ImageRow, outcome: Outcome) -> str:
        """Stores the embedding for similar photos; the upload is already acknowledged-safe, so a failure here only
        leaves the image for the backfill. Returns the uid of the earlier image it nearly duplicates, or ""."""
        if outcome.classification is None or not outcome.classification.embedding:
            return ""
        try:
            near = await self._similarity.store(
                image_id=row.id, owner=row.owner_id, embedding=outcome.classification.embedding
            )
        except psycopg.Error:
            log.warning("could not store the embedding of %s; the backfill will", row.uid, exc_info=True)
            return ""
        return near or ""

    async def _save_original(self, new: NewImage, received: Received) -> None:
        with received.reader() as source:
            await self._contents.save_original(new.sha256, source, new.size_bytes, content_type=new.content_type)

    async def _classify(self, received: Received, token: str) -> Outcome:
        timeout = self._timeout
        remaining = time_remaining()
        if remaining is not None:
            timeout = max(0.05, min(timeout, remaining - _DEADLINE_MARGIN))
        try:
            result = await self._inference.classify(file_chunks(received.reader()), token=token, timeout=timeout)
        except InferenceUnavailable as exc:
            log.info("stored as pending: %s", exc)
            return Outcome("pending", "waiting for the classifier, which is unavailable or slow")
        except InferenceRejected as exc:
            # The classifier decoded the whole file and could not read it (truncated, corrupt): refuse the upload
            # rather than keep bytes nobody can use. The caller undoes the reservation.
            raise invalid(str(exc)) from None
        except InferenceFailed as exc:
            log.warning("stored as pending after a classifier error: %s", exc)
            return Outcome("pending", "waiting for the classifier after an error")
        return Outcome("classified", classification=result)
