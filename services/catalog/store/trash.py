"""The trash: images hidden by their owner, restorable as they were until the sweeper purges them."""

from datetime import UTC, datetime, timedelta

from services.catalog.models import ImageRow, Page
from services.catalog.store.base import COLUMNS, StoreBase, retrying, statement

_TRASH = statement(
    "UPDATE catalog.images AS i SET deleted_at = now(), updated_at = now()"
    " WHERE uid = %(uid)s AND owner_id = %(owner)s AND status <> 'uploading' AND deleted_at IS NULL"
    " RETURNING {columns}",
    columns=COLUMNS,
)
_LOCK_TRASHED = statement(
    "SELECT id FROM catalog.images WHERE uid = %(uid)s AND owner_id = %(owner)s AND deleted_at IS NOT NULL FOR UPDATE"
)
# Keyset on (deleted_at, id); the cursor's microseconds are added to the epoch exactly (below 2^53).
_TRASH_PAGE = statement(
    "SELECT {columns} FROM catalog.images AS i WHERE owner_id = %(owner)s AND deleted_at IS NOT NULL"
    " AND (%(us)s::bigint IS NULL OR (deleted_at, id)"
    " < (timestamptz 'epoch' + %(us)s::bigint * interval '1 microsecond', %(id)s::bigint))"
    " ORDER BY deleted_at DESC, id DESC LIMIT %(limit)s",
    columns=COLUMNS,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (a float timestamp would round)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


class Trash(StoreBase):
    """Moving an owner's images into and out of the trash, and listing it."""

    async def trash(self, uid: str, *, owner: str) -> ImageRow | None:
        """Hides a visible image in the trash; its tag and search rows go (counts follow), row and bytes stay."""

        async def attempt() -> ImageRow | None:
            async with self._pool.connection() as conn, conn.transaction():
                row = await self._fetch_one(conn, _TRASH, {"uid": uid, "owner": owner})
                if row is not None:
                    await self._drop_index(conn, row.id)
                return row

        return await retrying(attempt)

    async def restore(self, uid: str, *, owner: str) -> ImageRow | None:
        """Brings a trashed image back as it was, tags and search rows included; None when not in the trash."""

        async def attempt() -> ImageRow | None:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(_LOCK_TRASHED, {"uid": uid, "owner": owner})
                found = await cur.fetchone()
                return None if found is None else await self._untrash(conn, found[0])

        return await retrying(attempt)

    async def list_trash(self, *, owner: str, before: tuple[int, int] | None, limit: int) -> Page:
        """The owner's trashed images, most recently deleted first; the cursor is (deleted_at in µs, id)."""
        micros, image_id = before or (None, None)
        params = {"owner": owner, "us": micros, "id": image_id, "limit": limit + 1}
        async with self._pool.connection() as conn:
            rows = await self._fetch_all(conn, _TRASH_PAGE, params)
        if len(rows) <= limit:
            return Page(rows)
        last = rows[limit - 1]
        if last.deleted_at is None:
            raise RuntimeError(f"image {last.id} was listed from the trash without a deletion time")
        return Page(rows[:limit], (epoch_micros(last.deleted_at), last.id))
