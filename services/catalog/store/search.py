"""Search: an owner's images matching every query term, best match first or by taken date."""

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, sql

from services.catalog.models import Page, SearchHit
from services.catalog.store import keyset
from services.catalog.store.base import StoreBase
from services.catalog.store.keyset import TakenFilter

# Rows of the first term read per statement when several terms must match.
_SEARCH_CHUNK = 200
_FIRST_TERM = sql.SQL("s.owner_id = %(owner)s AND s.term = %(t0)s AND s.weight >= %(min)s")
# Another term's rows of the same image, at `min` or more.
_OTHER_TERM = sql.SQL(
    " JOIN catalog.search_terms AS {o} ON {o}.image_id = s.image_id AND {o}.term = {term} AND {o}.weight >= %(min)s"
)
_WITH_IMAGE = sql.SQL(" JOIN catalog.images AS i ON i.id = s.image_id")
_HITS = sql.SQL(
    "SELECT s.image_id, {weakest} FROM catalog.search_terms AS s{joins} WHERE {where} ORDER BY {order} LIMIT %(limit)s"
)
# The next chunk of a several-term search: first-term rows after (weight, id) in index order, with the others.
_SEVERAL = sql.SQL(
    "SELECT s.image_id, s.weight, {weakest} FROM catalog.search_terms AS s{joins} WHERE {first}"
    " AND (s.weight, s.image_id) < (%(weight)s::real, %(id)s::bigint)"
    " ORDER BY s.weight DESC, s.image_id DESC LIMIT %(chunk)s"
)


def _weakest(count: int) -> sql.Composable:
    """The weakest match of an image over `count` terms (s is the first term's row, o1... the others')."""
    if count == 1:
        return sql.SQL("s.weight")
    others = sql.SQL(", ").join(sql.Identifier(f"o{k}", "weight") for k in range(1, count))
    return sql.SQL("least(s.weight, {})").format(others)


def _joins(count: int) -> sql.Composable:
    """The other terms' rows of the same image, each at `min` or more."""
    return sql.Composed(
        [_OTHER_TERM.format(o=sql.Identifier(f"o{k}"), term=sql.Placeholder(f"t{k}")) for k in range(1, count)]
    )


def _key(count: int, taken: TakenFilter) -> list[sql.Composable]:
    return [keyset.TAKEN if taken.order else _weakest(count), sql.SQL("s.image_id")]


def _term_params(query_terms: Sequence[str]) -> dict[str, Any]:
    return {f"t{k}": term for k, term in enumerate(query_terms)}


class Search(StoreBase):
    """Search over the search-term rows (see terms.search_terms), scoped to one owner."""

    async def search(
        self,
        *,
        owner: str,
        query_terms: Sequence[str],
        min_score: float,
        after: Sequence[Any] | None,
        limit: int,
        taken: TakenFilter = keyset.ANY_TIME,
    ) -> Page:
        """Images matching every term at `min_score` or more, best first by their weakest match (manual tags
        first), then newest; or by taken date.

        One term (the common case, and the only one with no sort) reads the term's index rows already in weight
        order, so a page costs the same at any catalog size; further terms are joined on the image id.
        """
        async with self._pool.connection() as conn:
            if len(query_terms) > 1 and not taken.order:
                hits = await self._best_of_several(conn, query_terms, owner, min_score, after, limit)
            else:
                hits = await self._hits(conn, query_terms, owner, min_score, after, limit, taken)
            rows = await self._rows_by_id(conn, [hit.image_id for hit in hits[:limit]])
        if len(hits) <= limit or not rows:
            return Page(rows)
        last = hits[limit - 1]
        if taken.order:
            by_id = {row.id: row for row in rows}
            cursor = (keyset.taken_key(by_id[last.image_id]), last.image_id) if last.image_id in by_id else None
            return Page(rows, cursor)
        return Page(rows, (last.weight, last.image_id))

    @staticmethod
    async def _hits(
        conn: AsyncConnection,
        query_terms: Sequence[str],
        owner: str,
        min_score: float,
        after: Sequence[Any] | None,
        limit: int,
        taken: TakenFilter,
    ) -> list[SearchHit]:
        """Up to limit + 1 hits in one statement, sorted by the database."""
        params = _term_params(query_terms) | {"owner": owner, "min": min_score, "limit": limit + 1}
        key = _key(len(query_terms), taken)
        where = [_FIRST_TERM, *taken.conditions(params)]
        if after is not None:
            where.append(keyset.after(key, after, taken.order, params))
        joins = [_joins(len(query_terms)), *([_WITH_IMAGE] if taken.needs_image else [])]
        query = _HITS.format(
            weakest=_weakest(len(query_terms)),
            joins=sql.Composed(joins),
            where=sql.SQL(" AND ").join(where),
            order=keyset.order_by(key, taken.order),
        )
        cur = await conn.execute(query, params)
        return [SearchHit(*row) for row in await cur.fetchall()]

    @staticmethod
    async def _best_of_several(
        conn: AsyncConnection,
        query_terms: Sequence[str],
        owner: str,
        min_score: float,
        after: Sequence[Any] | None,
        limit: int,
    ) -> list[SearchHit]:
        """Up to limit + 1 hits of several terms, by their weakest match, without sorting every match.

        Reads the first term's matches in chunks, in its weight order, and stops once limit + 1 hits beat that
        weight: an image's weakest match is at most its first-term weight, so no later row can outrank them.
        """
        count = len(query_terms)
        query = _SEVERAL.format(weakest=_weakest(count), joins=_joins(count), first=_FIRST_TERM)
        params = _term_params(query_terms)
        params.update(owner=owner, min=min_score, chunk=_SEARCH_CHUNK, weight=3.0, id=2**63 - 1)
        found: list[SearchHit] = []
        while True:
            chunk = await (await conn.execute(query, params)).fetchall()
            found += [SearchHit(i, w) for i, _, w in chunk if after is None or (w, i) < tuple(after)]
            found.sort(key=lambda hit: (-hit.weight, -hit.image_id))
            if len(chunk) < _SEARCH_CHUNK or (len(found) > limit and found[limit].weight > chunk[-1][1]):
                return found[: limit + 1]
            params.update(weight=chunk[-1][1], id=chunk[-1][0])
