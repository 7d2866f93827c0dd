"""Maintenance: purging expired trash and stale uploads, orphaned bytes, re-tagging after a vocabulary change."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from psycopg.types.json import Jsonb

from services.catalog import terms
from services.catalog.models import ImageRow
from services.catalog.store.base import COLUMNS, RemoveBytes, StoreBase, retrying, statement, unlock
from services.common.db import one_row
from services.common.vocabulary import Vocabulary

_REFERENCED_HASHES = statement("SELECT DISTINCT sha256 FROM catalog.images WHERE sha256 = ANY(%(hashes)s)")
_EXPIRED_TRASH = statement(
    "SELECT id, sha256 FROM catalog.images WHERE deleted_at < now() - make_interval(secs => %(age)s)"
    " ORDER BY deleted_at LIMIT %(limit)s"
)
_PURGE_TRASHED = statement(
    "DELETE FROM catalog.images WHERE id = %(id)s AND deleted_at < now() - make_interval(secs => %(age)s)"
)
_STALE_UPLOADS = statement(
    "SELECT id, sha256 FROM catalog.images WHERE status = 'uploading'"
    " AND updated_at < now() - make_interval(secs => %(age)s) ORDER BY updated_at LIMIT %(limit)s"
)
_REMOVE_STALE_UPLOAD = statement(
    "DELETE FROM catalog.images WHERE id = %(id)s AND status = 'uploading'"
    " AND updated_at < now() - make_interval(secs => %(age)s)"
)
_TRY_LOCK = statement("SELECT pg_try_advisory_lock(hashtextextended(%(key)s, 0))")
_LOCK_UNTAGGED = statement(
    "SELECT {columns} FROM catalog.images AS i WHERE id > %(after)s AND status <> 'uploading'"
    " AND vocabulary_version <> %(version)s ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
    columns=COLUMNS,
)
_RETAG = statement(
    "UPDATE catalog.images AS i SET model_tags = %(tags)s, vocabulary_version = %(version)s WHERE id = %(id)s"
    " RETURNING {columns}",
    columns=COLUMNS,
)
_COUNT_UNTAGGED = statement(
    "SELECT count(*) FROM catalog.images WHERE status <> 'uploading' AND vocabulary_version <> %(version)s"
)


def _retagged(row: ImageRow, vocabulary: Vocabulary) -> Jsonb:
    """The row's model tags derived again from its stored labels with this vocabulary."""
    labels = [terms.LabelScore(i["label"], i["class_id"], i["score"]) for i in row.labels]
    # Face tags come from the stored faces, not the labels: they stay, scored as the best face.
    best_face = max((face["score"] for face in row.faces or ()), default=None)
    faces = [tag for tag, _ in row.model_tags if tag in terms.FACE_TAGS]
    model_tags = terms.score_model_tags(labels, vocabulary, face_tags=faces, face_score=best_face)
    return Jsonb([[tag, score] for tag, score in model_tags])


class Maintenance(StoreBase):
    """What the sweeper and the re-tagger do, in one process at a time (see `exclusive`)."""

    async def referenced_hashes(self, hashes: Sequence[str]) -> set[str]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_REFERENCED_HASHES, {"hashes": list(hashes)})
            return {row[0] for row in await cur.fetchall()}

    async def expired_trash(self, *, older_than_seconds: float, limit: int = 1000) -> list[tuple[int, str]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_EXPIRED_TRASH, {"age": older_than_seconds, "limit": limit})
            return [(image_id, sha256) for image_id, sha256 in await cur.fetchall()]

    async def purge_trashed(
        self, image_id: int, sha256: str, *, older_than_seconds: float, remove_bytes: RemoveBytes
    ) -> bool:
        """Deletes a trashed image for good (rechecked under the content lock: it may have been restored)."""
        params = {"id": image_id, "age": older_than_seconds}
        async with self.content_lock(sha256) as conn:
            return await self._delete_then_release(
                conn, _PURGE_TRASHED, params, sha256=sha256, remove_bytes=remove_bytes
            )

    async def stale_uploads(self, *, older_than_seconds: float, limit: int = 1000) -> list[tuple[int, str]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_STALE_UPLOADS, {"age": older_than_seconds, "limit": limit})
            return [(image_id, sha256) for image_id, sha256 in await cur.fetchall()]

    async def remove_stale_upload(
        self, image_id: int, sha256: str, *, older_than_seconds: float, remove_bytes: RemoveBytes
    ) -> bool:
        params = {"id": image_id, "age": older_than_seconds}
        async with self.content_lock(sha256) as conn:
            return await self._delete_then_release(
                conn, _REMOVE_STALE_UPLOAD, params, sha256=sha256, remove_bytes=remove_bytes
            )

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Yields True in exactly one process at a time (a try-lock), False elsewhere."""
        async with self._pool.connection() as conn:
            acquired = bool(await self._fetch_value(conn, _TRY_LOCK, {"key": name}))
            await conn.commit()
            try:
                yield acquired
            finally:
                if acquired:
                    await unlock(conn, name)

    async def retag_batch(self, *, after_id: int, limit: int) -> tuple[int, int]:
        """Derives the model tags of up to `limit` images (ids above `after_id`) tagged with another vocabulary
        version again from their stored labels; the model is not asked. Returns (images re-tagged, last id)."""
        version = self._vocabulary.version

        async def attempt() -> tuple[int, int]:
            async with self._pool.connection() as conn, conn.transaction():
                batch = {"after": after_id, "version": version, "limit": limit}
                rows = await self._fetch_all(conn, _LOCK_UNTAGGED, batch)
                for row in rows:
                    update = {"tags": _retagged(row, self._vocabulary), "version": version, "id": row.id}
                    retagged = one_row(await self._fetch_one(conn, _RETAG, update), "re-tagging a locked image")
                    await self._rewrite_index(conn, retagged)
                return len(rows), max((row.id for row in rows), default=after_id)

        return await retrying(attempt)

    async def count_untagged(self) -> int:
        """Images whose tags come from another vocabulary version than this process's."""
        async with self._pool.connection() as conn:
            return int(await self._fetch_value(conn, _COUNT_UNTAGGED, {"version": self._vocabulary.version}))
