"""Uploads: reserving a row within the owner's quota, making it visible with its outcome, or undoing it."""

from collections.abc import Collection
from typing import Any

from psycopg import sql

from services.catalog import terms
from services.catalog.models import ImageRow, NewImage, Outcome, QuotaExceeded, Usage
from services.catalog.store import tagging
from services.catalog.store.base import COLUMNS, LOCK_NAMESPACE, RemoveBytes, StoreBase, retrying, statement
from services.common.db import one_row

_NEW_IMAGE = statement("{names}", names=sql.SQL(", ").join(map(sql.Identifier, NewImage.__dataclass_fields__)))
_NEW_VALUES = statement("{values}", values=sql.SQL(", ").join(map(sql.Placeholder, NewImage.__dataclass_fields__)))
_CONTENT_XACT_LOCK = statement("SELECT pg_advisory_xact_lock(hashtextextended(%(lock_key)s, 0))")
# Takes the content lock, then locks the owner's usage row, then inserts if the quota allows, in one statement:
# the content lock is held from before the row exists until it commits, as the content lock requires, and the usage
# row stays locked until the insert's trigger has counted the new row, so concurrent uploads cannot overshoot.
# Nothing returned means a conflict (the caller's identical upload) or no room: settled by reserve()'s second path.
_RESERVE = statement(
    "WITH locked AS (SELECT pg_advisory_xact_lock(hashtextextended(%(lock_key)s, 0))),"
    " used AS (INSERT INTO catalog.storage_usage AS u (owner_id) SELECT %(owner_id)s FROM locked"
    " ON CONFLICT (owner_id) DO UPDATE SET owner_id = excluded.owner_id RETURNING u.bytes, u.images)"
    " INSERT INTO catalog.images AS i ({names}, status) SELECT {values}, 'uploading' FROM used"
    " WHERE used.bytes + %(size_bytes)s <= %(quota_bytes)s AND used.images + 1 <= %(quota_images)s"
    " ON CONFLICT (owner_id, sha256) DO NOTHING RETURNING {columns}",
    names=_NEW_IMAGE,
    values=_NEW_VALUES,
    columns=COLUMNS,
)
_LOCK_USAGE = statement(
    "INSERT INTO catalog.storage_usage AS u (owner_id) VALUES (%(owner_id)s)"
    " ON CONFLICT (owner_id) DO UPDATE SET owner_id = excluded.owner_id RETURNING u.bytes, u.images"
)
_INSERT = statement(
    "INSERT INTO catalog.images AS i ({names}, status) VALUES ({values}, 'uploading')"
    " ON CONFLICT (owner_id, sha256) DO NOTHING RETURNING {columns}",
    names=_NEW_IMAGE,
    values=_NEW_VALUES,
    columns=COLUMNS,
)
_TOUCH = statement(
    "UPDATE catalog.images AS i SET updated_at = now() WHERE owner_id = %(owner_id)s AND sha256 = %(sha256)s"
    " RETURNING {columns}",
    columns=COLUMNS,
)
_USAGE = statement("SELECT bytes, images FROM catalog.storage_usage WHERE owner_id = %(owner)s")
_FINALIZE_CLASSIFIED = statement(
    "WITH image AS (UPDATE catalog.images AS i SET {classified} WHERE id = %(id)s AND status = 'uploading'"
    " RETURNING {columns}),"
    " tagged AS (INSERT INTO catalog.tags (image_id, owner_id, tag, score, manual)"
    " SELECT image.id, image.owner_id, t.* FROM image, {tag_rows} AS t),"
    " indexed AS (INSERT INTO catalog.search_terms (image_id, owner_id, term, weight)"
    " SELECT image.id, image.owner_id, s.* FROM image, {term_rows} AS s)"
    " SELECT * FROM image",
    classified=tagging.CLASSIFIED,
    columns=COLUMNS,
    tag_rows=tagging.TAG_ROWS,
    term_rows=tagging.TERM_ROWS,
)
_FINALIZE_UNCLASSIFIED = statement(
    "UPDATE catalog.images AS i SET status = %(status)s, status_reason = %(reason)s, attempts = %(attempts)s,"
    " updated_at = now() WHERE id = %(id)s AND status = 'uploading' RETURNING {columns}",
    columns=COLUMNS,
)
_ABANDON = statement("DELETE FROM catalog.images WHERE uid = %(uid)s AND status = 'uploading' RETURNING sha256")
_KNOWN_DIGESTS = statement(
    "SELECT sha256, uid, category FROM catalog.images"
    " WHERE owner_id = %(owner)s AND sha256 = ANY(%(hashes)s) AND status <> 'uploading' AND deleted_at IS NULL"
)


class Uploads(StoreBase):
    """The rows of uploads in progress, the quota they count against, and the digests a bulk import skips."""

    async def reserve(self, new: NewImage) -> tuple[ImageRow, bool]:
        """Inserts an invisible `uploading` row, or returns the caller's existing row for the same bytes.

        Returns (row, created). An existing row is touched so the sweeper leaves it alone a while longer, and
        costs no quota. Raises QuotaExceeded when a new row would take the owner past the quota.
        """
        values = {name: getattr(new, name) for name in NewImage.__dataclass_fields__}
        lock = {"lock_key": LOCK_NAMESPACE + new.sha256}
        quota = {"quota_bytes": self._quota.bytes, "quota_images": self._quota.images}
        async with self._single_statements() as conn:
            row = await self._fetch_one(conn, _RESERVE, values | lock | quota)
        if row is not None:
            return row, True
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(_CONTENT_XACT_LOCK, lock)
            existing = await self._fetch_one(conn, _TOUCH, values)
            if existing is not None and existing.deleted_at is not None:
                # Uploading a trashed photo again brings it back.
                existing = await self._untrash(conn, existing.id)
            if existing is not None:
                return existing, False
            cur = await conn.execute(_LOCK_USAGE, values)
            used_bytes, used_images = one_row(await cur.fetchone(), "locking the owner's usage")
            usage = Usage(used_bytes, used_images, quota=self._quota)
            if usage.refuses(new.size_bytes):
                raise QuotaExceeded(usage, new.size_bytes)
            # The content lock keeps the caller's identical upload out, so the insert cannot conflict.
            return one_row(await self._fetch_one(conn, _INSERT, values), "reserving an upload"), True

    async def usage(self, owner: str) -> Usage:
        """What the owner's images use (uploads in progress included) and the owner's quota."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(_USAGE, {"owner": owner})
            row = await cur.fetchone()
        used_bytes, used_images = row or (0, 0)
        return Usage(used_bytes, used_images, quota=self._quota)

    async def finalize(self, image_id: int, outcome: Outcome) -> ImageRow | None:
        """Makes an `uploading` row visible with its outcome; None when another upload finished it first.

        One statement: an `uploading` row has no tag or search rows yet, so they are only inserted.
        """
        params: dict[str, Any]
        if outcome.classification is None:
            query = _FINALIZE_UNCLASSIFIED
            params = {"status": outcome.status, "reason": outcome.reason, "attempts": int(outcome.status == "failed")}
        else:
            model_tags = tagging.model_tags(outcome.classification, self._vocabulary)
            tags = terms.visible_tags(model_tags, (), ())
            query = _FINALIZE_CLASSIFIED
            classified = tagging.classified_params(outcome.classification, model_tags, self._vocabulary)
            params = classified | tagging.index_params(tags, self._vocabulary)

        async def attempt() -> ImageRow | None:
            async with self._single_statements() as conn:
                return await self._fetch_one(conn, query, params | {"id": image_id})

        return await retrying(attempt)

    async def abandon(self, uid: str, remove_bytes: RemoveBytes) -> None:
        """Undoes a reservation whose upload did not complete, bytes included when nothing else uses them.

        By uid, which the upload chose before reserving: a reservation cut short may exist without its caller
        ever having seen the row. A row that became visible meanwhile is left alone.
        """
        async with self._pool.connection() as conn:
            cur = await conn.execute(_ABANDON, {"uid": uid})
            row = await cur.fetchone()
        if row is not None:
            await self.release_content(row[0], remove_bytes)

    async def known_digests(self, owner: str, hashes: Collection[str]) -> list[tuple[str, str, str]]:
        """(sha256, uid, category) of the owner's visible images whose bytes hash to one of `hashes`. Trashed images
        are not listed, so a bulk import sends them again, which takes them out of the trash."""
        async with self._single_statements() as conn:
            cur = await conn.execute(_KNOWN_DIGESTS, {"owner": owner, "hashes": list(hashes)})
            return [(row[0], row[1], row[2]) for row in await cur.fetchall()]
