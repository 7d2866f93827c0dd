"""End-to-end fixtures: every real service as a subprocess on free ports, in a temporary directory."""

import uuid

import httpx
import pytest

from local.stack import Stack, StackOptions
from tests.support.postgres import create_database

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def stack(tmp_path_factory, model_base_path, postgres_admin_dsn, modelserver_addr):
    """The whole system, once per session, with anonymous mode on so the original API also works without tokens.

    Its model server is the session's (the integration tier's), serving the same models: TensorFlow loads once.
    """
    options = StackOptions(
        model_base_path=model_base_path,
        postgres_dsn=create_database(postgres_admin_dsn),
        modelserver_addr=modelserver_addr,
        anonymous_mode=True,
        start_timeout=240,
        # Every test signs up from 127.0.0.1, and schemathesis registers at random: lift the per-address limit.
        extra_env={"auth": {"TAGSMITH_REGISTER_MAX_PER_ADDRESS": "100000"}},
    )
    with Stack(options) as running:
        running.start(tmp_path_factory.mktemp("stack"))
        yield running


@pytest.fixture(scope="session")
def api_url(stack) -> str:
    return stack.gateway_url


@pytest.fixture
def api(api_url):
    with httpx.Client(base_url=api_url, timeout=60) as client:
        yield client


def sign_up(client: httpx.Client, username: str | None = None) -> dict[str, str]:
    """Registers and logs in a new user; returns the Authorization header."""
    username = username or f"user_{uuid.uuid4().hex[:10]}"
    created = client.post("/v1/auth/register", json={"username": username, "password": PASSWORD})
    assert created.status_code == 201, created.text
    login = client.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


@pytest.fixture
def user(api) -> dict[str, str]:
    return sign_up(api)
