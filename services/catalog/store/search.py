"""Search: an owner's images matching every query term, best match first or by taken date."""

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, sql

from services.catalog.models import Page, SearchHit
from services.catalog.store import keyset
from services.catalog.store.base import StoreBase
from services.catalog.store.keyset import TakenFilter

# How many of the owner's images carry each term (any weight), kept by a trigger.
_TERM_COUNTS = sql.SQL(
    "SELECT term, images FROM catalog.term_counts WHERE owner_id = %(owner)s AND term = ANY(%(terms)s)"
)
_FIRST_TERM = sql.SQL("s.owner_id = %(owner)s AND s.term = %(t0)s AND s.weight >= %(min)s")
# Another term's rows of the same image, at `min` or more. Naming the owner lets PostgreSQL read them from the
# (owner, term, weight) index and hash-join the terms when many rows match, instead of probing image by image.
_OTHER_TERM = sql.SQL(
    " JOIN catalog.search_terms AS {o} ON {o}.image_id = s.image_id AND {o}.owner_id = %(owner)s"
    " AND {o}.term = {term} AND {o}.weight >= %(min)s"
)
_WITH_IMAGE = sql.SQL(" JOIN catalog.images AS i ON i.id = s.image_id")
_HITS = sql.SQL(
    "SELECT s.image_id, {weakest} FROM catalog.search_terms AS s{joins} WHERE {where} ORDER BY {order} LIMIT %(limit)s"
)
# The first statement of a several-term search reads this many of the first term's rows, in weight order, and
# probes each image's other terms by primary key: enough when the words go together ("retriever dog": every
# retriever is a dog), the common case. Joined instead, PostgreSQL judged how often two terms meet as if they were
# independent (120 images for "retriever dog" at 100k, against 1,299), and, that being under the chunk asked for,
# read and hashed all 28k "dog" rows: 6-10 ms, growing with the catalog. Words that seldom meet go on with the join.
_PROBED_ROWS = 200
_PROBED = sql.SQL(
    "SELECT s.image_id, s.weight, {matched}, {weakest} FROM (SELECT s.image_id, s.weight"
    " FROM catalog.search_terms AS s WHERE {first} ORDER BY s.weight DESC, s.image_id DESC LIMIT %(probed)s) AS s"
    "{probes} ORDER BY s.weight DESC, s.image_id DESC"
)
# Another term's weight for the same image, at `min` or more, NULL when it has none. LIMIT 1 keeps it a probe per
# row: PostgreSQL flattens a plain subquery into a join, and may hash that.
_PROBE = sql.SQL(
    " LEFT JOIN LATERAL (SELECT weight FROM catalog.search_terms WHERE image_id = s.image_id AND term = {term}"
    " AND weight >= %(min)s LIMIT 1) AS {o} ON true"
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
        async with self._single_statements() as conn:
            if len(query_terms) > 1 and not taken.order:
                query_terms = await self._rarest_first(conn, owner, query_terms)
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
    async def _rarest_first(conn: AsyncConnection, owner: str, query_terms: Sequence[str]) -> list[str]:
        """The terms, the one on the fewest of the owner's images first: the probe of _best_of_several reads the
        first term's best rows, and when the words seldom meet, a rare first term's few rows settle the page
        where a common one's would not."""
        cur = await conn.execute(_TERM_COUNTS, {"owner": owner, "terms": list(query_terms)})
        counts: dict[str, int] = dict(await cur.fetchall())
        return sorted(query_terms, key=lambda term: counts.get(term, 0))

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
        """Up to limit + 1 hits of several terms, by their weakest match.

        The first term's best rows come first, probing the others image by image (see _PROBED_ROWS): enough once
        limit + 1 hits beat the last row's weight, since an image's weakest match is at most its first-term weight.
        When they do not (words that often meet at low weights: "animal vehicle" has 10k images at 100k, mostly
        weak on one side), one statement joins every match and sorts them. Reading on 200 rows at a time had to
        walk most of the first term's rows (140 ms at 100k); the join reads both terms' index ranges once.
        """
        count = len(query_terms)
        params = _term_params(query_terms)
        params.update(owner=owner, min=min_score, probed=_PROBED_ROWS)
        probed = _PROBED.format(
            matched=_matched(count), weakest=_weakest(count), first=_FIRST_TERM, probes=_probes(count)
        )
        rows = await (await conn.execute(probed, params)).fetchall()
        found = _ranked([SearchHit(i, w) for i, _, matched, w in rows if matched], after)
        if len(rows) < _PROBED_ROWS or _complete(found, limit, rows[-1][1]):
            return found[: limit + 1]
        return await Search._hits(conn, query_terms, owner, min_score, after, limit, keyset.ANY_TIME)


def _matched(count: int) -> sql.Composable:
    """Whether the probes found every other term (o1... the probes' rows)."""
    return sql.SQL(" AND ").join(
        sql.SQL("{} IS NOT NULL").format(sql.Identifier(f"o{k}", "weight")) for k in range(1, count)
    )


def _probes(count: int) -> sql.Composable:
    return sql.Composed(
        [_PROBE.format(o=sql.Identifier(f"o{k}"), term=sql.Placeholder(f"t{k}")) for k in range(1, count)]
    )


def _ranked(hits: list[SearchHit], after: Sequence[Any] | None) -> list[SearchHit]:
    """The hits after the page cursor, best first."""
    kept = [hit for hit in hits if after is None or (hit.weight, hit.image_id) < tuple(after)]
    return sorted(kept, key=lambda hit: (-hit.weight, -hit.image_id))


def _complete(found: list[SearchHit], limit: int, first_weight: float) -> bool:
    """Whether limit + 1 hits beat every first-term row still unread (those weigh `first_weight` or less)."""
    return len(found) > limit and found[limit].weight > first_weight
