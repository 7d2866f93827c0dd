"""Pytest fixtures for the auth service, shared by every test tier.

Typical use in another service's tests:

    async def test_something(auth_server, auth_harness):
        running, address = auth_server                      # a real auth server on a free port
        token = await auth_harness.user_token(address)      # register + log in a fresh user
        creds = await auth_harness.service_account(address) # a role "service" account to log in with
"""

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc

from services.auth.__main__ import change_user, create_account
from services.auth.config import Settings
from services.auth.server import MIGRATIONS, SCHEMA, create_server
from services.common.channels import open_channel
from services.common.server import RunningServer
from tests.support.postgres import create_migrated_database
from tests.support.waiting import eventually

DEFAULT_PASSWORD = "correct horse battery staple"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Credentials:
    """A username and password that log in with the Login RPC; `token` is an access token from that login."""

    username: str
    password: str
    token: str


def auth_settings(*, dsn: str, data_dir: Path, **overrides) -> Settings:
    """Auth settings for tests: port 0, no metrics endpoint, a key generated in `data_dir`."""
    values = {"host": "127.0.0.1", "port": 0, "metrics_port": None, "postgres_dsn": dsn, "data_dir": data_dir}
    return Settings(**{**values, **overrides})


async def register_and_login(address: str, username: str | None = None, password: str = DEFAULT_PASSWORD) -> str:
    """Registers a user (a fresh random name by default) and returns an access token for it."""
    username = username or f"user-{uuid.uuid4().hex[:8]}"
    async with open_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        await stub.Register(auth_pb2.RegisterRequest(username=username, password=password))
        return (await login(stub, username, password)).access_token


async def login(stub: auth_pb2_grpc.AuthServiceStub, username: str, password: str) -> auth_pb2.TokenPair:
    return await stub.Login(auth_pb2.LoginRequest(username=username, password=password))


@dataclass(frozen=True)
class ProcessFigures:
    """What a service process cost: seconds from spawn to SERVING, resident MiB at rest, its memory map."""

    start_seconds: float
    rss_mb: float
    maps: str


async def measure_service_process(
    module: str, service: str, *, port: int, env: dict[str, str], start_limit: float | None = None
) -> ProcessFigures:
    """Runs `python -m <module>` until `service` is SERVING on `port`, measures it at rest, then stops it with
    SIGTERM, which must end it cleanly (exit status 0).

    With `start_limit`, a start slower than it is measured once more and the faster start counts: on a shared
    machine one start can lose a second to a neighbour, while a service that really starts slowly fails both."""
    figures = await _measure_once(module, service, port=port, env=env)
    if start_limit is not None and figures.start_seconds >= start_limit:
        again = await _measure_once(module, service, port=port, env=env)
        figures = min(figures, again, key=lambda measured: measured.start_seconds)
    return figures


async def _measure_once(module: str, service: str, *, port: int, env: dict[str, str]) -> ProcessFigures:
    command = [sys.executable, "-m", module]
    process = await asyncio.to_thread(subprocess.Popen, command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        started = await wait_serving(f"127.0.0.1:{port}", service, alive=lambda: process.poll() is None)
        await asyncio.sleep(0.5)
        maps = await asyncio.to_thread(Path(f"/proc/{process.pid}/maps").read_text)
        figures = ProcessFigures(started, rss_mb(process.pid), maps)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 15) == 0, process.communicate()[1][-2000:]
    finally:
        process.kill()
        process.wait()
    return figures


def service_env(**values: str) -> dict[str, str]:
    """The environment for `python -m services.<name>` from the repository root, plus `values`."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "gen"), str(REPO)]), **values}


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


async def wait_serving(address: str, service: str, *, alive, limit: float = 30.0) -> float:
    """Polls gRPC health until `service` at `address` is SERVING; returns the seconds it took.

    `alive()` is checked between polls so a process that died fails at once instead of at the limit.
    """
    started = time.monotonic()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def serving() -> bool:
            assert alive(), "the server exited before serving"
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=0.5)
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        await eventually(
            serving,
            awaiting=f"{service} SERVING at {address}",
            within=limit,
            interval=0.02,
            ignoring=(grpc.aio.AioRpcError,),
        )
    return time.monotonic() - started


class AuthHarness:
    """Starts real auth servers (each on a fresh, migrated database) and makes accounts on them."""

    def __init__(self, admin_dsn: str, tmp_path: Path) -> None:
        self._admin_dsn = admin_dsn
        self._tmp_path = tmp_path
        self._counter = itertools.count()
        self._settings: dict[str, Settings] = {}
        self._running: list[RunningServer] = []

    async def start(self, *, dsn: str | None = None, **overrides) -> tuple[RunningServer, str]:
        """Starts an auth server and returns (RunningServer, "127.0.0.1:port").

        `dsn` reuses a database (e.g. another server's, to restart it with new settings); by default each
        server gets a fresh migrated database and a signing key generated in its own tmp_path directory.
        `overrides` are Settings fields (login_window_seconds=2, jwt_private_key_file=..., ...).
        """
        dsn = dsn or self.new_database()
        overrides.setdefault("data_dir", self._tmp_path / f"auth-{next(self._counter)}")
        settings = auth_settings(dsn=dsn, **overrides)
        running = await create_server(settings)
        self._running.append(running)
        address = f"127.0.0.1:{running.port}"
        self._settings[address] = settings
        return running, address

    def new_database(self) -> str:
        """A fresh database with the auth schema migrated."""
        return create_migrated_database(self._admin_dsn, schema=SCHEMA, directory=MIGRATIONS)

    def settings(self, address: str) -> Settings:
        """The settings the server at `address` runs with (its postgres_dsn, data_dir, ...)."""
        return self._settings[address]

    async def user_token(self, address: str, username: str | None = None, password: str = DEFAULT_PASSWORD) -> str:
        """Registers and logs in a user with role "user"; returns its access token."""
        return await register_and_login(address, username, password)

    async def service_account(
        self, address: str, name: str = "catalog", password: str = DEFAULT_PASSWORD
    ) -> Credentials:
        """Creates (like `create-service-account`) a role "service" account and logs it in."""
        return await self._account(address, name, "service", password)

    async def admin(self, address: str, name: str = "admin", password: str = DEFAULT_PASSWORD) -> Credentials:
        """Creates (like `create-admin`) an admin and logs it in."""
        return await self._account(address, name, "admin", password)

    async def set_disabled(self, address: str, name: str, disabled: bool) -> None:
        """Disables or enables a user, like `disable-user` / `enable-user`."""
        await change_user(self._settings[address], name, "disable" if disabled else "enable")

    async def delete_user(self, address: str, name: str) -> None:
        """Deletes a user, like `delete-user`."""
        await change_user(self._settings[address], name, "delete")

    async def _account(self, address: str, name: str, role: str, password: str) -> Credentials:
        await create_account(self._settings[address], name, role, lambda: password)
        async with open_channel(address) as channel:
            pair = await login(auth_pb2_grpc.AuthServiceStub(channel), name, password)
        return Credentials(username=name, password=password, token=pair.access_token)

    async def pass_time(self, address: str, seconds: float) -> None:
        """Ages the failed logins and registrations the server at `address` counts by `seconds`, as if that much
        time had passed: its throttling windows run on the database's clock, which tests cannot move."""
        async with await psycopg.AsyncConnection.connect(self._settings[address].postgres_dsn) as conn:
            await conn.execute(
                "UPDATE auth.login_failures SET created_at = created_at - make_interval(secs => %s)", (seconds,)
            )

    async def stop(self, running: RunningServer) -> None:
        """Stops one server early (e.g. to restart on the same database with other settings)."""
        self._running.remove(running)
        await running.stop(0)

    async def stop_all(self) -> None:
        for running in self._running:
            await running.stop(0)
        self._running.clear()


@pytest.fixture
async def auth_harness(postgres_admin_dsn, tmp_path):
    """An AuthHarness; every server it started is stopped after the test."""
    harness = AuthHarness(postgres_admin_dsn, tmp_path)
    yield harness
    await harness.stop_all()


@pytest.fixture
def start_auth_server(auth_harness):
    """Async factory: `running, address = await start_auth_server(**settings_overrides)`."""
    return auth_harness.start


@pytest.fixture
async def auth_server(auth_harness) -> tuple[RunningServer, str]:
    """A running auth server with default settings: (RunningServer, "127.0.0.1:port")."""
    return await auth_harness.start()
