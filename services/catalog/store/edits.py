"""Changes by the owner: tags added or hidden, images deleted for good, and the owner's min_score setting."""

from collections.abc import Sequence

from services.catalog import terms
from services.catalog.models import ImageRow
from services.catalog.store.base import COLUMNS, RemoveBytes, StoreBase, retrying, statement
from services.common.db import one_row

_LOCK_VISIBLE = statement(
    "SELECT {columns} FROM catalog.images AS i WHERE uid = %(uid)s AND owner_id = %(owner)s"
    " AND status <> 'uploading' AND deleted_at IS NULL FOR UPDATE",
    columns=COLUMNS,
)
_SET_TAGS = statement(
    "UPDATE catalog.images AS i SET manual_tags = %(manual)s, hidden_tags = %(hidden)s, updated_at = now()"
    " WHERE id = %(id)s RETURNING {columns}",
    columns=COLUMNS,
)
_CONTENT_OF = statement(
    "SELECT sha256 FROM catalog.images WHERE uid = %(uid)s AND owner_id = %(owner)s AND status <> 'uploading'"
)
_DELETE = statement("DELETE FROM catalog.images WHERE uid = %(uid)s AND owner_id = %(owner)s AND status <> 'uploading'")
_MIN_SCORE = statement("SELECT min_score FROM catalog.user_settings WHERE owner_id = %(owner)s")
_SET_MIN_SCORE = statement(
    "INSERT INTO catalog.user_settings (owner_id, min_score) VALUES (%(owner)s, %(min_score)s)"
    " ON CONFLICT (owner_id) DO UPDATE SET min_score = excluded.min_score, updated_at = now()"
)


class Edits(StoreBase):
    """What an owner changes on their own images and settings; every statement is scoped to the owner."""

    async def update_tags(
        self, uid: str, *, owner: str, add: Sequence[str], remove: Sequence[str], replace: bool
    ) -> ImageRow | None:
        """Adds, hides or replaces manual tags and rebuilds the search rows; None when the image is not visible."""

        async def attempt() -> ImageRow | None:
            async with self._pool.connection() as conn, conn.transaction():
                row = await self._fetch_one(conn, _LOCK_VISIBLE, {"uid": uid, "owner": owner})
                if row is None:
                    return None
                manual, hidden = terms.apply_tag_changes(
                    manual=row.manual_tags,
                    hidden=row.hidden_tags,
                    model=[tag for tag, _ in row.model_tags],
                    add=add,
                    remove=remove,
                    replace=replace,
                )
                params = {"manual": manual, "hidden": hidden, "id": row.id}
                row = one_row(await self._fetch_one(conn, _SET_TAGS, params), "updating a locked image's tags")
                await self._rewrite_index(conn, row)
                return row

        return await retrying(attempt)

    async def delete_image(self, uid: str, *, owner: str, remove_bytes: RemoveBytes) -> bool:
        """Deletes the row, then the bytes when no other row (any owner) still refers to them."""
        params = {"uid": uid, "owner": owner}
        async with self._pool.connection() as conn:
            cur = await conn.execute(_CONTENT_OF, params)
            found = await cur.fetchone()
        if found is None:
            return False
        async with self.content_lock(found[0]) as conn:
            return await self._delete_then_release(conn, _DELETE, params, sha256=found[0], remove_bytes=remove_bytes)

    async def min_score_setting(self, owner: str) -> float | None:
        """The owner's min_score setting; None until they set one."""
        async with self._single_statements() as conn:
            cur = await conn.execute(_MIN_SCORE, {"owner": owner})
            row = await cur.fetchone()
        return None if row is None else float(row[0])

    async def set_min_score(self, owner: str, min_score: float) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(_SET_MIN_SCORE, {"owner": owner, "min_score": min_score})
