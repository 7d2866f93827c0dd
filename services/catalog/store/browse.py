"""Browsing: single images, pages of an owner's images by upload or taken date, and category and tag counts."""

from collections.abc import Sequence
from typing import Any

from psycopg import sql

from services.catalog import terms
from services.catalog.models import ImageRow, Page
from services.catalog.store import keyset
from services.catalog.store.base import COLUMNS, StoreBase, statement
from services.catalog.store.keyset import TakenFilter

_GET = statement(
    "SELECT {columns} FROM catalog.images AS i WHERE uid = %(uid)s AND status <> 'uploading'"
    " AND (%(trashed)s OR deleted_at IS NULL) AND (%(owner)s::text IS NULL OR owner_id = %(owner)s)",
    columns=COLUMNS,
)
_GET_BY_ID = statement("SELECT {columns} FROM catalog.images AS i WHERE id = %(id)s", columns=COLUMNS)
_VISIBLE = sql.SQL("i.status <> 'uploading' AND i.deleted_at IS NULL")
_IMAGES = sql.SQL("catalog.images AS i")
# The tag's search term, so a list by tag shows what a search for it finds ("Holidays" too).
_IMAGES_BY_TERM = sql.SQL("catalog.search_terms AS t JOIN catalog.images AS i ON i.id = t.image_id")
_TERM_AT_LEAST = sql.SQL("t.term = %(tag)s AND t.weight >= %(min_score)s")
_CATEGORY_SCORE_AT_LEAST = sql.SQL("i.category_score >= %(min_score)s")
_CATEGORY = sql.SQL("i.category = %(category)s")
_PAGE = "SELECT {columns} FROM {source} WHERE {where} ORDER BY {order} LIMIT %(limit)s"
# Counts are precomputed at the default threshold, and counted from the images (or terms) at any other.
_CATEGORY_COUNTS = statement(
    "SELECT category, images FROM catalog.category_counts WHERE owner_id = %(owner)s AND images > 0"
    " ORDER BY images DESC, category"
)
_CATEGORY_COUNTS_AT = statement(
    "SELECT category, count(*) FROM catalog.images WHERE owner_id = %(owner)s AND status = 'classified'"
    " AND category <> '' AND category_score >= %(min)s GROUP BY category ORDER BY count(*) DESC, category"
)
_TAG_COUNTS = statement(
    "SELECT term, images FROM catalog.term_counts WHERE owner_id = %(owner)s"
    " AND term >= %(low)s AND term < %(high)s AND images > 0"
    " ORDER BY images DESC, term LIMIT %(limit)s"
)
_TAG_COUNTS_AT = statement(
    "SELECT term, count(*) FROM catalog.search_terms WHERE owner_id = %(owner)s"
    " AND term >= %(low)s AND term < %(high)s AND weight >= %(min)s"
    " GROUP BY term ORDER BY count(*) DESC, term LIMIT %(limit)s"
)


class Browsing(StoreBase):
    """Reads of visible images, always scoped to an owner unless an administrator asks."""

    async def get(self, uid: str, *, owner: str | None, trashed: bool = False) -> ImageRow | None:
        """A visible image by uid (or, with `trashed`, one in the trash too); `owner` None means any owner."""
        async with self._single_statements() as conn:
            return await self._fetch_one(conn, _GET, {"uid": uid, "trashed": trashed, "owner": owner})

    async def get_by_id(self, image_id: int) -> ImageRow | None:
        async with self._single_statements() as conn:
            return await self._fetch_one(conn, _GET_BY_ID, {"id": image_id})

    async def rows_by_id(self, ids: list[int]) -> list[ImageRow]:
        """The rows of these ids, in the given order (missing ones left out)."""
        async with self._single_statements() as conn:
            return await self._rows_by_id(conn, ids)

    async def list_images(
        self,
        *,
        owner: str | None,
        category: str,
        tag: str,
        min_score: float,
        after: Sequence[Any] | None,
        limit: int,
        taken: TakenFilter = keyset.ANY_TIME,
    ) -> Page:
        """Newest upload first, or by taken date; keyset pagination, so concurrent uploads never shift a page."""
        where: list[sql.Composable] = [_VISIBLE]
        params: dict[str, Any] = {"limit": limit + 1}
        source, ident = _IMAGES, sql.SQL("i.id")
        if tag:
            source, ident = _IMAGES_BY_TERM, sql.SQL("t.image_id")
            where.append(_TERM_AT_LEAST)
            params.update(tag=self._vocabulary.term(tag), min_score=min_score)
        elif min_score > 0:
            where.append(_CATEGORY_SCORE_AT_LEAST)
            params.update(min_score=min_score)
        if owner is not None:
            where.append(sql.SQL("{} = %(owner)s").format(sql.SQL("t.owner_id" if tag else "i.owner_id")))
            params.update(owner=owner)
        if category:
            where.append(_CATEGORY)
            params.update(category=category)
        where += taken.conditions(params)
        key = [keyset.TAKEN, ident] if taken.order else [ident]
        if after is not None:
            where.append(keyset.after(key, after, taken.order, params))
        query = sql.SQL(_PAGE).format(
            columns=COLUMNS, source=source, where=sql.SQL(" AND ").join(where), order=keyset.order_by(key, taken.order)
        )
        async with self._single_statements() as conn:
            rows = await self._fetch_all(conn, query, params)
        if len(rows) <= limit:
            return Page(rows)
        last = rows[limit - 1]
        return Page(rows[:limit], (keyset.taken_key(last), last.id) if taken.order else (last.id,))

    async def category_counts(self, owner: str, *, min_score: float) -> list[tuple[str, int]]:
        """Classified images per category whose top label reaches `min_score`, as a category search finds them."""
        query = _CATEGORY_COUNTS if min_score == terms.DEFAULT_MIN_SCORE else _CATEGORY_COUNTS_AT
        async with self._single_statements() as conn:
            cur = await conn.execute(query, {"owner": owner, "min": min_score})
            return [(category, count) for category, count in await cur.fetchall()]

    async def tag_counts(self, owner: str, *, min_score: float, prefix: str, limit: int) -> list[tuple[str, int]]:
        """Images per search term at `min_score` or more (what a search for the term returns), most first;
        only terms starting with `prefix`, and at most `limit` (0: all)."""
        low, high = terms.prefix_range(prefix)
        params = {"owner": owner, "low": low, "high": high, "min": min_score, "limit": limit or None}
        query = _TAG_COUNTS if min_score == terms.DEFAULT_MIN_SCORE else _TAG_COUNTS_AT
        async with self._single_statements() as conn:
            cur = await conn.execute(query, params)
            return [(term, count) for term, count in await cur.fetchall()]
