"""The auth command line: migrate, create-admin, promote-admin, user commands, service accounts, keys, serving."""

import asyncio
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc

from services.auth.__main__ import main
from services.auth.server import create_server
from services.common.channels import open_channel
from services.common.db import SchemaNotReady
from tests.support.auth_fixtures import auth_settings, measure_service_process, service_env
from tests.support.ports import free_port
from tests.support.postgres import create_database
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
AUTH_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
# Targets for a freshly started process, from spawn to SERVING, and at rest.
START_LIMIT_SECONDS = 2.0
IDLE_RSS_LIMIT_MB = 150


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() installs its own log handler on the root logger; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def command_env(monkeypatch, auth_harness, auth_server):
    """Environment for running commands against the database of a running auth server."""
    settings = auth_harness.settings(auth_server[1])
    monkeypatch.setenv("TAGSMITH_POSTGRES_DSN", settings.postgres_dsn)
    monkeypatch.setenv("TAGSMITH_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TAGSMITH_LOG_FORMAT", "text")
    return auth_server[1]


def _env(**values: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO / 'gen'}:{REPO}", **values}


async def _roles_after_login(address: str, username: str, password: str) -> list[str]:
    async with open_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        pair = await stub.Login(auth_pb2.LoginRequest(username=username, password=password))
        me = await stub.GetMe(auth_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {pair.access_token}"),))
    return sorted(me.roles)


def test_migrate_command_is_idempotent(postgres_admin_dsn):
    env = _env(TAGSMITH_POSTGRES_DSN=create_database(postgres_admin_dsn), TAGSMITH_LOG_FORMAT="text")
    first = subprocess.run([sys.executable, "-m", "services.auth", "migrate"], env=env, capture_output=True, text=True)
    again = subprocess.run([sys.executable, "-m", "services.auth", "migrate"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "0001_users_and_tokens.sql" in first.stdout
    assert (again.returncode, again.stdout.strip()) == (0, "nothing to apply")


async def test_server_refuses_an_unmigrated_database(postgres_admin_dsn, tmp_path):
    settings = auth_settings(dsn=create_database(postgres_admin_dsn), data_dir=tmp_path)
    with pytest.raises(SchemaNotReady, match=r"services\.auth migrate"):
        await create_server(settings)


async def test_create_admin_creates_a_new_admin_with_the_operators_password(command_env, monkeypatch, capsys):
    monkeypatch.setenv("TAGSMITH_ADMIN_PASSWORD", PASSWORD)
    assert await _run_async(["create-admin", "root"]) == 0
    assert "created admin root" in capsys.readouterr().out
    assert await _roles_after_login(command_env, "root", PASSWORD) == ["admin", "user"]
    assert await _run_async(["create-admin", "ROOT"]) == 1
    assert "already exists" in capsys.readouterr().err


async def test_create_admin_refuses_a_name_somebody_registered(command_env, monkeypatch, auth_harness, capsys):
    # An outsider registers the name the operator is about to make admin, with a password of their own.
    await auth_harness.user_token(command_env, "carol", "outsiders password")
    monkeypatch.setenv("TAGSMITH_ADMIN_PASSWORD", PASSWORD)
    assert await _run_async(["create-admin", "Carol"]) == 1
    error = capsys.readouterr().err
    assert "'carol' already exists and keeps its own password" in error
    assert "promote-admin carol" in error
    assert await _roles_after_login(command_env, "carol", "outsiders password") == ["user"]
    with pytest.raises(grpc.aio.AioRpcError):
        await _roles_after_login(command_env, "carol", PASSWORD)


async def test_promote_admin_grants_an_existing_person_admin_on_their_own_password(
    command_env, monkeypatch, auth_harness, capsys
):
    await auth_harness.user_token(command_env, "dora", "doras password")
    monkeypatch.setenv("TAGSMITH_ADMIN_PASSWORD", "never read by promote-admin")
    assert await _run_async(["promote-admin", "Dora"]) == 0
    assert "promoted existing user dora" in capsys.readouterr().out
    assert await _roles_after_login(command_env, "dora", "doras password") == ["admin", "user"]
    assert await _run_async(["promote-admin", "dora"]) == 0
    assert "already an admin; nothing changed" in capsys.readouterr().out
    assert await _run_async(["promote-admin", "nobody"]) == 1
    assert "no user is named 'nobody'" in capsys.readouterr().err
    monkeypatch.setenv("TAGSMITH_SERVICE_PASSWORD", PASSWORD)
    assert await _run_async(["create-service-account", "worker"]) == 0
    assert await _run_async(["promote-admin", "worker"]) == 1
    assert "service accounts cannot be admins" in capsys.readouterr().err


async def test_disable_enable_and_delete_user(command_env, auth_harness, capsys):
    await auth_harness.user_token(command_env, "erin", PASSWORD)
    assert await _run_async(["disable-user", "erin"]) == 0
    assert "disabled user erin" in capsys.readouterr().out
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _roles_after_login(command_env, "erin", PASSWORD)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await _run_async(["enable-user", "erin"]) == 0
    # Tokens issued in the second of the revocation are refused with it: the next second's login works.
    roles = await eventually(
        lambda: _roles_after_login(command_env, "erin", PASSWORD),
        awaiting="erin to log in again once enabled",
        within=5,
        interval=0.1,
        ignoring=(grpc.aio.AioRpcError,),
    )
    assert roles == ["user"]
    assert await _run_async(["delete-user", "erin"]) == 0
    assert "deleted user erin" in capsys.readouterr().out
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await _roles_after_login(command_env, "erin", PASSWORD)
    assert gone.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await _run_async(["delete-user", "erin"]) == 1
    assert "no user is named 'erin'" in capsys.readouterr().err


async def test_create_service_account_and_rotate_its_password(command_env, monkeypatch, auth_harness):
    monkeypatch.setenv("TAGSMITH_SERVICE_PASSWORD", PASSWORD)
    assert await _run_async(["create-service-account", "catalog"]) == 0
    assert await _roles_after_login(command_env, "catalog", PASSWORD) == ["service", "user"]
    monkeypatch.setenv("TAGSMITH_SERVICE_PASSWORD", "a rotated service secret")
    assert await _run_async(["create-service-account", "catalog"]) == 0
    assert await _roles_after_login(command_env, "catalog", "a rotated service secret") == ["service", "user"]


async def test_create_service_account_refuses_to_take_over_a_person(command_env, monkeypatch, auth_harness, capsys):
    await auth_harness.user_token(command_env, "dave", "daves password")
    monkeypatch.setenv("TAGSMITH_SERVICE_PASSWORD", PASSWORD)
    assert await _run_async(["create-service-account", "dave"]) == 1
    assert "not a service account" in capsys.readouterr().err
    assert await _roles_after_login(command_env, "dave", "daves password") == ["user"]


async def test_commands_check_names_and_passwords(command_env, monkeypatch, capsys):
    monkeypatch.delenv("TAGSMITH_ADMIN_PASSWORD", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    assert await _run_async(["create-admin", "root"]) == 1
    assert "no password" in capsys.readouterr().err
    monkeypatch.setenv("TAGSMITH_ADMIN_PASSWORD", "short")
    assert await _run_async(["create-admin", "root"]) == 1
    assert "8 to 256" in capsys.readouterr().err
    assert await _run_async(["create-admin", "no spaces allowed"]) == 1


def test_generate_key_and_public_key(tmp_path, monkeypatch, capsys):
    key_file = tmp_path / "next.pem"
    assert main(["generate-key", str(key_file)]) == 0
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert main(["generate-key", str(key_file)]) == 1
    monkeypatch.setenv("TAGSMITH_JWT_PRIVATE_KEY_FILE", str(key_file))
    capsys.readouterr()
    assert main(["public-key"]) == 0
    public = serialization.load_pem_public_key(capsys.readouterr().out.encode())
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert public.public_bytes_raw() == private.public_key().public_bytes_raw()


async def test_serve_command_starts_fast_stays_light_and_stops_on_sigterm(auth_harness, tmp_path):
    port = free_port()
    env = service_env(
        TAGSMITH_POSTGRES_DSN=auth_harness.new_database(),
        TAGSMITH_DATA_DIR=str(tmp_path / "data"),
        TAGSMITH_PORT=str(port),
        TAGSMITH_METRICS_PORT="0",
        TAGSMITH_LOG_LEVEL="WARNING",
    )
    figures = await measure_service_process(
        "services.auth", AUTH_SERVICE, port=port, env=env, start_limit=START_LIMIT_SECONDS
    )
    assert figures.start_seconds < START_LIMIT_SECONDS, f"SERVING after {figures.start_seconds:.2f}s"
    assert figures.rss_mb < IDLE_RSS_LIMIT_MB, f"idle RSS {figures.rss_mb:.0f} MB"
    assert (tmp_path / "data" / "signing-key.pem").exists()


async def _run_async(argv: list[str]) -> int:
    """main() drives its own event loop, so run it in a thread from an async test."""
    return await asyncio.to_thread(main, argv)
