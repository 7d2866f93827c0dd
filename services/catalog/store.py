"""Every SQL statement of the catalog, behind one class over a psycopg connection pool."""

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from services.catalog import terms
from services.catalog.models import Classification, ImageRow, ModelId, NewImage, Outcome, Page, SearchHit

log = logging.getLogger(__name__)


def _rendered(query: sql.Composable) -> sql.SQL:
    """Renders a statement once at import, instead of composing its identifiers again on every call."""
    return sql.SQL(query.as_string())


_COLUMNS = _rendered(sql.SQL(", ").join(sql.Identifier("i", name) for name in ImageRow.__dataclass_fields__))
_LOCK_NAMESPACE = "catalog-blob:"
_WRITE_RETRIES = 3
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
_MAX_BACKOFF_SECONDS = 3600.0

RemoveBytes = Callable[[str], Awaitable[None]]

_NEW_IMAGE = _rendered(sql.SQL(", ").join(map(sql.Identifier, NewImage.__dataclass_fields__)))
_NEW_VALUES = _rendered(sql.SQL(", ").join(map(sql.Placeholder, NewImage.__dataclass_fields__)))
_CONTENT_XACT_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%(lock_key)s, 0))"
# Takes the content lock, then inserts, in one statement: the lock is held from before the row exists until it
# commits, as the content lock requires. A conflict (the caller's identical upload) is settled by _INSERT and _TOUCH.
_RESERVE = _rendered(
    sql.SQL(
        "INSERT INTO catalog.images AS i ({names}, status) SELECT {values}, 'uploading'"
        " FROM (SELECT pg_advisory_xact_lock(hashtextextended(%(lock_key)s, 0))) AS locked"
        " ON CONFLICT (owner_id, sha256) DO NOTHING RETURNING {columns}"
    ).format(names=_NEW_IMAGE, values=_NEW_VALUES, columns=_COLUMNS)
)
_INSERT = _rendered(
    sql.SQL(
        "INSERT INTO catalog.images AS i ({names}, status) VALUES ({values}, 'uploading')"
        " ON CONFLICT (owner_id, sha256) DO NOTHING RETURNING {columns}"
    ).format(names=_NEW_IMAGE, values=_NEW_VALUES, columns=_COLUMNS)
)
_TOUCH = _rendered(
    sql.SQL(
        "UPDATE catalog.images AS i SET updated_at = now() WHERE owner_id = %(owner_id)s AND sha256 = %(sha256)s"
        " RETURNING {columns}"
    ).format(columns=_COLUMNS)
)

_CLASSIFIED = sql.SQL(
    "status = 'classified', status_reason = '', category = %(category)s, category_score = %(category_score)s,"
    " labels = %(labels)s, model_tags = %(model_tags)s, model_name = %(model_name)s,"
    " model_version = %(model_version)s, reclassify_tried = '', attempts = 0, next_attempt_at = now(),"
    " classified_at = now(), updated_at = now()"
)
_APPLY = _rendered(
    sql.SQL(
        "UPDATE catalog.images AS i SET {classified} WHERE id = %(id)s AND status = ANY(%(statuses)s)"
        " AND deleted_at IS NULL"
        " RETURNING {columns}"
    ).format(classified=_CLASSIFIED, columns=_COLUMNS)
)
# Different tables, so one statement may delete from (or insert into) both.
_DELETE_INDEX = (
    "WITH gone AS (DELETE FROM catalog.tags WHERE image_id = %(id)s)"
    " DELETE FROM catalog.search_terms WHERE image_id = %(id)s"
)
_TAG_ROWS = "unnest(%(tags)s::text[], %(scores)s::real[], %(manual)s::boolean[])"
_TERM_ROWS = "unnest(%(terms)s::text[], %(weights)s::real[])"
_INSERT_INDEX = (
    "WITH tagged AS (INSERT INTO catalog.tags (image_id, owner_id, tag, score, manual)"
    f" SELECT %(id)s, %(owner)s, * FROM {_TAG_ROWS})"
    " INSERT INTO catalog.search_terms (image_id, owner_id, term, weight)"
    f" SELECT %(id)s, %(owner)s, * FROM {_TERM_ROWS}"
)
_FINALIZE_CLASSIFIED = _rendered(
    sql.SQL(
        "WITH image AS (UPDATE catalog.images AS i SET {classified} WHERE id = %(id)s AND status = 'uploading'"
        " RETURNING {columns}),"
        " tagged AS (INSERT INTO catalog.tags (image_id, owner_id, tag, score, manual)"
        " SELECT image.id, image.owner_id, t.* FROM image, {tag_rows} AS t),"
        " indexed AS (INSERT INTO catalog.search_terms (image_id, owner_id, term, weight)"
        " SELECT image.id, image.owner_id, s.* FROM image, {term_rows} AS s)"
        " SELECT * FROM image"
    ).format(classified=_CLASSIFIED, columns=_COLUMNS, tag_rows=sql.SQL(_TAG_ROWS), term_rows=sql.SQL(_TERM_ROWS))
)
_FINALIZE_UNCLASSIFIED = _rendered(
    sql.SQL(
        "UPDATE catalog.images AS i SET status = %(status)s, status_reason = %(reason)s, attempts = %(attempts)s,"
        " updated_at = now() WHERE id = %(id)s AND status = 'uploading' RETURNING {columns}"
    ).format(columns=_COLUMNS)
)

_TRASH = _rendered(
    sql.SQL(
        "UPDATE catalog.images AS i SET deleted_at = now(), updated_at = now()"
        " WHERE uid = %s AND owner_id = %s AND status <> 'uploading' AND deleted_at IS NULL RETURNING {columns}"
    ).format(columns=_COLUMNS)
)
_UNTRASH = _rendered(
    sql.SQL(
        "UPDATE catalog.images AS i SET deleted_at = NULL, updated_at = now() WHERE id = %s RETURNING {columns}"
    ).format(columns=_COLUMNS)
)
# Keyset on (deleted_at, id); the cursor's microseconds are added to the epoch exactly (below 2^53).
_TRASH_PAGE = _rendered(
    sql.SQL(
        "SELECT {columns} FROM catalog.images AS i WHERE owner_id = %(owner)s AND deleted_at IS NOT NULL"
        " AND (%(us)s::bigint IS NULL OR (deleted_at, id)"
        " < (timestamptz 'epoch' + %(us)s::bigint * interval '1 microsecond', %(id)s::bigint))"
        " ORDER BY deleted_at DESC, id DESC LIMIT %(limit)s"
    ).format(columns=_COLUMNS)
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (a float timestamp would round)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


# Distinct terms under the prefix, then each term's best rows; NOT EXISTS keeps a row only when it is its image's
# best match under the prefix, so an image appears once, at its best weight, on every page.
_SEARCH = """
WITH RECURSIVE found(term) AS (
    (SELECT term FROM catalog.search_terms
     WHERE owner_id = %(owner)s AND term >= %(low)s AND term < %(high)s ORDER BY term LIMIT 1)
    UNION ALL
    SELECT (SELECT s.term FROM catalog.search_terms AS s
            WHERE s.owner_id = %(owner)s AND s.term > f.term AND s.term < %(high)s ORDER BY s.term LIMIT 1)
    FROM found AS f WHERE f.term IS NOT NULL
)
SELECT hit.image_id, hit.weight FROM found CROSS JOIN LATERAL (
    SELECT s.image_id, s.weight FROM catalog.search_terms AS s
    WHERE s.owner_id = %(owner)s AND s.term = found.term AND s.weight >= %(min)s
      AND (s.weight, s.image_id) < (%(weight)s::real, %(id)s::bigint)
      AND NOT EXISTS (
          SELECT 1 FROM catalog.search_terms AS b
          WHERE b.image_id = s.image_id AND b.term >= %(low)s AND b.term < %(high)s
            AND (b.weight, b.term) > (s.weight, s.term))
    ORDER BY s.weight DESC, s.image_id DESC LIMIT %(limit)s
) AS hit
ORDER BY hit.weight DESC, hit.image_id DESC LIMIT %(limit)s
"""


async def _retrying(action: Callable[[], Awaitable]):
    """Runs a write transaction again when PostgreSQL chose it as a deadlock victim."""
    for attempt in range(_WRITE_RETRIES):
        try:
            return await action()
        except _RETRYABLE:
            if attempt == _WRITE_RETRIES - 1:
                raise


async def _unlock(conn: AsyncConnection, statement: str, key: str) -> None:
    """Releases a session lock even after a failed statement; a lost connection has released it already."""
    try:
        await conn.rollback()
        await conn.execute(statement, (key,))
        await conn.commit()
    except psycopg.OperationalError:
        log.warning("connection lost while holding a lock; PostgreSQL released it with the session")


def _labels_json(classification: Classification) -> Jsonb:
    ranked = sorted(classification.labels, key=lambda label: -label.score)
    return Jsonb(
        [
            {"label": label.label, "class_id": label.class_id, "score": label.score, "rank": rank}
            for rank, label in enumerate(ranked, start=1)
        ]
    )


def _classified(result: Classification, model_tags: list[tuple[str, float]]) -> dict:
    """Parameters of _CLASSIFIED: the columns a classification sets."""
    return {
        "category": result.category,
        "category_score": max((label.score for label in result.labels), default=0.0),
        "labels": _labels_json(result),
        "model_tags": Jsonb([[tag, score] for tag, score in model_tags]),
        "model_name": result.model_name,
        "model_version": result.model_version,
    }


def _index(labels: Sequence[terms.LabelScore], tags: Sequence[terms.TagRow]) -> dict[str, list]:
    """An image's tag and search-term rows as parallel arrays for unnest(), sorted so writers lock rows in one order."""
    tags = sorted(tags, key=lambda tag: tag.tag)
    found = sorted(terms.search_terms(labels, tags).items())
    return {
        "tags": [tag.tag for tag in tags],
        "scores": [tag.score for tag in tags],
        "manual": [tag.manual for tag in tags],
        "terms": [term for term, _ in found],
        "weights": [weight for _, weight in found],
    }


class CatalogStore:
    """Reads and writes images and their tags; owns the per-content lock that keeps shared bytes safe."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @property
    def pool(self) -> AsyncConnectionPool:
        return self._pool

    @asynccontextmanager
    async def _single_statements(self):
        """A pooled connection in autocommit mode: each statement is its own transaction, sent without the
        BEGIN and COMMIT round trips."""
        async with self._pool.connection() as conn:
            await conn.set_autocommit(True)
            try:
                yield conn
            finally:
                # A broken connection refuses the change; the pool discards it anyway.
                with suppress(psycopg.Error):
                    await conn.set_autocommit(False)

    async def _fetch_one(self, conn: AsyncConnection, query: sql.Composable, params) -> ImageRow | None:
        cur = conn.cursor(row_factory=class_row(ImageRow))
        await cur.execute(query, params)
        return await cur.fetchone()

    async def _fetch_all(self, conn: AsyncConnection, query: sql.Composable, params) -> list[ImageRow]:
        cur = conn.cursor(row_factory=class_row(ImageRow))
        await cur.execute(query, params)
        return await cur.fetchall()

    # --- content locking -------------------------------------------------------------------------

    @asynccontextmanager
    async def content_lock(self, sha256: str):
        """Holds a session lock on one content hash: reserving a row and removing bytes never interleave."""
        async with self._pool.connection() as conn:
            await conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (_LOCK_NAMESPACE + sha256,))
            await conn.commit()
            try:
                yield conn
            finally:
                await _unlock(conn, "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", _LOCK_NAMESPACE + sha256)

    @staticmethod
    async def _referenced(conn: AsyncConnection, sha256: str) -> bool:
        cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM catalog.images WHERE sha256 = %s)", (sha256,))
        row = await cur.fetchone()
        await conn.commit()
        return bool(row[0])

    async def release_content(self, sha256: str, remove_bytes: RemoveBytes) -> bool:
        """Removes the bytes of `sha256` when no row refers to them any more; True when removed."""
        async with self.content_lock(sha256) as conn:
            if await self._referenced(conn, sha256):
                return False
            await remove_bytes(sha256)
            return True

    async def referenced_hashes(self, hashes: Sequence[str]) -> set[str]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT DISTINCT sha256 FROM catalog.images WHERE sha256 = ANY(%s)", (list(hashes),)
            )
            return {row[0] for row in await cur.fetchall()}

    # --- uploads ---------------------------------------------------------------------------------

    async def reserve(self, new: NewImage) -> tuple[ImageRow, bool]:
        """Inserts an invisible `uploading` row, or returns the caller's existing row for the same bytes.

        Returns (row, created). An existing row is touched so the sweeper leaves it alone a while longer.
        """
        values = {name: getattr(new, name) for name in NewImage.__dataclass_fields__}
        lock = {"lock_key": _LOCK_NAMESPACE + new.sha256}
        async with self._single_statements() as conn:
            row = await self._fetch_one(conn, _RESERVE, values | lock)
        if row is not None:
            return row, True
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(_CONTENT_XACT_LOCK, lock)
            row = await self._fetch_one(conn, _INSERT, values)
            if row is not None:
                return row, True
            row = await self._fetch_one(conn, _TOUCH, values)
            if row.deleted_at is not None:
                # Uploading a trashed photo again brings it back.
                row = await self._untrash(conn, row.id)
            return row, False

    async def finalize(self, image_id: int, outcome: Outcome) -> ImageRow | None:
        """Makes an `uploading` row visible with its outcome; None when another upload finished it first.

        One statement: an `uploading` row has no tag or search rows yet, so they are only inserted.
        """
        if outcome.classification is None:
            query = _FINALIZE_UNCLASSIFIED
            params = {"status": outcome.status, "reason": outcome.reason, "attempts": int(outcome.status == "failed")}
        else:
            model_tags = terms.score_model_tags(outcome.classification.labels, outcome.classification.tags)
            tags = terms.visible_tags(model_tags, (), ())
            query = _FINALIZE_CLASSIFIED
            params = _classified(outcome.classification, model_tags) | _index(outcome.classification.labels, tags)

        async def attempt() -> ImageRow | None:
            async with self._single_statements() as conn:
                return await self._fetch_one(conn, query, params | {"id": image_id})

        return await _retrying(attempt)

    async def abandon(self, image_id: int, remove_bytes: RemoveBytes) -> None:
        """Undoes a reservation whose upload did not complete, bytes included when nothing else uses them."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM catalog.images WHERE id = %s AND status = 'uploading' RETURNING sha256", (image_id,)
            )
            row = await cur.fetchone()
        if row is not None:
            await self.release_content(row[0], remove_bytes)

    # --- classification --------------------------------------------------------------------------

    async def _apply(
        self, conn: AsyncConnection, image_id: int, result: Classification, statuses: Sequence[str]
    ) -> ImageRow | None:
        """Replaces the model's labels and tags, keeping manual and hidden tags, and rebuilds the search rows."""
        model_tags = terms.score_model_tags(result.labels, result.tags)
        params = _classified(result, model_tags) | {"id": image_id, "statuses": list(statuses)}
        row = await self._fetch_one(conn, _APPLY, params)
        if row is not None:
            await self._rewrite_index(conn, row)
        return row

    @staticmethod
    async def _rewrite_index(conn: AsyncConnection, row: ImageRow) -> None:
        labels = [terms.LabelScore(item["label"], item["class_id"], item["score"]) for item in row.labels]
        await conn.execute(_DELETE_INDEX, {"id": row.id})
        await conn.execute(_INSERT_INDEX, _index(labels, row.tags) | {"id": row.id, "owner": row.owner_id})

    async def save_classification(self, image_id: int, result: Classification, *, statuses: Sequence[str]):
        async def attempt() -> ImageRow | None:
            async with self._pool.connection() as conn, conn.transaction():
                return await self._apply(conn, image_id, result, statuses)

        return await _retrying(attempt)

    async def claim_pending(self, *, limit: int, lease_seconds: float) -> list[ImageRow]:
        """Reserves due pending images for this worker; other replicas skip them (SKIP LOCKED) until the lease ends."""
        query = sql.SQL(
            "UPDATE catalog.images AS i SET next_attempt_at = now() + make_interval(secs => %(lease)s)"
            " WHERE id IN (SELECT id FROM catalog.images WHERE status = 'pending' AND next_attempt_at <= now()"
            " AND deleted_at IS NULL"
            " ORDER BY next_attempt_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING {columns}"
        ).format(columns=_COLUMNS)
        async with self._pool.connection() as conn:
            return await self._fetch_all(conn, query, {"lease": lease_seconds, "limit": limit})

    async def release_claim(self, image_id: int) -> None:
        async with self._pool.connection() as conn:
            await conn.execute("UPDATE catalog.images SET next_attempt_at = now() WHERE id = %s", (image_id,))

    async def record_failure(
        self, image_id: int, *, reason: str, permanent: bool, max_attempts: int, backoff_seconds: float
    ) -> str | None:
        """Counts a failed classification; the image becomes `failed` when permanent or out of attempts."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE catalog.images SET attempts = attempts + 1,"
                " status = CASE WHEN %(permanent)s OR attempts + 1 >= %(max)s THEN 'failed' ELSE status END,"
                " status_reason = %(reason)s, updated_at = now(),"
                " next_attempt_at = now() + make_interval(secs => least(%(cap)s, %(backoff)s * power(2, attempts)))"
                " WHERE id = %(id)s AND status = 'pending' RETURNING status",
                {
                    "permanent": permanent,
                    "max": max_attempts,
                    "reason": reason[:500],
                    "cap": _MAX_BACKOFF_SECONDS,
                    "backoff": backoff_seconds,
                    "id": image_id,
                },
            )
            row = await cur.fetchone()
        return None if row is None else row[0]

    # --- reclassification ------------------------------------------------------------------------

    _OUTDATED = (
        "status IN ('classified', 'failed') AND (model_name <> %(name)s OR model_version <> %(version)s)"
        " AND reclassify_tried <> %(key)s AND deleted_at IS NULL"
    )

    async def claim_outdated(
        self, model: ModelId, *, limit: int, lease_seconds: float, after_id: int = 0
    ) -> list[ImageRow]:
        """Reserves outdated images with ids above `after_id`, lowest first.

        A run passes on the last id it claimed, so each batch reads on from there through the primary key
        instead of scanning past every image already relabelled.
        """
        query = sql.SQL(
            "UPDATE catalog.images AS i SET next_attempt_at = now() + make_interval(secs => %(lease)s)"
            " WHERE id IN (SELECT id FROM catalog.images WHERE id > %(after)s AND {outdated}"
            " AND next_attempt_at <= now() ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING {columns}"
        ).format(outdated=sql.SQL(self._OUTDATED), columns=_COLUMNS)
        params = {"name": model.name, "version": model.version, "key": model.key, "lease": lease_seconds}
        async with self._pool.connection() as conn:
            return await self._fetch_all(conn, query, {**params, "limit": limit, "after": after_id})

    async def count_outdated(self, model: ModelId) -> int:
        query = sql.SQL("SELECT count(*) FROM catalog.images WHERE {outdated}").format(outdated=sql.SQL(self._OUTDATED))
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, {"name": model.name, "version": model.version, "key": model.key})
            return (await cur.fetchone())[0]

    async def mark_reclassify_tried(self, image_id: int, model: ModelId, *, release_only: bool = False) -> None:
        """Ends a reclassification claim; unless `release_only`, this model is not tried on the image again."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE catalog.images SET next_attempt_at = now(),"
                " reclassify_tried = CASE WHEN %s THEN reclassify_tried ELSE %s END WHERE id = %s",
                (release_only, model.key, image_id),
            )

    # --- reads -----------------------------------------------------------------------------------

    async def get(self, uid: str, *, owner: str | None, trashed: bool = False) -> ImageRow | None:
        """A visible image by uid (or, with `trashed`, one in the trash too); `owner` None means any owner."""
        query = sql.SQL(
            "SELECT {columns} FROM catalog.images AS i WHERE uid = %s AND status <> 'uploading'"
            " AND (%s OR deleted_at IS NULL) AND (%s::text IS NULL OR owner_id = %s)"
        ).format(columns=_COLUMNS)
        async with self._pool.connection() as conn:
            return await self._fetch_one(conn, query, (uid, trashed, owner, owner))

    async def get_by_id(self, image_id: int) -> ImageRow | None:
        query = sql.SQL("SELECT {columns} FROM catalog.images AS i WHERE id = %s").format(columns=_COLUMNS)
        async with self._pool.connection() as conn:
            return await self._fetch_one(conn, query, (image_id,))

    async def list_images(
        self, *, owner: str | None, category: str, tag: str, min_score: float, before_id: int | None, limit: int
    ) -> Page:
        """Newest first; keyset on the id, so concurrent uploads never shift a page."""
        where, params = [sql.SQL("i.status <> 'uploading' AND i.deleted_at IS NULL")], {"limit": limit + 1}
        source, order = sql.SQL("catalog.images AS i"), sql.SQL("i.id")
        if tag:
            source = sql.SQL("catalog.tags AS t JOIN catalog.images AS i ON i.id = t.image_id")
            order = sql.SQL("t.image_id")
            where.append(sql.SQL("t.tag = %(tag)s AND t.score >= %(min_score)s"))
            params.update(tag=tag, min_score=min_score)
        elif min_score > 0:
            where.append(sql.SQL("i.category_score >= %(min_score)s"))
            params.update(min_score=min_score)
        if owner is not None:
            where.append(sql.SQL("{} = %(owner)s").format(sql.SQL("t.owner_id" if tag else "i.owner_id")))
            params.update(owner=owner)
        if category:
            where.append(sql.SQL("i.category = %(category)s"))
            params.update(category=category)
        if before_id is not None:
            where.append(sql.SQL("{} < %(before)s").format(order))
            params.update(before=before_id)
        query = sql.SQL("SELECT {columns} FROM {source} WHERE {where} ORDER BY {order} DESC LIMIT %(limit)s").format(
            columns=_COLUMNS, source=source, where=sql.SQL(" AND ").join(where), order=order
        )
        async with self._pool.connection() as conn:
            rows = await self._fetch_all(conn, query, params)
        if len(rows) <= limit:
            return Page(rows)
        return Page(rows[:limit], (rows[limit - 1].id,))

    async def search(
        self, *, owner: str, prefix: str, min_score: float, after: tuple | None, limit: int
    ) -> tuple[list[ImageRow], list[SearchHit], bool]:
        """Images with a label or tag word starting with `prefix`, by best weight (manual tags first), then newest.

        Walks the distinct terms under the prefix (a loose index scan) and reads each term's rows in weight order,
        keeping only each image's best row, so a page reads about `limit` rows per term however many images match.
        """
        low, high = terms.prefix_range(prefix)
        weight, image_id = after or (3.0, 2**63 - 1)
        params = {"owner": owner, "low": low, "high": high, "min": min_score, "weight": weight, "id": image_id}
        async with self._pool.connection() as conn:
            cur = await conn.execute(_SEARCH, {**params, "limit": limit + 1})
            hits = [SearchHit(*row) for row in await cur.fetchall()]
            rows = await self._rows_by_id(conn, [hit.image_id for hit in hits[:limit]])
        return rows, hits[:limit], len(hits) > limit

    async def _rows_by_id(self, conn: AsyncConnection, ids: list[int]) -> list[ImageRow]:
        query = sql.SQL("SELECT {columns} FROM catalog.images AS i WHERE id = ANY(%s)").format(columns=_COLUMNS)
        by_id = {row.id: row for row in await self._fetch_all(conn, query, (ids,))}
        return [by_id[image_id] for image_id in ids if image_id in by_id]

    async def category_counts(self, owner: str) -> list[tuple[str, int]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT category, images FROM catalog.category_counts WHERE owner_id = %s AND images > 0"
                " ORDER BY images DESC, category",
                (owner,),
            )
            return [tuple(row) for row in await cur.fetchall()]

    async def tag_counts(self, owner: str, *, min_score: float) -> list[tuple[str, int]]:
        """Precomputed counts without a score floor; with one, counted from the tag index."""
        if min_score <= 0:
            query = (
                "SELECT tag, images FROM catalog.tag_counts WHERE owner_id = %s AND images > 0"
                " ORDER BY images DESC, tag"
            )
            params: tuple = (owner,)
        else:
            query = (
                "SELECT tag, count(*) FROM catalog.tags WHERE owner_id = %s AND score >= %s"
                " GROUP BY tag ORDER BY count(*) DESC, tag"
            )
            params = (owner, min_score)
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return [tuple(row) for row in await cur.fetchall()]

    # --- changes by the owner --------------------------------------------------------------------

    async def update_tags(
        self, uid: str, *, owner: str, add: Sequence[str], remove: Sequence[str], replace: bool
    ) -> ImageRow | None:
        select = sql.SQL(
            "SELECT {columns} FROM catalog.images AS i WHERE uid = %s AND owner_id = %s AND status <> 'uploading'"
            " AND deleted_at IS NULL FOR UPDATE"
        ).format(columns=_COLUMNS)
        update = sql.SQL(
            "UPDATE catalog.images AS i SET manual_tags = %s, hidden_tags = %s, updated_at = now() WHERE id = %s"
            " RETURNING {columns}"
        ).format(columns=_COLUMNS)

        async def attempt() -> ImageRow | None:
            async with self._pool.connection() as conn, conn.transaction():
                row = await self._fetch_one(conn, select, (uid, owner))
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
                row = await self._fetch_one(conn, update, (manual, hidden, row.id))
                await self._rewrite_index(conn, row)
                return row

        return await _retrying(attempt)

    async def delete_image(self, uid: str, *, owner: str, remove_bytes: RemoveBytes) -> bool:
        """Deletes the row, then the bytes when no other row (any owner) still refers to them."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT sha256 FROM catalog.images WHERE uid = %s AND owner_id = %s AND status <> 'uploading'",
                (uid, owner),
            )
            found = await cur.fetchone()
        if found is None:
            return False
        async with self.content_lock(found[0]) as conn:
            cur = await conn.execute(
                "DELETE FROM catalog.images WHERE uid = %s AND owner_id = %s AND status <> 'uploading'", (uid, owner)
            )
            await conn.commit()
            if cur.rowcount and not await self._referenced(conn, found[0]):
                await remove_bytes(found[0])
            return cur.rowcount > 0

    # --- trash -----------------------------------------------------------------------------------

    async def trash(self, uid: str, *, owner: str) -> ImageRow | None:
        """Hides a visible image in the trash; its tag and search rows go (counts follow), row and bytes stay."""

        async def attempt() -> ImageRow | None:
            async with self._pool.connection() as conn, conn.transaction():
                row = await self._fetch_one(conn, _TRASH, (uid, owner))
                if row is not None:
                    await conn.execute(_DELETE_INDEX, {"id": row.id})
                return row

        return await _retrying(attempt)

    async def restore(self, uid: str, *, owner: str) -> ImageRow | None:
        """Brings a trashed image back as it was, tags and search rows included; None when not in the trash."""

        async def attempt() -> ImageRow | None:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT id FROM catalog.images WHERE uid = %s AND owner_id = %s AND deleted_at IS NOT NULL"
                    " FOR UPDATE",
                    (uid, owner),
                )
                found = await cur.fetchone()
                return None if found is None else await self._untrash(conn, found[0])

        return await _retrying(attempt)

    async def _untrash(self, conn: AsyncConnection, image_id: int) -> ImageRow:
        row = await self._fetch_one(conn, _UNTRASH, (image_id,))
        await self._rewrite_index(conn, row)
        return row

    async def list_trash(self, *, owner: str, before: tuple[int, int] | None, limit: int) -> Page:
        """The owner's trashed images, most recently deleted first; the cursor is (deleted_at in µs, id)."""
        micros, image_id = before or (None, None)
        async with self._pool.connection() as conn:
            rows = await self._fetch_all(
                conn, _TRASH_PAGE, {"owner": owner, "us": micros, "id": image_id, "limit": limit + 1}
            )
        if len(rows) <= limit:
            return Page(rows)
        last = rows[limit - 1]
        return Page(rows[:limit], (epoch_micros(last.deleted_at), last.id))

    async def expired_trash(self, *, older_than_seconds: float, limit: int = 1000) -> list[tuple[int, str]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, sha256 FROM catalog.images WHERE deleted_at < now() - make_interval(secs => %s)"
                " ORDER BY deleted_at LIMIT %s",
                (older_than_seconds, limit),
            )
            return [tuple(row) for row in await cur.fetchall()]

    async def purge_trashed(
        self, image_id: int, sha256: str, *, older_than_seconds: float, remove_bytes: RemoveBytes
    ) -> bool:
        """Deletes a trashed image for good (rechecked under the content lock: it may have been restored)."""
        async with self.content_lock(sha256) as conn:
            cur = await conn.execute(
                "DELETE FROM catalog.images WHERE id = %s AND deleted_at < now() - make_interval(secs => %s)",
                (image_id, older_than_seconds),
            )
            await conn.commit()
            if cur.rowcount and not await self._referenced(conn, sha256):
                await remove_bytes(sha256)
            return cur.rowcount > 0

    # --- sweeping --------------------------------------------------------------------------------

    async def stale_uploads(self, *, older_than_seconds: float, limit: int = 1000) -> list[tuple[int, str]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, sha256 FROM catalog.images WHERE status = 'uploading'"
                " AND updated_at < now() - make_interval(secs => %s) ORDER BY updated_at LIMIT %s",
                (older_than_seconds, limit),
            )
            return [tuple(row) for row in await cur.fetchall()]

    async def remove_stale_upload(
        self, image_id: int, sha256: str, *, older_than_seconds: float, remove_bytes: RemoveBytes
    ) -> bool:
        async with self.content_lock(sha256) as conn:
            cur = await conn.execute(
                "DELETE FROM catalog.images WHERE id = %s AND status = 'uploading'"
                " AND updated_at < now() - make_interval(secs => %s)",
                (image_id, older_than_seconds),
            )
            await conn.commit()
            if cur.rowcount and not await self._referenced(conn, sha256):
                await remove_bytes(sha256)
            return cur.rowcount > 0

    @asynccontextmanager
    async def exclusive(self, name: str):
        """Yields True in exactly one process at a time (a try-lock), False elsewhere."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (name,))
            acquired = (await cur.fetchone())[0]
            await conn.commit()
            try:
                yield acquired
            finally:
                if acquired:
                    await _unlock(conn, "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", name)

    # --- digests (bulk import) -------------------------------------------------------------------

    async def known_digests(self, owner: str, hashes: Sequence[str]) -> list[tuple[str, str, str]]:
        """(sha256, uid, category) of the owner's visible images whose bytes hash to one of `hashes`. Trashed images
        are not listed, so a bulk import sends them again, which takes them out of the trash."""
        async with self._single_statements() as conn:
            cur = await conn.execute(
                "SELECT sha256, uid, category FROM catalog.images"
                " WHERE owner_id = %s AND sha256 = ANY(%s) AND status <> 'uploading' AND deleted_at IS NULL",
                (owner, list(hashes)),
            )
            return [(row[0], row[1], row[2]) for row in await cur.fetchall()]
