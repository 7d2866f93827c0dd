"""PostgreSQL plumbing shared by auth and catalog: a self-healing pool and a versioned migration runner."""

import contextlib
import logging
import re
import select
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import AsyncConnection, sql
from psycopg.pq import ConnStatus
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.common.settings import PostgresSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a call raises when the database cannot be reached in time: answered UNAVAILABLE by every service.
UNREACHABLE = (psycopg.OperationalError, PoolTimeout)
# How long a call waits for a pooled connection: with the database down, a call fails within this, not the pool's
# 30 s default (longer than the callers' own deadlines, so they saw a timeout instead of "unavailable").
CHECKOUT_TIMEOUT_SECONDS = 2.0
# How long the pool keeps retrying one lost connection; a call waiting afterwards starts a new attempt at once.
RECONNECT_TIMEOUT_SECONDS = 5.0
# libpq's connection options: give up connecting after 2 s (its minimum) instead of the operating system's minutes;
# notice a peer that vanished mid-query (no RST: a partition, a dead host) within seconds instead of 15 minutes.
CONNECTION_OPTIONS: dict[str, Any] = {
    "connect_timeout": 2,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}

# Migration files are named like 0001_create_images.sql and applied in that order.
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def one_row(row: T | None, what: str) -> T:
    """The row a statement always returns (an aggregate, INSERT ... RETURNING, a row this transaction has locked):
    its absence is a bug, reported as one instead of an error about None further on."""
    if row is None:
        raise RuntimeError(f"{what} returned no row")
    return row


async def open_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    name: str = "tagsmith",
    checkout_timeout: float = CHECKOUT_TIMEOUT_SECONDS,
) -> AsyncConnectionPool:
    """A pool that checks connections before lending them, so it recovers on its own after a PostgreSQL restart,
    and that gives up on a checkout after `checkout_timeout` seconds, so a database outage fails calls fast."""
    pool = AsyncConnectionPool(
        dsn,
        kwargs=CONNECTION_OPTIONS,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        check=check_if_disturbed,
        configure=_fast_json,
        timeout=checkout_timeout,
        # Short, so that after an outage a waiting call soon starts a fresh attempt instead of waiting out a backoff
        # grown during the outage (psycopg_pool doubles the pause between attempts until this expires).
        reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
    )
    await pool.open(wait=False)
    return pool


async def _fast_json(conn: AsyncConnection) -> None:
    """Reads json and jsonb columns with orjson: a page of 50 images carries about 60 kB of labels and tags, and the
    standard library's parser took 2-3 ms of each list or search page of them, orjson about half."""
    set_json_loads(orjson.loads, context=conn)


async def open_service_pool(settings: PostgresSettings, *, name: str) -> AsyncConnectionPool:
    """The pool a service's PostgreSQL settings describe; settings given under a former name are warned about here,
    where they take effect, once logging is set up."""
    for warning in settings.deprecations():
        log.warning(warning)
    return await open_pool(
        settings.postgres_dsn,
        max_size=settings.postgres_pool_size,
        name=name,
        checkout_timeout=settings.postgres_checkout_timeout_seconds,
    )


async def check_if_disturbed(conn: AsyncConnection) -> None:
    """The pool's check before lending a connection: a round trip only when the idle connection heard something.

    An idle connection receives nothing unless the server is closing it (a restart, an administrator, a timeout),
    which makes its socket readable. Checking that costs microseconds; a round trip on every checkout cost the
    database and the service more than some of the statements themselves.
    """
    pgconn = conn.pgconn
    if pgconn.status == ConnStatus.OK:
        # poll, not select: select cannot watch descriptors numbered 1024 or more.
        idle = select.poll()
        idle.register(pgconn.socket, select.POLLIN)
        if not idle.poll(0):
            return
    await AsyncConnectionPool.check_connection(conn)


class DatabaseProbe:
    """The health watcher's check: a round trip on a connection of its own, outside the pool, so a busy pool never
    looks like a database outage; reconnects after a failure."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: AsyncConnection | None = None

    async def __call__(self) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await AsyncConnection.connect(self._dsn, autocommit=True, **CONNECTION_OPTIONS)
            await self._conn.execute("SELECT 1")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(psycopg.Error):
                await conn.close()


def migration_files(directory: Path) -> list[tuple[int, Path]]:
    files = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} does not look like 0001_name.sql")
        files.append((int(match.group(1)), path))
    return files


def migrate(dsn: str, *, schema: str, directory: Path) -> list[str]:
    """Applies the pending migrations of one service, each in its own transaction; idempotent.

    An advisory lock keyed on the schema makes concurrent runs (two Jobs, two replicas) wait for each other.
    Returns the names of the migrations applied now.
    """
    applied_now = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (schema,))
        try:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            table = sql.Identifier(schema, "schema_migrations")
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (version int PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(table)
            )
            done = {row[0] for row in conn.execute(sql.SQL("SELECT version FROM {}").format(table))}
            for version, path in migration_files(directory):
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
                    conn.execute(path.read_text())
                    conn.execute(
                        sql.SQL("INSERT INTO {} (version, name) VALUES (%s, %s)").format(table), (version, path.name)
                    )
                log.info("applied migration %s", path.name)
                applied_now.append(path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (schema,))
    return applied_now


class SchemaNotReady(RuntimeError):
    """The database lacks this release's tables: the service's `migrate` command has not run."""


async def check_schema(pool: AsyncConnectionPool, *, schema: str, directory: Path, timeout: float = 30.0) -> None:
    """Refuses to serve a database the migrations have not brought up to this release's version."""
    latest = max((version for version, _ in migration_files(directory)), default=0)
    query = sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(sql.Identifier(schema, "schema_migrations"))
    try:
        async with pool.connection(timeout=timeout) as conn:
            cur = await conn.execute(query)
            (applied,) = one_row(await cur.fetchone(), "reading the schema version")
    except psycopg.errors.UndefinedTable:
        applied = 0
    if applied < latest:
        raise SchemaNotReady(
            f"the {schema} schema is at version {applied}, this release needs {latest}:"
            f" run `python -m services.{schema} migrate` first"
        )
