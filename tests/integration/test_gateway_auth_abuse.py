"""Login and registration abuse through the real gateway (uvicorn, with its proxy-header handling) and real auth.

The gateway believes X-Forwarded-For only from TAGSMITH_TRUSTED_PROXIES and passes the client address to auth;
throttled answers are 429 with Retry-After and say how many minutes to wait; service accounts and the anonymous
user of anonymous mode cannot be locked (or logged in to, for services) through the public API.
"""

import asyncio
import contextlib

import httpx
import pytest
import uvicorn
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc

from services.common.channels import open_channel
from services.gateway.__main__ import uvicorn_config
from tests.support.gateway_fixtures import gateway_settings
from tests.support.ports import free_port
from tests.support.waiting import eventually

PASSWORD = "correct horse battery staple"
OWNER, ATTACKER = "198.51.100.10", "203.0.113.66"


@contextlib.asynccontextmanager
async def _gateway(auth_address: str, **overrides):
    """The gateway as `python -m services.gateway` runs it, on a free port; yields an httpx client."""
    closed = f"127.0.0.1:{free_port()}"
    settings = gateway_settings(
        auth_address, catalog_addr=closed, inference_addr=closed, host="127.0.0.1", port=0, **overrides
    )
    server = uvicorn.Server(uvicorn_config(settings))
    task = asyncio.create_task(server.serve())

    def started() -> bool:
        assert not task.done(), "the gateway did not start"
        return server.started

    await eventually(started, awaiting="the gateway to listen", interval=0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client, server.config.loaded_app
    finally:
        server.should_exit = True
        await task


async def _auth(auth_harness, **overrides):
    """Auth trusting the gateway's client address, with user "alice" registered."""
    _, address = await auth_harness.start(trust_forwarded_for=True, **overrides)
    async with open_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        await stub.Register(auth_pb2.RegisterRequest(username="alice", password=PASSWORD))
    return address


async def _login(client, username="alice", password=PASSWORD, *, address=None) -> httpx.Response:
    headers = {"X-Forwarded-For": address} if address else {}
    return await client.post("/v1/auth/login", json={"username": username, "password": password}, headers=headers)


async def test_guessing_from_one_address_gets_429_there_and_never_refuses_the_owner_elsewhere(auth_harness):
    address = await _auth(auth_harness, login_max_failures_per_account_address=3)
    async with _gateway(address, trusted_proxies="127.0.0.1") as (client, _):
        for _ in range(3):
            assert (await _login(client, password="wrong password", address=ATTACKER)).status_code == 401
        right, wrong = await _login(client, address=ATTACKER), await _login(client, password="nope", address=ATTACKER)

        def answer(response: httpx.Response) -> tuple:
            error = response.json()["error"]
            return response.status_code, error["code"], error["message"]

        assert answer(right) == answer(wrong), "a throttled answer says nothing about the password"
        assert abs(int(right.headers["Retry-After"]) - int(wrong.headers["Retry-After"])) <= 1
        assert right.status_code == 429
        assert 800 < int(right.headers["Retry-After"]) <= 900
        message = right.json()["error"]["message"]
        assert message == "too many failed logins for this account from your address; try again in 15 minutes"
        assert (await _login(client, address=OWNER)).status_code == 200
        spoofed = await _login(client, address=f"{OWNER}, {ATTACKER}")
        assert spoofed.status_code == 429, "only the entry our trusted proxy appended counts"


async def test_without_trusted_proxies_x_forwarded_for_is_ignored(auth_harness):
    address = await _auth(auth_harness, login_max_failures_per_account_address=3)
    async with _gateway(address) as (client, _):
        for i in range(3):
            assert (await _login(client, password="wrong password", address=f"203.0.113.{i}")).status_code == 401
        assert (await _login(client, address=OWNER)).status_code == 429


async def test_service_accounts_can_neither_log_in_nor_be_locked_through_the_gateway(auth_harness):
    address = await _auth(auth_harness, login_max_failures_per_account_address=2)
    service = await auth_harness.service_account(address, "catalog-worker")
    async with _gateway(address) as (client, _):
        refused = await _login(client, service.username, service.password)
        assert refused.status_code == 401
        assert refused.json()["error"]["message"] == "invalid username or password"
        for _ in range(3):
            await _login(client, service.username, "wrong password")
        assert (await _login(client, service.username, service.password)).status_code == 429
    async with open_channel(address) as channel:
        request = auth_pb2.LoginRequest(username=service.username, password=service.password)
        assert (await auth_pb2_grpc.AuthServiceStub(channel).Login(request)).access_token


async def test_strangers_cannot_lock_the_anonymous_user_of_anonymous_mode(auth_harness):
    address = await _auth(auth_harness, login_max_failures_per_account_address=2)
    async with open_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        await stub.Register(auth_pb2.RegisterRequest(username="anonymous", password=PASSWORD))
    async with _gateway(address, anonymous_mode=True, anonymous_password=PASSWORD) as (client, app):
        for _ in range(3):
            await _login(client, "anonymous", "wrong password")
        assert (await _login(client, "anonymous", PASSWORD)).status_code == 429
        assert await app.state.anonymous.token(), "the gateway's own anonymous login still works"


async def test_registrations_per_address_are_limited_with_429(auth_harness):
    address = await _auth(auth_harness, register_max_per_address=2)
    async with _gateway(address, trusted_proxies="127.0.0.1") as (client, _):

        async def register(name: str, source: str) -> httpx.Response:
            body = {"username": name, "password": PASSWORD}
            return await client.post("/v1/auth/register", json=body, headers={"X-Forwarded-For": source})

        assert (await register("first", ATTACKER)).status_code == 201
        assert (await register("second", ATTACKER)).status_code == 201
        refused = await register("third", ATTACKER)
        assert refused.status_code == 429
        assert 3500 < int(refused.headers["Retry-After"]) <= 3600
        message = refused.json()["error"]["message"]
        assert message == "too many accounts were registered from your address; try again in 60 minutes"
        assert (await register("third", OWNER)).status_code == 201
        # The new account's registration address is familiar to it: it logs in from there at once.
        assert (await _login(client, "third", address=OWNER)).status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"username": "a" * 257, "password": PASSWORD}, 400),
        ({"username": "al\x00ice", "password": PASSWORD}, 401),
        ({"username": "alice", "password": "p" * 1025}, 400),
        ({"username": "alice"}, 400),
        ({"username": ["alice"], "password": PASSWORD}, 400),
    ],
)
async def test_bad_login_input_is_refused_plainly(auth_harness, body, status):
    address = await _auth(auth_harness)
    async with _gateway(address) as (client, _):
        answer = await client.post("/v1/auth/login", json=body)
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["message"]
        assert (await _login(client)).status_code == 200, "bad input does not lock the real account"
