"""What every part of the store shares: the pool, statement rendering, retries and the per-content lock."""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import RowMaker, class_row
from psycopg_pool import AsyncConnectionPool

from services.catalog.models import ImageRow, Quota
from services.catalog.store import tagging
from services.common.db import one_row
from services.common.vocabulary import Vocabulary
from services.common.vocabulary import load as load_vocabulary

log = logging.getLogger(__name__)

T = TypeVar("T")
Params = Mapping[str, Any]
# What psycopg executes: a statement rendered at import, or one composed per call.
Query = sql.SQL | sql.Composed
RemoveBytes = Callable[[str], Awaitable[None]]


def statement(text: str, **parts: sql.Composable) -> sql.SQL:
    """A statement with named placeholders, its {parts} filled in and rendered once at import, instead of composing
    its identifiers again on every call."""
    return sql.SQL(sql.SQL(text).format(**parts).as_string())


COLUMNS = statement(
    "{names}", names=sql.SQL(", ").join(sql.Identifier("i", name) for name in ImageRow.__dataclass_fields__)
)
LOCK_NAMESPACE = "catalog-blob:"
_LOCK = statement("SELECT pg_advisory_lock(hashtextextended(%(key)s, 0))")
_UNLOCK = statement("SELECT pg_advisory_unlock(hashtextextended(%(key)s, 0))")
_REFERENCED = statement("SELECT EXISTS (SELECT 1 FROM catalog.images WHERE sha256 = %(sha256)s)")
_UNTRASH = statement(
    "UPDATE catalog.images AS i SET deleted_at = NULL, updated_at = now() WHERE id = %(id)s RETURNING {columns}",
    columns=COLUMNS,
)
# Different tables, so one statement may delete from (or insert into) both.
_DELETE_INDEX = statement(
    "WITH gone AS (DELETE FROM catalog.tags WHERE image_id = %(id)s)"
    " DELETE FROM catalog.search_terms WHERE image_id = %(id)s"
)
_INSERT_INDEX = statement(
    "WITH tagged AS (INSERT INTO catalog.tags (image_id, owner_id, tag, score, manual)"
    " SELECT %(id)s, %(owner)s, * FROM {tag_rows})"
    " INSERT INTO catalog.search_terms (image_id, owner_id, term, weight)"
    " SELECT %(id)s, %(owner)s, * FROM {term_rows}",
    tag_rows=tagging.TAG_ROWS,
    term_rows=tagging.TERM_ROWS,
)
_ROWS_BY_ID = statement("SELECT {columns} FROM catalog.images AS i WHERE id = ANY(%(ids)s)", columns=COLUMNS)
_WRITE_RETRIES = 3
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
_IMAGE_FIELDS = frozenset(ImageRow.__dataclass_fields__)


def image_rows(cursor: Any) -> RowMaker[ImageRow]:
    """class_row(ImageRow), without the frozen dataclass's __init__ when every field is selected (COLUMNS).

    That __init__ sets its 30 fields one object.__setattr__ at a time, and a list or search page pays it 50 times:
    filling the instance's dict at once, as copy and pickle do, builds the same rows in about half the time.
    """
    names = [column.name for column in cursor.description or ()]
    if set(names) != _IMAGE_FIELDS or len(names) != len(_IMAGE_FIELDS):
        return class_row(ImageRow)(cursor)

    def image_row(values: Sequence[Any]) -> ImageRow:
        row = object.__new__(ImageRow)
        row.__dict__.update(zip(names, values, strict=True))
        return row

    return image_row


async def retrying(action: Callable[[], Awaitable[T]]) -> T:
    """Runs a write transaction again when PostgreSQL chose it as a deadlock victim."""
    for _ in range(_WRITE_RETRIES - 1):
        try:
            return await action()
        except _RETRYABLE:
            pass
    return await action()


async def unlock(conn: AsyncConnection, key: str) -> None:
    """Releases a session lock even after a failed statement; a lost connection has released it already."""
    try:
        await conn.rollback()
        await conn.execute(_UNLOCK, {"key": key})
        await conn.commit()
    except psycopg.OperationalError:
        log.warning("connection lost while holding a lock; PostgreSQL released it with the session")


class StoreBase:
    """The pool, the quota and the vocabulary every part works with, and the operations several parts need."""

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
    async def _single_statements(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection in autocommit mode: each statement is its own transaction, sent without the
        BEGIN and COMMIT round trips.

        Reads use it too: at READ COMMITTED every statement takes its own snapshot inside a transaction as well, so
        a transaction around them bought nothing but those two round trips per checkout.
        """
        async with self._pool.connection() as conn:
            await conn.set_autocommit(True)
            try:
                yield conn
            finally:
                # A broken connection refuses the change; the pool discards it anyway.
                with suppress(psycopg.Error):
                    await conn.set_autocommit(False)

    @staticmethod
    async def _fetch_one(conn: AsyncConnection, query: Query, params: Params) -> ImageRow | None:
        cur = conn.cursor(row_factory=image_rows)
        await cur.execute(query, params)
        return await cur.fetchone()

    @staticmethod
    async def _fetch_all(conn: AsyncConnection, query: Query, params: Params) -> list[ImageRow]:
        cur = conn.cursor(row_factory=image_rows)
        await cur.execute(query, params)
        return await cur.fetchall()

    async def _rows_by_id(self, conn: AsyncConnection, ids: list[int]) -> list[ImageRow]:
        """The rows of these ids, in the given order (missing ones left out)."""
        by_id = {row.id: row for row in await self._fetch_all(conn, _ROWS_BY_ID, {"ids": ids})}
        return [by_id[image_id] for image_id in ids if image_id in by_id]

    @staticmethod
    async def _fetch_value(conn: AsyncConnection, query: Query, params: Params) -> Any:
        """The first column of the one row a statement always returns (a count, EXISTS, a lock's outcome)."""
        cur = await conn.execute(query, params)
        return one_row(await cur.fetchone(), "a single-value statement")[0]

    @asynccontextmanager
    async def content_lock(self, sha256: str) -> AsyncIterator[AsyncConnection]:
        """Holds a session lock on one content hash: reserving a row and removing bytes never interleave."""
        key = LOCK_NAMESPACE + sha256
        async with self._pool.connection() as conn:
            await conn.execute(_LOCK, {"key": key})
            await conn.commit()
            try:
                yield conn
            finally:
                await unlock(conn, key)

    async def _referenced(self, conn: AsyncConnection, sha256: str) -> bool:
        referenced = await self._fetch_value(conn, _REFERENCED, {"sha256": sha256})
        await conn.commit()
        return bool(referenced)

    async def release_content(self, sha256: str, remove_bytes: RemoveBytes) -> bool:
        """Removes the bytes of `sha256` when no row refers to them any more; True when removed."""
        async with self.content_lock(sha256) as conn:
            if await self._referenced(conn, sha256):
                return False
            await remove_bytes(sha256)
            return True

    async def _delete_then_release(
        self, conn: AsyncConnection, query: Query, params: Params, *, sha256: str, remove_bytes: RemoveBytes
    ) -> bool:
        """Deletes a row under the content lock held on `conn`, then the bytes when no other row (any owner) still
        refers to them; True when a row was deleted."""
        cur = await conn.execute(query, params)
        await conn.commit()
        if cur.rowcount and not await self._referenced(conn, sha256):
            await remove_bytes(sha256)
        return cur.rowcount > 0

    async def _rewrite_index(self, conn: AsyncConnection, row: ImageRow) -> None:
        """Rebuilds the tag and search rows; an image in the trash has none (restoring rebuilds them)."""
        await self._drop_index(conn, row.id)
        if row.deleted_at is None:
            params = tagging.index_params(row.tags, self._vocabulary) | {"id": row.id, "owner": row.owner_id}
            await conn.execute(_INSERT_INDEX, params)

    async def _drop_index(self, conn: AsyncConnection, image_id: int) -> None:
        await conn.execute(_DELETE_INDEX, {"id": image_id})

    async def _untrash(self, conn: AsyncConnection, image_id: int) -> ImageRow:
        """Brings back a trashed row this transaction has locked, tag and search rows included."""
        row = one_row(await self._fetch_one(conn, _UNTRASH, {"id": image_id}), "restoring a locked image")
        await self._rewrite_index(conn, row)
        return row
