"""CatalogService RPCs: check the request, scope it to the caller, and delegate to the store and the uploader."""

import asyncio
import functools
import io
import logging
import math
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, timedelta
from typing import IO, NoReturn

import grpc
from tagsmith.catalog.v1 import catalog_pb2, catalog_pb2_grpc

from services.catalog import pagination, thumbnails
from services.catalog.blobstore import BlobNotFound, BlobReader, BlobStoreUnavailable
from services.catalog.content import DISPLAY_SIZE, THUMB_SIZE, ContentBytes, original_key, thumbnail_key
from services.catalog.convert import image_message
from services.catalog.ids import is_valid_uid
from services.catalog.inference_client import InferenceFailed, InferenceUnavailable
from services.catalog.models import UNLIMITED, ImageRow, QuotaExceeded
from services.catalog.reclassify import Reclassifier
from services.catalog.store import CatalogStore, TakenFilter
from services.catalog.store.similarity import SimilarityIndex
from services.catalog.terms import (
    DEFAULT_MIN_SCORE,
    MAX_QUERY_CHARS,
    InvalidTag,
    normalize_tag,
    query_terms,
)
from services.catalog.uploads import Uploader
from services.common.context import current_principal
from services.common.errors import StatusError, invalid, unavailable
from services.common.tokens import Principal

log = logging.getLogger(__name__)

# Trailing metadata that tells a quota refusal from the other RESOURCE_EXHAUSTED answers (a file over the size limit).
QUOTA_REASON = ("error-reason", "STORAGE_QUOTA_EXCEEDED")
MAX_CATEGORY_CHARS = 200
MAX_RECLASSIFY_BATCH = 1000
_SIMILAR_PAGE = 20
# Near-duplicate links read per request: the groups of the newest this many duplicates.
_MAX_LINKS = 10_000
# Digests one FindDigests call may ask about.
MAX_DIGESTS = 1000
_HEX = frozenset("0123456789abcdef")
MAX_TAG_LIMIT = 1000
# Thumbnails rendered at once; decoding large originals is CPU- and memory-heavy.
_RENDER_SLOTS = 2


def _status_error(exc: Exception) -> Exception:
    """The StatusError a known failure is answered with; anything else as it is (the interceptor answers an
    unreachable database with UNAVAILABLE, and the rest with INTERNAL)."""
    if isinstance(exc, QuotaExceeded):
        return StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, _quota_message(exc), trailing_metadata=(QUOTA_REASON,))
    if isinstance(exc, pagination.InvalidPage | InvalidTag):
        return invalid(str(exc))
    if isinstance(exc, thumbnails.Undecodable):
        return StatusError(grpc.StatusCode.FAILED_PRECONDITION, "the image cannot be decoded, so it has no thumbnail")
    if isinstance(exc, BlobStoreUnavailable):
        return unavailable("object storage is unavailable; try again shortly")
    if isinstance(exc, InferenceUnavailable | InferenceFailed):
        return unavailable("the inference service is unavailable; try again later")
    return exc


def _raise_as_status_error(exc: Exception) -> NoReturn:
    error = _status_error(exc)
    if error is exc:
        raise exc
    raise error from exc


def _quota_message(exc: QuotaExceeded) -> str:
    usage, quota = exc.usage, exc.usage.quota
    if usage.images + 1 > quota.images:
        return f"storage quota exceeded: you have {usage.images} of {quota.images} images; delete some to upload more"
    return (
        f"storage quota exceeded: you use {usage.bytes} of {quota.bytes} bytes and this image needs {exc.size}"
        " more; delete some images to make room"
    )


def _shown(limit: int) -> int:
    """0 stands for "no limit" in replies."""
    return 0 if limit >= UNLIMITED else limit


def _unary(method):
    @functools.wraps(method)
    async def handler(self, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except Exception as exc:
            _raise_as_status_error(exc)

    return handler


def _streaming(method):
    @functools.wraps(method)
    async def handler(self, request, context: grpc.aio.ServicerContext):
        try:
            async for reply in method(self, request, context):
                yield reply
        except Exception as exc:
            _raise_as_status_error(exc)

    return handler


def _uid(value: str) -> str:
    if not is_valid_uid(value):
        raise invalid("this is not an image id: ids are the 22 characters returned when the image was uploaded")
    return value


def _not_found() -> StatusError:
    # The same words whether the uid never existed or belongs to someone else.
    return StatusError(grpc.StatusCode.NOT_FOUND, "no such image")


def _missing_bytes() -> StatusError:
    return StatusError(grpc.StatusCode.DATA_LOSS, "the image's bytes are missing from storage")


def _category(value: str) -> str:
    category = value.strip()
    if len(category) > MAX_CATEGORY_CHARS or not category.isprintable():
        raise invalid(f"category must be at most {MAX_CATEGORY_CHARS} printable characters")
    return category


def _min_score(value: float) -> float:
    if math.isnan(value) or not 0 <= value <= 1:
        raise invalid("min_score must be between 0 and 1")
    return value


def _given_min_score(request) -> float:
    return _min_score(request.min_score) if request.HasField("min_score") else 0.0


_THUMB_SIZES = {
    catalog_pb2.THUMBNAIL_SIZE_UNSPECIFIED: THUMB_SIZE,
    catalog_pb2.THUMBNAIL_SIZE_SMALL: THUMB_SIZE,
    catalog_pb2.THUMBNAIL_SIZE_DISPLAY: DISPLAY_SIZE,
}

_ORDERS = {
    catalog_pb2.IMAGE_ORDER_UNSPECIFIED: "",
    catalog_pb2.IMAGE_ORDER_TAKEN_NEWEST: "newest",
    catalog_pb2.IMAGE_ORDER_TAKEN_OLDEST: "oldest",
}


def _taken(request) -> TakenFilter:
    """Taken-date bounds and order of a list or search request."""
    if request.order not in _ORDERS:
        raise invalid("order must be IMAGE_ORDER_UNSPECIFIED, IMAGE_ORDER_TAKEN_NEWEST or IMAGE_ORDER_TAKEN_OLDEST")
    after = request.taken_after.ToDatetime(tzinfo=UTC) if request.HasField("taken_after") else None
    before = request.taken_before.ToDatetime(tzinfo=UTC) if request.HasField("taken_before") else None
    if after and before and after >= before:
        raise invalid("taken_after must be before taken_before")
    return TakenFilter(after, before, _ORDERS[request.order])


async def _stream(image: catalog_pb2.Image, reader: BlobReader) -> AsyncIterator[catalog_pb2.DownloadImageResponse]:
    try:
        yield catalog_pb2.DownloadImageResponse(image=image)
        async for chunk in reader.chunks():
            yield catalog_pb2.DownloadImageResponse(chunk=chunk)
    finally:
        await reader.close()


class _MemoryReader(BlobReader):
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.size = len(data)

    async def read(self, n: int = 1024 * 1024) -> bytes:
        return self._data.read(n)

    async def close(self) -> None:
        return None


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    """Every read is scoped to the caller (admins may read everyone's); every write to the owner."""

    def __init__(
        self,
        *,
        store: CatalogStore,
        contents: ContentBytes,
        uploader: Uploader,
        reclassifier: Reclassifier,
        similarity: SimilarityIndex,
        reclassify_batch_size: int,
        trash_retention_days: int = 30,
    ) -> None:
        self._store = store
        self._contents = contents
        self._uploader = uploader
        self._reclassifier = reclassifier
        self._reclassify_batch = reclassify_batch_size
        self._render_slots = asyncio.Semaphore(_RENDER_SLOTS)
        self._similarity = similarity
        self._trash_retention_days = trash_retention_days

    async def _visible(self, uid: str, caller: Principal, *, trashed: bool = False) -> ImageRow:
        row = await self._store.get(_uid(uid), owner=None if caller.is_admin else caller.subject, trashed=trashed)
        if row is None:
            raise _not_found()
        return row

    @_unary
    async def UploadImage(
        self, request_iterator: AsyncIterator[catalog_pb2.UploadImageRequest], context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Image:
        row, duplicate, near_duplicate_of = await self._uploader.upload(aiter(request_iterator), current_principal())
        return await self._message(row, duplicate=duplicate, near_duplicate_of=near_duplicate_of)

    @_unary
    async def GetImage(
        self, request: catalog_pb2.GetImageRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Image:
        return await self._message(await self._visible(request.uid, current_principal()))

    @_streaming
    async def DownloadImage(
        self, request: catalog_pb2.DownloadImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[catalog_pb2.DownloadImageResponse]:
        row = await self._visible(request.uid, current_principal())
        try:
            reader = await self._contents.blobs.open(original_key(row.sha256))
        except BlobNotFound:
            raise _missing_bytes() from None
        async for reply in _stream(image_message(row), reader):
            yield reply

    @_streaming
    async def GetThumbnail(
        self, request: catalog_pb2.GetThumbnailRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[catalog_pb2.DownloadImageResponse]:
        size = _THUMB_SIZES.get(request.size)
        if size is None:
            raise invalid("size must be THUMBNAIL_SIZE_SMALL or THUMBNAIL_SIZE_DISPLAY")
        # The trash shows thumbnails of what it holds.
        row = await self._visible(request.uid, current_principal(), trashed=True)
        key = thumbnail_key(row.sha256, row.thumb_format, size)
        try:
            reader = await self._contents.blobs.open(key)
        except BlobNotFound:
            reader = _MemoryReader(await self._render(row, key, size))
        image = image_message(row)
        image.size_bytes = reader.size
        image.content_type = thumbnails.CONTENT_TYPES[row.thumb_format]
        async for reply in _stream(image, reader):
            yield reply

    async def _render(self, row: ImageRow, key: str, size: int) -> bytes:
        """Builds the thumbnail from the original and caches it; concurrent first requests may both build it."""
        async with self._render_slots:
            with tempfile.SpooledTemporaryFile(max_size=4 * 1024 * 1024) as original:
                await self._copy_original(row, original)
                data = await asyncio.to_thread(thumbnails.render, original, row.thumb_format, size)
        content_type = thumbnails.CONTENT_TYPES[row.thumb_format]
        try:
            await self._contents.blobs.put(key, io.BytesIO(data), len(data), content_type=content_type)
        except BlobStoreUnavailable:
            log.warning("could not cache the thumbnail of %s; it is rendered again next time", row.uid)
        return data

    async def _copy_original(self, row: ImageRow, target: IO[bytes]) -> None:
        try:
            reader = await self._contents.blobs.open(original_key(row.sha256))
        except BlobNotFound:
            raise _missing_bytes() from None
        try:
            async for chunk in reader.chunks():
                target.write(chunk)
        finally:
            await reader.close()

    @_unary
    async def DeleteImage(
        self, request: catalog_pb2.DeleteImageRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.DeleteImageResponse:
        caller = current_principal()
        if not await self._store.delete_image(
            _uid(request.uid), owner=caller.subject, remove_bytes=self._contents.discard
        ):
            raise _not_found()
        return catalog_pb2.DeleteImageResponse()

    @_unary
    async def ListImages(
        self, request: catalog_pb2.ListImagesRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.ListImagesResponse:
        caller = current_principal()
        if request.all_users and not caller.is_admin:
            raise StatusError(grpc.StatusCode.PERMISSION_DENIED, "only administrators may list every user's images")
        size = pagination.page_size(request.page_size)
        tag = normalize_tag(request.tag) if request.tag else ""
        category = _category(request.category)
        filtered = bool(tag or category)
        known: dict[str, float] = {}
        if filtered:
            min_score, known[caller.subject] = await self._thresholds(request, caller.subject)
        else:
            min_score = _given_min_score(request)
        owner = None if request.all_users else caller.subject
        taken = _taken(request)
        query = pagination.fingerprint("list", caller.subject, owner, category, tag, min_score, taken)
        cursor = pagination.decode(request.page_token, query, (str, int) if taken.order else (int,))
        page = await self._store.list_images(
            owner=owner, category=category, tag=tag, min_score=min_score, after=cursor, limit=size, taken=taken
        )
        return catalog_pb2.ListImagesResponse(
            images=await self._messages(page.rows, known=known),
            next_page_token=pagination.encode(query, page.next_cursor) if page.next_cursor else "",
        )

    @_unary
    async def SearchImages(
        self, request: catalog_pb2.SearchImagesRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.SearchImagesResponse:
        caller = current_principal()
        found = query_terms(request.query, self._store.vocabulary)
        size = pagination.page_size(request.page_size)
        min_score, setting = await self._thresholds(request, caller.subject)
        taken = _taken(request)
        query = pagination.fingerprint("search", caller.subject, found, min_score, taken)
        cursor = pagination.decode(request.page_token, query, (str, int) if taken.order else (float, int))
        page = await self._store.search(
            owner=caller.subject, query_terms=found, min_score=min_score, after=cursor, limit=size, taken=taken
        )
        token = pagination.encode(query, page.next_cursor) if page.next_cursor else ""
        images = await self._messages(page.rows, known={caller.subject: setting})
        return catalog_pb2.SearchImagesResponse(images=images, next_page_token=token)

    @_unary
    async def ListCategories(
        self, request: catalog_pb2.ListCategoriesRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.ListCategoriesResponse:
        owner = current_principal().subject
        min_score, _ = await self._thresholds(request, owner)
        counts = await self._store.category_counts(owner, min_score=min_score)
        return catalog_pb2.ListCategoriesResponse(
            categories=[catalog_pb2.CategoryCount(category=name, count=n) for name, n in counts]
        )

    @_unary
    async def ListTags(
        self, request: catalog_pb2.ListTagsRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.ListTagsResponse:
        owner = current_principal().subject
        if not 0 <= request.limit <= MAX_TAG_LIMIT:
            raise invalid(f"limit must be between 0 and {MAX_TAG_LIMIT} (0 means all)")
        prefix = self._store.vocabulary.term(request.prefix)
        if len(prefix) > MAX_QUERY_CHARS or not prefix.isprintable():
            raise invalid(f"prefix must be at most {MAX_QUERY_CHARS} printable characters")
        min_score, _ = await self._thresholds(request, owner)
        counts = await self._store.tag_counts(owner, min_score=min_score, prefix=prefix, limit=request.limit)
        return catalog_pb2.ListTagsResponse(tags=[catalog_pb2.TagCount(tag=name, count=n) for name, n in counts])

    @_unary
    async def GetSettings(
        self, request: catalog_pb2.GetSettingsRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.UserSettings:
        owner = current_principal().subject
        return catalog_pb2.UserSettings(min_score=await self._setting(owner))

    @_unary
    async def UpdateSettings(
        self, request: catalog_pb2.UpdateSettingsRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.UserSettings:
        owner = current_principal().subject
        if request.HasField("min_score"):
            await self._store.set_min_score(owner, _min_score(request.min_score))
        return catalog_pb2.UserSettings(min_score=await self._setting(owner))

    async def _message(
        self, row: ImageRow, *, duplicate: bool = False, near_duplicate_of: str = ""
    ) -> catalog_pb2.Image:
        """The image with the model tags its owner's search threshold keeps: search finds it by no others."""
        min_score = await self._setting(row.owner_id)
        return image_message(row, duplicate=duplicate, near_duplicate_of=near_duplicate_of, min_score=min_score)

    async def _messages(
        self, rows: Sequence[ImageRow], *, known: Mapping[str, float] | None = None
    ) -> list[catalog_pb2.Image]:
        """Image messages as _message makes them, with one settings lookup per owner (an admin's list spans many)
        whose setting is not `known` already."""
        thresholds = dict(known or {})
        for owner in {row.owner_id for row in rows} - thresholds.keys():
            thresholds[owner] = await self._setting(owner)
        return [image_message(row, min_score=thresholds[row.owner_id]) for row in rows]

    async def _setting(self, owner: str) -> float:
        found = await self._store.min_score_setting(owner)
        return DEFAULT_MIN_SCORE if found is None else found

    async def _thresholds(self, request, owner: str) -> tuple[float, float]:
        """The request's min_score (the owner's setting when it sets none) and the owner's setting, read once: a
        page's messages need the setting as well, and a second read cost a pool checkout and a round trip."""
        setting = await self._setting(owner)
        return (_min_score(request.min_score) if request.HasField("min_score") else setting), setting

    @_unary
    async def UpdateTags(
        self, request: catalog_pb2.UpdateTagsRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Image:
        row = await self._store.update_tags(
            _uid(request.uid),
            owner=current_principal().subject,
            add=list(request.add),
            remove=list(request.remove),
            replace=request.replace,
        )
        if row is None:
            raise _not_found()
        return await self._message(row)

    @_unary
    async def FindSimilarImages(
        self, request: catalog_pb2.FindSimilarImagesRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.FindSimilarImagesResponse:
        size = pagination.page_size(request.page_size or _SIMILAR_PAGE)
        # The owner's own image only, admins included: similarity never crosses users.
        row = await self._store.get(_uid(request.uid), owner=current_principal().subject)
        if row is None:
            raise _not_found()
        neighbours = await self._similarity.similar_to(image_id=row.id, owner=row.owner_id, limit=size)
        if neighbours is None:
            raise StatusError(
                grpc.StatusCode.FAILED_PRECONDITION, "this photo has not been analysed yet; try again in a minute"
            )
        rows = {r.id: r for r in await self._store.rows_by_id([n.image_id for n in neighbours])}
        # A neighbour deleted since the index was read is left out.
        kept = [n for n in neighbours if n.image_id in rows]
        images = await self._messages([rows[n.image_id] for n in kept])
        found = [catalog_pb2.SimilarImage(image=i, similarity=n.similarity) for i, n in zip(images, kept, strict=True)]
        return catalog_pb2.FindSimilarImagesResponse(images=found)

    @_unary
    async def ListNearDuplicates(
        self, request: catalog_pb2.ListNearDuplicatesRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.ListNearDuplicatesResponse:
        owner = current_principal().subject
        groups = await self._similarity.duplicate_groups(owner=owner, max_links=_MAX_LINKS)
        rows = {r.id: r for r in await self._store.rows_by_id([i for group in groups for i in group])}
        images = {m.uid: m for m in await self._messages(list(rows.values()))}
        return catalog_pb2.ListNearDuplicatesResponse(
            groups=[
                catalog_pb2.DuplicateGroup(images=[images[rows[i].uid] for i in group if i in rows]) for group in groups
            ]
        )

    @_unary
    async def Reclassify(
        self, request: catalog_pb2.ReclassifyRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.ReclassifyResponse:
        caller = current_principal()
        if not caller.is_admin:
            raise StatusError(grpc.StatusCode.PERMISSION_DENIED, "only administrators may reclassify images")
        batch = request.batch_size or self._reclassify_batch
        if not 1 <= batch <= MAX_RECLASSIFY_BATCH:
            raise invalid(f"batch_size must be between 1 and {MAX_RECLASSIFY_BATCH} (0 means the default)")
        result = await self._reclassifier.run_batch(caller.token, batch_size=batch)
        return catalog_pb2.ReclassifyResponse(
            reclassified=result.reclassified,
            failed=result.failed,
            remaining=result.remaining,
            model_version=result.model_version,
        )

    # --- trash -------------------------------------------------------------------------------------

    def _trashed(self, row: ImageRow) -> catalog_pb2.Image:
        message = image_message(row)
        if row.deleted_at is not None:
            message.purge_at.FromDatetime(row.deleted_at + timedelta(days=self._trash_retention_days))
        return message

    @_unary
    async def TrashImage(
        self, request: catalog_pb2.TrashImageRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Image:
        row = await self._store.trash(_uid(request.uid), owner=current_principal().subject)
        if row is None:
            raise _not_found()
        return self._trashed(row)

    @_unary
    async def RestoreImage(
        self, request: catalog_pb2.RestoreImageRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Image:
        row = await self._store.restore(_uid(request.uid), owner=current_principal().subject)
        if row is None:
            raise StatusError(grpc.StatusCode.NOT_FOUND, "the image is not in the trash")
        return await self._message(row)

    @_unary
    async def ListTrash(
        self, request: catalog_pb2.ListTrashRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.ListTrashResponse:
        caller = current_principal()
        size = pagination.page_size(request.page_size)
        query = pagination.fingerprint("trash", caller.subject)
        cursor = pagination.decode(request.page_token, query, (int, int))
        page = await self._store.list_trash(owner=caller.subject, before=cursor, limit=size)
        return catalog_pb2.ListTrashResponse(
            images=[self._trashed(row) for row in page.rows],
            next_page_token=pagination.encode(query, page.next_cursor) if page.next_cursor else "",
            retention_days=self._trash_retention_days,
        )

    # --- digests (bulk import) -------------------------------------------------------------------

    @_unary
    async def FindDigests(
        self, request: catalog_pb2.FindDigestsRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.FindDigestsResponse:
        known = await self._store.known_digests(current_principal().subject, _digests(request.sha256))
        return catalog_pb2.FindDigestsResponse(
            known=[catalog_pb2.KnownDigest(sha256=sha, uid=uid, category=category) for sha, uid, category in known]
        )

    @_unary
    async def GetUsage(
        self, request: catalog_pb2.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.Usage:
        usage = await self._store.usage(current_principal().subject)
        return catalog_pb2.Usage(
            bytes_used=usage.bytes,
            bytes_limit=_shown(usage.quota.bytes),
            images_used=usage.images,
            images_limit=_shown(usage.quota.images),
        )


def _digests(values: Sequence[str]) -> set[str]:
    if len(values) > MAX_DIGESTS:
        raise invalid(f"send at most {MAX_DIGESTS} digests per request")
    digests = {value.lower() for value in values}
    for digest in digests:
        if len(digest) != 64 or not _HEX.issuperset(digest):
            raise invalid(f"{digest[:80]!r} is not a SHA-256 digest (64 hexadecimal characters)")
    return digests
