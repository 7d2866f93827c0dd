"""Every SQL statement of the catalog, behind one class over a psycopg connection pool."""

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from services.catalog import similarity, terms
from services.catalog.models import (
    Classification,
    ImageRow,
    ModelId,
    NewImage,
    Outcome,
    Page,
    Quota,
    QuotaExceeded,
    SearchHit,
    Usage,
)
from services.common.vocabulary import Vocabulary
from services.common.vocabulary import load as load_vocabulary

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
# Takes the content lock, then locks the owner's usage row, then inserts if the quota allows, in one statement:
# the content lock is held from before the row exists until it commits, as the content lock requires, and the usage
# row stays locked until the insert's trigger has counted the new row, so concurrent uploads cannot overshoot.
# Nothing returned means a conflict (the caller's identical upload) or no room: settled by reserve()'s second path.
_RESERVE = _rendered(
    sql.SQL(
        "WITH locked AS (SELECT pg_advisory_xact_lock(hashtextextended(%(lock_key)s, 0))),"
        " used AS (INSERT INTO catalog.storage_usage AS u (owner_id) SELECT %(owner_id)s FROM locked"
        " ON CONFLICT (owner_id) DO UPDATE SET owner_id = excluded.owner_id RETURNING u.bytes, u.images)"
        " INSERT INTO catalog.images AS i ({names}, status) SELECT {values}, 'uploading' FROM used"
        " WHERE used.bytes + %(size_bytes)s <= %(quota_bytes)s AND used.images + 1 <= %(quota_images)s"
        " ON CONFLICT (owner_id, sha256) DO NOTHING RETURNING {columns}"
    ).format(names=_NEW_IMAGE, values=_NEW_VALUES, columns=_COLUMNS)
)
_LOCK_USAGE = (
    "INSERT INTO catalog.storage_usage AS u (owner_id) VALUES (%(owner_id)s)"
    " ON CONFLICT (owner_id) DO UPDATE SET owner_id = excluded.owner_id RETURNING u.bytes, u.images"
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
    " labels = %(labels)s, model_name = %(model_name)s,"
    # Faces not analysed this time: the face tags found before stay with the faces they came from.
    " model_tags = CASE WHEN %(faces_analysed)s THEN %(model_tags)s ELSE %(model_tags)s || COALESCE((SELECT"
    " jsonb_agg(kept) FROM jsonb_array_elements(i.model_tags) AS kept WHERE kept->>0 = ANY(%(face_tags)s::text[])"
    " AND NOT kept->>0 = ANY(%(new_tags)s::text[])), '[]'::jsonb) END,"
    " model_version = %(model_version)s, vocabulary_version = %(vocabulary_version)s,"
    " reclassify_tried = '', attempts = 0, next_attempt_at = now(),"
    " classified_at = now(), updated_at = now(),"
    # A classification without faces analysed (detector unavailable) keeps the faces found before.
    " faces = CASE WHEN %(faces_analysed)s THEN %(faces)s ELSE i.faces END,"
    " face_model_version = CASE WHEN %(faces_analysed)s THEN %(face_model_version)s ELSE i.face_model_version END"
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


# When a photo was taken: its EXIF date, else its upload time (so every image sorts somewhere).
_TAKEN = "coalesce(i.taken_at, i.created_at)"


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


def _model_tags(result: Classification, vocabulary: Vocabulary) -> list[tuple[str, float]]:
    """The vocabulary's tags of the labels, plus the face tags inference gave, scored as the best face."""
    best_face = max((face["score"] for face in result.faces or ()), default=None)
    return terms.score_model_tags(result.labels, vocabulary, face_tags=result.tags, face_score=best_face)


def _classified(result: Classification, model_tags: list[tuple[str, float]], vocabulary: Vocabulary) -> dict:
    """Parameters of _CLASSIFIED: the columns a classification sets."""
    return {
        "vocabulary_version": vocabulary.version,
        "category": result.category,
        "category_score": max((label.score for label in result.labels), default=0.0),
        "labels": _labels_json(result),
        "model_tags": Jsonb([[tag, score] for tag, score in model_tags]),
        "model_name": result.model_name,
        "model_version": result.model_version,
        "faces_analysed": result.faces is not None,
        "face_tags": sorted(terms.FACE_TAGS),
        "new_tags": [tag for tag, _ in model_tags],
        "faces": Jsonb(result.faces) if result.faces is not None else None,
        "face_model_version": result.face_model_version,
    }


def _index(tags: Sequence[terms.TagRow], vocabulary: Vocabulary) -> dict[str, list]:
    """An image's tag and search-term rows as parallel arrays for unnest(), sorted so writers lock rows in one order."""
    tags = sorted(tags, key=lambda tag: tag.tag)
    found = sorted(terms.search_terms(tags, vocabulary).items())
    return {
        "tags": [tag.tag for tag in tags],
        "scores": [tag.score for tag in tags],
        "manual": [tag.manual for tag in tags],
        "terms": [term for term, _ in found],
        "weights": [weight for _, weight in found],
    }


@dataclass(frozen=True)
class TakenFilter:
    """Taken-date bounds ([after, before)) and order ("" keeps the default order)."""

    after: datetime | None = None
    before: datetime | None = None
    # "newest" or "oldest" first by taken date; "" for the default order.
    order: str = ""

    def conditions(self, params: dict) -> list[sql.Composable]:
        found = []
        if self.after is not None:
            found.append(sql.SQL(f"{_TAKEN} >= %(taken_after)s"))
            params["taken_after"] = self.after
        if self.before is not None:
            found.append(sql.SQL(f"{_TAKEN} < %(taken_before)s"))
            params["taken_before"] = self.before
        return found

    @property
    def needs_image(self) -> bool:
        return bool(self.after or self.before or self.order)


def _taken_key(row: ImageRow) -> str:
    return (row.taken_at or row.created_at).isoformat()


def _direction(order: str) -> tuple[str, str]:
    """(SQL direction, keyset comparison) of an order: descending unless oldest first."""
    return ("ASC", ">") if order == "oldest" else ("DESC", "<")


def _order(key: Sequence[sql.Composable], order: str) -> sql.Composable:
    direction = sql.SQL(_direction(order)[0])
    return sql.SQL(", ").join(sql.SQL("{} {}").format(part, direction) for part in key)


def _after(key: Sequence[sql.Composable], cursor: tuple, order: str, params: dict) -> sql.Composable:
    """The keyset condition: rows strictly after `cursor` in this order."""
    casts = ["real", "bigint"] if not order and len(key) == 2 else ["timestamptz", "bigint"]
    casts = casts[-len(key) :]
    values = []
    for index, (value, cast) in enumerate(zip(cursor, casts, strict=True)):
        params[f"c{index}"] = value
        values.append(sql.SQL(f"%(c{index})s::{cast}"))
    return sql.SQL("({}) {} ({})").format(
        sql.SQL(", ").join(key), sql.SQL(_direction(order)[1]), sql.SQL(", ").join(values)
    )


def _search_weight(count: int) -> str:
    """The weakest match of an image over `count` terms (s is the first term's row, o1... the others')."""
    if count == 1:
        return "s.weight"
    return "least(s.weight, " + ", ".join(f"o{k}.weight" for k in range(1, count)) + ")"


def _search_key(count: int, taken: TakenFilter) -> list[sql.Composable]:
    first = sql.SQL(_TAKEN) if taken.order else sql.SQL(_search_weight(count))
    return [first, sql.SQL("s.image_id")]


def _joins(count: int) -> str:
    """The other terms' rows of the same image, each at `min` or more."""
    return "".join(
        f" JOIN catalog.search_terms AS o{k} ON o{k}.image_id = s.image_id AND o{k}.term = %(t{k})s"
        f" AND o{k}.weight >= %(min)s"
        for k in range(1, count)
    )


# Rows of the first term read per statement when several terms must match.
_SEARCH_CHUNK = 200
# The next chunk of a several-term search: first-term rows after (weight, id) in index order, with the others.
_SEVERAL = (
    "SELECT s.image_id, s.weight, {weakest} FROM catalog.search_terms AS s{joins}"
    " WHERE s.owner_id = %(owner)s AND s.term = %(t0)s AND s.weight >= %(min)s"
    " AND (s.weight, s.image_id) < (%(weight)s::real, %(id)s::bigint)"
    " ORDER BY s.weight DESC, s.image_id DESC LIMIT %(chunk)s"
)


def _search_query(query_terms: Sequence[str], taken: TakenFilter) -> tuple[sql.Composable, dict]:
    """The search statement, with a {after} slot for the keyset condition, and its term parameters."""
    params: dict = {f"t{k}": term for k, term in enumerate(query_terms)}
    joins = [_joins(len(query_terms))]
    if taken.needs_image:
        joins.append(" JOIN catalog.images AS i ON i.id = s.image_id")
    where = [sql.SQL("s.owner_id = %(owner)s AND s.term = %(t0)s AND s.weight >= %(min)s"), *taken.conditions(params)]
    key = _search_key(len(query_terms), taken)
    query = sql.SQL(
        "SELECT s.image_id, {weight} FROM catalog.search_terms AS s{joins} WHERE {where} {{after}}"
        " ORDER BY {order} LIMIT %(limit)s"
    ).format(
        weight=sql.SQL(_search_weight(len(query_terms))),
        joins=sql.SQL("".join(joins)),
        where=sql.SQL(" AND ").join(where),
        order=_order(key, taken.order),
    )
    return sql.SQL(query.as_string()), params


class CatalogStore:
    """Reads and writes images and their tags; owns the per-content lock that keeps shared bytes safe."""

    def __init__(
        self, pool: AsyncConnectionPool, *, quota: Quota | None = None, vocabulary: Vocabulary | None = None
    ) -> None:
        self._pool = pool
        self._quota = quota or Quota()
        self._vocabulary = vocabulary or load_vocabulary()

    @property
    def vocabulary(self) -> Vocabulary:
        return self._vocabulary

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

        Returns (row, created). An existing row is touched so the sweeper leaves it alone a while longer, and
        costs no quota. Raises QuotaExceeded when a new row would take the owner past the quota.
        """
        values = {name: getattr(new, name) for name in NewImage.__dataclass_fields__}
        lock = {"lock_key": _LOCK_NAMESPACE + new.sha256}
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
            usage = Usage(*await cur.fetchone(), quota=self._quota)
            if usage.refuses(new.size_bytes):
                raise QuotaExceeded(usage, new.size_bytes)
            return await self._fetch_one(conn, _INSERT, values), True

    async def usage(self, owner: str) -> Usage:
        """What the owner's images use (uploads in progress included) and the owner's quota."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT bytes, images FROM catalog.storage_usage WHERE owner_id = %s", (owner,))
            row = await cur.fetchone()
        return Usage(*(row or (0, 0)), quota=self._quota)

    async def finalize(self, image_id: int, outcome: Outcome) -> ImageRow | None:
        """Makes an `uploading` row visible with its outcome; None when another upload finished it first.

        One statement: an `uploading` row has no tag or search rows yet, so they are only inserted.
        """
        if outcome.classification is None:
            query = _FINALIZE_UNCLASSIFIED
            params = {"status": outcome.status, "reason": outcome.reason, "attempts": int(outcome.status == "failed")}
        else:
            model_tags = _model_tags(outcome.classification, self._vocabulary)
            tags = terms.visible_tags(model_tags, (), ())
            query = _FINALIZE_CLASSIFIED
            classified = _classified(outcome.classification, model_tags, self._vocabulary)
            params = classified | _index(tags, self._vocabulary)

        async def attempt() -> ImageRow | None:
            async with self._single_statements() as conn:
                return await self._fetch_one(conn, query, params | {"id": image_id})

        return await _retrying(attempt)

    async def abandon(self, uid: str, remove_bytes: RemoveBytes) -> None:
        """Undoes a reservation whose upload did not complete, bytes included when nothing else uses them.

        By uid, which the upload chose before reserving: a reservation cut short may exist without its caller
        ever having seen the row. A row that became visible meanwhile is left alone.
        """
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM catalog.images WHERE uid = %s AND status = 'uploading' RETURNING sha256", (uid,)
            )
            row = await cur.fetchone()
        if row is not None:
            await self.release_content(row[0], remove_bytes)

    # --- classification --------------------------------------------------------------------------

    async def _apply(
        self, conn: AsyncConnection, image_id: int, result: Classification, statuses: Sequence[str]
    ) -> ImageRow | None:
        """Replaces the model's labels and tags, keeping manual and hidden tags, and rebuilds the search rows."""
        model_tags = _model_tags(result, self._vocabulary)
        params = _classified(result, model_tags, self._vocabulary) | {"id": image_id, "statuses": list(statuses)}
        row = await self._fetch_one(conn, _APPLY, params)
        if row is not None:
            await self._rewrite_index(conn, row)
            if result.embedding:
                await similarity.save_embedding(conn, image_id=row.id, owner=row.owner_id, embedding=result.embedding)
        return row

    async def _rewrite_index(self, conn: AsyncConnection, row: ImageRow) -> None:
        """Rebuilds the tag and search rows; an image in the trash has none (restoring rebuilds them)."""
        await conn.execute(_DELETE_INDEX, {"id": row.id})
        if row.deleted_at is None:
            params = _index(row.tags, self._vocabulary) | {"id": row.id, "owner": row.owner_id}
            await conn.execute(_INSERT_INDEX, params)

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

    # Outdated: labelled by another classifier, faces found by another detector version than the one served, or
    # labelled before embeddings were stored (the similar-photo backfill).
    _OUTDATED = (
        "status IN ('classified', 'failed') AND (model_name <> %(name)s OR model_version <> %(version)s"
        " OR (%(face_version)s <> '' AND face_model_version <> %(face_version)s)"
        " OR (status = 'classified' AND NOT EXISTS"
        " (SELECT FROM catalog.image_embeddings AS e WHERE e.image_id = images.id)))"
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
        params = self._outdated_params(model) | {"lease": lease_seconds}
        async with self._pool.connection() as conn:
            return await self._fetch_all(conn, query, {**params, "limit": limit, "after": after_id})

    async def count_outdated(self, model: ModelId) -> int:
        query = sql.SQL("SELECT count(*) FROM catalog.images WHERE {outdated}").format(outdated=sql.SQL(self._OUTDATED))
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, self._outdated_params(model))
            return (await cur.fetchone())[0]

    @staticmethod
    def _outdated_params(model: ModelId) -> dict[str, str]:
        return {"name": model.name, "version": model.version, "face_version": model.face_version, "key": model.key}

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
        self,
        *,
        owner: str | None,
        category: str,
        tag: str,
        min_score: float,
        after: tuple | None,
        limit: int,
        taken: TakenFilter = TakenFilter(),
    ) -> Page:
        """Newest upload first, or by taken date; keyset pagination, so concurrent uploads never shift a page."""
        where, params = [sql.SQL("i.status <> 'uploading' AND i.deleted_at IS NULL")], {"limit": limit + 1}
        source, ident = sql.SQL("catalog.images AS i"), sql.SQL("i.id")
        if tag:
            # The tag's search term, so a list by tag shows what a search for it finds ("Holidays" too).
            source = sql.SQL("catalog.search_terms AS t JOIN catalog.images AS i ON i.id = t.image_id")
            ident = sql.SQL("t.image_id")
            where.append(sql.SQL("t.term = %(tag)s AND t.weight >= %(min_score)s"))
            params.update(tag=self._vocabulary.term(tag), min_score=min_score)
        elif min_score > 0:
            where.append(sql.SQL("i.category_score >= %(min_score)s"))
            params.update(min_score=min_score)
        if owner is not None:
            where.append(sql.SQL("{} = %(owner)s").format(sql.SQL("t.owner_id" if tag else "i.owner_id")))
            params.update(owner=owner)
        if category:
            where.append(sql.SQL("i.category = %(category)s"))
            params.update(category=category)
        where += taken.conditions(params)
        key = [sql.SQL(_TAKEN), ident] if taken.order else [ident]
        if after is not None:
            where.append(_after(key, after, taken.order, params))
        query = sql.SQL("SELECT {columns} FROM {source} WHERE {where} ORDER BY {order} LIMIT %(limit)s").format(
            columns=_COLUMNS, source=source, where=sql.SQL(" AND ").join(where), order=_order(key, taken.order)
        )
        async with self._pool.connection() as conn:
            rows = await self._fetch_all(conn, query, params)
        if len(rows) <= limit:
            return Page(rows)
        last = rows[limit - 1]
        return Page(rows[:limit], (_taken_key(last), last.id) if taken.order else (last.id,))

    async def search(
        self,
        *,
        owner: str,
        query_terms: Sequence[str],
        min_score: float,
        after: tuple | None,
        limit: int,
        taken: TakenFilter = TakenFilter(),
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
            return Page(rows, (_taken_key(by_id[last.image_id]), last.image_id) if last.image_id in by_id else None)
        return Page(rows, (last.weight, last.image_id))

    @staticmethod
    async def _hits(
        conn: AsyncConnection,
        query_terms: Sequence[str],
        owner: str,
        min_score: float,
        after: tuple | None,
        limit: int,
        taken: TakenFilter,
    ) -> list[SearchHit]:
        """Up to limit + 1 hits in one statement, sorted by the database."""
        query, params = _search_query(query_terms, taken)
        params.update(owner=owner, min=min_score, limit=limit + 1)
        after_sql = sql.SQL("")
        if after is not None:
            keyset = _after(_search_key(len(query_terms), taken), after, taken.order, params)
            after_sql = sql.SQL("AND {}").format(keyset)
        cur = await conn.execute(query.format(after=after_sql), params)
        return [SearchHit(*row) for row in await cur.fetchall()]

    @staticmethod
    async def _best_of_several(
        conn: AsyncConnection, query_terms: Sequence[str], owner: str, min_score: float, after: tuple | None, limit: int
    ) -> list[SearchHit]:
        """Up to limit + 1 hits of several terms, by their weakest match, without sorting every match.

        Reads the first term's matches in chunks, in its weight order, and stops once limit + 1 hits beat that
        weight: an image's weakest match is at most its first-term weight, so no later row can outrank them.
        """
        query = sql.SQL(_SEVERAL.format(weakest=_search_weight(len(query_terms)), joins=_joins(len(query_terms))))
        params = {f"t{k}": term for k, term in enumerate(query_terms)}
        params.update(owner=owner, min=min_score, chunk=_SEARCH_CHUNK, weight=3.0, id=2**63 - 1)
        found: list[SearchHit] = []
        while True:
            chunk = await (await conn.execute(query, params)).fetchall()
            found += [SearchHit(i, w) for i, _, w in chunk if after is None or (w, i) < tuple(after)]
            found.sort(key=lambda hit: (-hit.weight, -hit.image_id))
            if len(chunk) < _SEARCH_CHUNK or (len(found) > limit and found[limit].weight > chunk[-1][1]):
                return found[: limit + 1]
            params.update(weight=chunk[-1][1], id=chunk[-1][0])

    async def rows_by_id(self, ids: list[int]) -> list[ImageRow]:
        """The rows of these ids, in the given order (missing ones left out)."""
        async with self._pool.connection() as conn:
            return await self._rows_by_id(conn, ids)

    async def _rows_by_id(self, conn: AsyncConnection, ids: list[int]) -> list[ImageRow]:
        query = sql.SQL("SELECT {columns} FROM catalog.images AS i WHERE id = ANY(%s)").format(columns=_COLUMNS)
        by_id = {row.id: row for row in await self._fetch_all(conn, query, (ids,))}
        return [by_id[image_id] for image_id in ids if image_id in by_id]

    async def category_counts(self, owner: str, *, min_score: float) -> list[tuple[str, int]]:
        """Classified images per category whose top label reaches `min_score`, as a category search finds them:
        precomputed at the default threshold, counted from the images otherwise."""
        if min_score == terms.DEFAULT_MIN_SCORE:
            query = (
                "SELECT category, images FROM catalog.category_counts WHERE owner_id = %s AND images > 0"
                " ORDER BY images DESC, category"
            )
            params: tuple = (owner,)
        else:
            query = (
                "SELECT category, count(*) FROM catalog.images WHERE owner_id = %s AND status = 'classified'"
                " AND category <> '' AND category_score >= %s GROUP BY category ORDER BY count(*) DESC, category"
            )
            params = (owner, min_score)
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return [tuple(row) for row in await cur.fetchall()]

    async def tag_counts(self, owner: str, *, min_score: float, prefix: str, limit: int) -> list[tuple[str, int]]:
        """Images per search term at `min_score` or more (what a search for the term returns), most first;
        only terms starting with `prefix`, and at most `limit` (0: all). Precomputed at the default threshold."""
        low, high = terms.prefix_range(prefix)
        params = {"owner": owner, "low": low, "high": high, "min": min_score, "limit": limit or None}
        if min_score == terms.DEFAULT_MIN_SCORE:
            query = (
                "SELECT term, images FROM catalog.term_counts WHERE owner_id = %(owner)s"
                " AND term >= %(low)s AND term < %(high)s AND images > 0"
                " ORDER BY images DESC, term LIMIT %(limit)s"
            )
        else:
            query = (
                "SELECT term, count(*) FROM catalog.search_terms WHERE owner_id = %(owner)s"
                " AND term >= %(low)s AND term < %(high)s AND weight >= %(min)s"
                " GROUP BY term ORDER BY count(*) DESC, term LIMIT %(limit)s"
            )
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return [tuple(row) for row in await cur.fetchall()]

    # --- settings --------------------------------------------------------------------------------

    async def min_score_setting(self, owner: str) -> float | None:
        """The owner's min_score setting; None until they set one."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT min_score FROM catalog.user_settings WHERE owner_id = %s", (owner,))
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def set_min_score(self, owner: str, min_score: float) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO catalog.user_settings (owner_id, min_score) VALUES (%s, %s) ON CONFLICT (owner_id)"
                " DO UPDATE SET min_score = excluded.min_score, updated_at = now()",
                (owner, min_score),
            )

    # --- re-tagging after a vocabulary change ----------------------------------------------------

    async def retag_batch(self, *, after_id: int, limit: int) -> tuple[int, int]:
        """Derives the model tags of up to `limit` images (ids above `after_id`) tagged with another vocabulary
        version again from their stored labels; the model is not asked. Returns (images re-tagged, last id)."""
        select = sql.SQL(
            "SELECT {columns} FROM catalog.images AS i WHERE id > %s AND status <> 'uploading'"
            " AND vocabulary_version <> %s ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
        ).format(columns=_COLUMNS)
        update = sql.SQL(
            "UPDATE catalog.images AS i SET model_tags = %s, vocabulary_version = %s WHERE id = %s RETURNING {columns}"
        ).format(columns=_COLUMNS)
        version = self._vocabulary.version

        async def attempt() -> tuple[int, int]:
            async with self._pool.connection() as conn, conn.transaction():
                rows = await self._fetch_all(conn, select, (after_id, version, limit))
                for row in rows:
                    labels = [terms.LabelScore(i["label"], i["class_id"], i["score"]) for i in row.labels]
                    # Face tags come from the stored faces, not the labels: they stay, scored as the best face.
                    best_face = max((face["score"] for face in row.faces or ()), default=None)
                    faces = [tag for tag, _ in row.model_tags if tag in terms.FACE_TAGS]
                    model_tags = terms.score_model_tags(labels, self._vocabulary, face_tags=faces, face_score=best_face)
                    tags = Jsonb([[tag, score] for tag, score in model_tags])
                    await self._rewrite_index(conn, await self._fetch_one(conn, update, (tags, version, row.id)))
                return len(rows), max((row.id for row in rows), default=after_id)

        return await _retrying(attempt)

    async def count_untagged(self) -> int:
        """Images whose tags come from another vocabulary version than this process's."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM catalog.images WHERE status <> 'uploading' AND vocabulary_version <> %s",
                (self._vocabulary.version,),
            )
            return (await cur.fetchone())[0]

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
