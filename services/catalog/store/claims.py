"""Claims on images to classify: the pending queue, and images an older model labelled (reclassification)."""

from collections.abc import Sequence

from psycopg import AsyncConnection, sql

from services.catalog.models import Classification, ImageRow, ModelId
from services.catalog.store import similarity, tagging
from services.catalog.store.base import COLUMNS, StoreBase, retrying, statement

_MAX_BACKOFF_SECONDS = 3600.0

_APPLY = statement(
    "UPDATE catalog.images AS i SET {classified} WHERE id = %(id)s AND status = ANY(%(statuses)s)"
    " AND deleted_at IS NULL RETURNING {columns}",
    classified=tagging.CLASSIFIED,
    columns=COLUMNS,
)
_CLAIM_PENDING = statement(
    "UPDATE catalog.images AS i SET next_attempt_at = now() + make_interval(secs => %(lease)s)"
    " WHERE id IN (SELECT id FROM catalog.images WHERE status = 'pending' AND next_attempt_at <= now()"
    " AND deleted_at IS NULL"
    " ORDER BY next_attempt_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING {columns}",
    columns=COLUMNS,
)
_RELEASE = statement("UPDATE catalog.images SET next_attempt_at = now() WHERE id = %(id)s")
_RECORD_FAILURE = statement(
    "UPDATE catalog.images SET attempts = attempts + 1,"
    " status = CASE WHEN %(permanent)s OR attempts + 1 >= %(max)s THEN 'failed' ELSE status END,"
    " status_reason = %(reason)s, updated_at = now(),"
    " next_attempt_at = now() + make_interval(secs => least(%(cap)s, %(backoff)s * power(2, attempts)))"
    " WHERE id = %(id)s AND status = 'pending' RETURNING status"
)
# Outdated: labelled by another classifier, faces found by another detector version than the one served, or
# labelled before embeddings were stored (the similar-photo backfill).
_OUTDATED = sql.SQL(
    "status IN ('classified', 'failed') AND (model_name <> %(name)s OR model_version <> %(version)s"
    " OR (%(face_version)s <> '' AND face_model_version <> %(face_version)s)"
    " OR (status = 'classified' AND NOT EXISTS"
    " (SELECT FROM catalog.image_embeddings AS e WHERE e.owner_id = images.owner_id AND e.image_id = images.id)))"
    " AND reclassify_tried <> %(key)s AND deleted_at IS NULL"
)
_CLAIM_OUTDATED = statement(
    "UPDATE catalog.images AS i SET next_attempt_at = now() + make_interval(secs => %(lease)s)"
    " WHERE id IN (SELECT id FROM catalog.images WHERE id > %(after)s AND {outdated}"
    " AND next_attempt_at <= now() ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING {columns}",
    outdated=_OUTDATED,
    columns=COLUMNS,
)
_COUNT_OUTDATED = statement("SELECT count(*) FROM catalog.images WHERE {outdated}", outdated=_OUTDATED)
_MARK_TRIED = statement(
    "UPDATE catalog.images SET next_attempt_at = now(),"
    " reclassify_tried = CASE WHEN %(release_only)s THEN reclassify_tried ELSE %(key)s END WHERE id = %(id)s"
)


def _outdated_params(model: ModelId) -> dict[str, str]:
    return {"name": model.name, "version": model.version, "face_version": model.face_version, "key": model.key}


class Claims(StoreBase):
    """Leases on images for one worker at a time (other replicas skip them), and what classifying them saved."""

    async def claim_pending(self, *, limit: int, lease_seconds: float) -> list[ImageRow]:
        """Reserves due pending images for this worker; other replicas skip them (SKIP LOCKED) until the lease ends."""
        async with self._pool.connection() as conn:
            return await self._fetch_all(conn, _CLAIM_PENDING, {"lease": lease_seconds, "limit": limit})

    async def release_claim(self, image_id: int) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(_RELEASE, {"id": image_id})

    async def record_failure(
        self, image_id: int, *, reason: str, permanent: bool, max_attempts: int, backoff_seconds: float
    ) -> str | None:
        """Counts a failed classification; the image becomes `failed` when permanent or out of attempts."""
        params = {
            "permanent": permanent,
            "max": max_attempts,
            "reason": reason[:500],
            "cap": _MAX_BACKOFF_SECONDS,
            "backoff": backoff_seconds,
            "id": image_id,
        }
        async with self._pool.connection() as conn:
            cur = await conn.execute(_RECORD_FAILURE, params)
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def save_classification(
        self, image_id: int, result: Classification, *, statuses: Sequence[str]
    ) -> ImageRow | None:
        """Stores a classification of an image still in one of `statuses`; None when it is not (any more)."""

        async def attempt() -> ImageRow | None:
            async with self._pool.connection() as conn, conn.transaction():
                return await self._apply(conn, image_id, result, statuses)

        return await retrying(attempt)

    async def _apply(
        self, conn: AsyncConnection, image_id: int, result: Classification, statuses: Sequence[str]
    ) -> ImageRow | None:
        """Replaces the model's labels and tags, keeping manual and hidden tags, and rebuilds the search rows."""
        model_tags = tagging.model_tags(result, self._vocabulary)
        params = tagging.classified_params(result, model_tags, self._vocabulary)
        row = await self._fetch_one(conn, _APPLY, params | {"id": image_id, "statuses": list(statuses)})
        if row is not None:
            await self._rewrite_index(conn, row)
            if result.embedding:
                await similarity.save_embedding(conn, image_id=row.id, owner=row.owner_id, embedding=result.embedding)
        return row

    async def claim_outdated(
        self, model: ModelId, *, limit: int, lease_seconds: float, after_id: int = 0
    ) -> list[ImageRow]:
        """Reserves outdated images with ids above `after_id`, lowest first.

        A run passes on the last id it claimed, so each batch reads on from there through the primary key
        instead of scanning past every image already relabelled.
        """
        params = _outdated_params(model) | {"lease": lease_seconds, "limit": limit, "after": after_id}
        async with self._pool.connection() as conn:
            return await self._fetch_all(conn, _CLAIM_OUTDATED, params)

    async def count_outdated(self, model: ModelId) -> int:
        async with self._pool.connection() as conn:
            return int(await self._fetch_value(conn, _COUNT_OUTDATED, _outdated_params(model)))

    async def mark_reclassify_tried(self, image_id: int, model: ModelId, *, release_only: bool = False) -> None:
        """Ends a reclassification claim; unless `release_only`, this model is not tried on the image again."""
        async with self._pool.connection() as conn:
            await conn.execute(_MARK_TRIED, {"release_only": release_only, "key": model.key, "id": image_id})
