"""The auth service over real gRPC and PostgreSQL: register, log in, refresh, log out, GetMe, public keys."""

import asyncio
import json
import logging
import uuid

import grpc
import jwt
import psycopg
import pytest
import pytest_asyncio
from argon2 import extract_parameters
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc

from services.common.channels import bearer, open_channel
from tests.support.auth_fixtures import AuthHarness

PASSWORD = "correct horse battery staple"

# One server for the module (creating databases is slow); every test uses its own usernames.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(postgres_admin_dsn, tmp_path_factory):
    harness = AuthHarness(postgres_admin_dsn, tmp_path_factory.mktemp("auth-service"))
    yield harness
    await harness.stop_all()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def address(harness) -> str:
    return (await harness.start())[1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stub(address):
    async with open_channel(address) as channel:
        yield auth_pb2_grpc.AuthServiceStub(channel)


@pytest.fixture
def name() -> str:
    """A username no other test uses."""
    return f"u{uuid.uuid4().hex[:12]}"


async def _register(stub, username: str, password: str = PASSWORD) -> auth_pb2.User:
    return await stub.Register(auth_pb2.RegisterRequest(username=username, password=password))


async def _login(stub, username: str, password: str = PASSWORD) -> auth_pb2.TokenPair:
    return await stub.Login(auth_pb2.LoginRequest(username=username, password=password))


async def _refresh(stub, pair: auth_pb2.TokenPair) -> auth_pb2.TokenPair:
    return await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=pair.refresh_token))


async def _error(awaitable) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await awaitable
    return err.value


async def test_register_login_and_get_me(stub, name):
    user = await _register(stub, name.upper())
    assert (user.username, list(user.roles)) == (name.upper(), ["user"])
    assert user.id and user.created_at.seconds > 0
    pair = await _login(stub, name)
    assert pair.token_type == "Bearer"
    assert (pair.expires_in, pair.refresh_expires_in) == (900, 30 * 86400)
    me = await stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(pair.access_token))
    assert (me.id, me.username) == (user.id, name.upper())
    claims = jwt.decode(pair.access_token, options={"verify_signature": False})
    assert (claims["sub"], claims["name"], claims["roles"]) == (user.id, name.upper(), ["user"])


@pytest.mark.parametrize(
    ("username", "password", "rule"),
    [("al", PASSWORD, "3 to 32"), ("al ice", PASSWORD, "letters"), ("alice", "short", "8 to 256")],
)
async def test_register_rejects_invalid_input_naming_the_rule(stub, username, password, rule):
    err = await _error(_register(stub, username, password))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rule in err.details()


async def test_usernames_are_unique_case_insensitively(stub, name):
    await _register(stub, name)
    err = await _error(_register(stub, name.upper()))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_concurrent_registrations_of_one_name_create_one_user(stub, name):
    spellings = (name, name.upper(), name.capitalize(), name.swapcase().capitalize())
    results = await asyncio.gather(*(_register(stub, n) for n in spellings), return_exceptions=True)
    assert sum(isinstance(r, auth_pb2.User) for r in results) == 1
    assert all(r.code() == grpc.StatusCode.ALREADY_EXISTS for r in results if isinstance(r, grpc.aio.AioRpcError))


async def test_password_stored_as_argon2id_never_in_clear(stub, harness, address, name):
    await _register(stub, name)
    with psycopg.connect(harness.settings(address).postgres_dsn) as conn:
        (stored,) = conn.execute("SELECT password_hash FROM auth.users WHERE username = %s", (name,)).fetchone()
    assert PASSWORD not in stored
    params = extract_parameters(stored)
    assert stored.startswith("$argon2id$") and params.memory_cost >= 19456 and params.time_cost >= 2


async def test_refresh_rotates_and_returns_a_new_pair(stub, name):
    await _register(stub, name)
    first = await _login(stub, name)
    second = await _refresh(stub, first)
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    me = await stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(second.access_token))
    assert me.username == name


async def test_reusing_a_refresh_token_revokes_the_whole_family(stub, name):
    await _register(stub, name)
    first = await _login(stub, name)
    other_session = await _login(stub, name)
    second = await _refresh(stub, first)
    err = await _error(_refresh(stub, first))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "already used" in err.details()
    err = await _error(_refresh(stub, second))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "ended" in err.details()
    assert await _refresh(stub, other_session)


async def test_concurrent_use_of_one_refresh_token_succeeds_at_most_once(stub, name):
    await _register(stub, name)
    pair = await _login(stub, name)
    results = await asyncio.gather(*(_refresh(stub, pair) for _ in range(5)), return_exceptions=True)
    assert sum(isinstance(r, auth_pb2.TokenPair) for r in results) == 1


@pytest.mark.parametrize("token", ["", "made-up-token", "x" * 10_000])
async def test_unknown_refresh_tokens_are_unauthenticated(stub, token):
    err = await _error(stub.Refresh(auth_pb2.RefreshRequest(refresh_token=token)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_refresh_token_expires(harness, name):
    _, address = await harness.start(refresh_token_ttl_seconds=60)
    async with open_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        await _register(stub, name)
        pair = await _login(stub, name)
        assert pair.refresh_expires_in == 60
        # Age the token in the database rather than waiting a minute.
        with psycopg.connect(harness.settings(address).postgres_dsn) as conn:
            conn.execute("UPDATE auth.refresh_tokens SET expires_at = now() - interval '1 second'")
        err = await _error(_refresh(stub, pair))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in err.details()


async def test_logout_revokes_the_session_and_is_idempotent(stub, name):
    await _register(stub, name)
    pair = await _login(stub, name)
    other_session = await _login(stub, name)
    request = auth_pb2.LogoutRequest(refresh_token=pair.refresh_token)
    await stub.Logout(request, metadata=bearer(pair.access_token))
    await stub.Logout(request, metadata=bearer(pair.access_token))
    err = await _error(_refresh(stub, pair))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await _refresh(stub, other_session)


async def test_logout_cannot_end_another_users_session(stub, name):
    await _register(stub, name)
    await _register(stub, f"{name}-other")
    victim = await _login(stub, name)
    attacker = await _login(stub, f"{name}-other")
    await stub.Logout(
        auth_pb2.LogoutRequest(refresh_token=victim.refresh_token), metadata=bearer(attacker.access_token)
    )
    assert await _refresh(stub, victim)


async def test_logout_needs_a_refresh_token(stub, name):
    await _register(stub, name)
    pair = await _login(stub, name)
    err = await _error(stub.Logout(auth_pb2.LogoutRequest(), metadata=bearer(pair.access_token)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_token_required_for_get_me_and_logout(stub):
    for call in (stub.GetMe(auth_pb2.GetMeRequest()), stub.Logout(auth_pb2.LogoutRequest(refresh_token="x"))):
        assert (await _error(call)).code() == grpc.StatusCode.UNAUTHENTICATED
    err = await _error(stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer("not-a-jwt")))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_get_me_for_a_deleted_user_is_not_found(stub, harness, address, name):
    await _register(stub, name)
    pair = await _login(stub, name)
    with psycopg.connect(harness.settings(address).postgres_dsn) as conn:
        conn.execute("DELETE FROM auth.users WHERE username = %s", (name,))
    err = await _error(stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(pair.access_token)))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert (await _error(_refresh(stub, pair))).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_public_keys_list_the_signing_key(stub, name):
    await _register(stub, name)
    pair = await _login(stub, name)
    jwks = json.loads((await stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest())).jwks_json)
    kid = jwt.get_unverified_header(pair.access_token)["kid"]
    assert [key["kid"] for key in jwks["keys"]] == [kid]
    assert jwks["keys"][0]["kty"] == "OKP" and "d" not in jwks["keys"][0]


async def test_passwords_and_tokens_never_reach_the_logs(stub, name, caplog):
    caplog.set_level(logging.DEBUG)
    await _register(stub, name)
    await _error(_login(stub, name, "a wrong password"))
    pair = await _login(stub, name)
    second = await _refresh(stub, pair)
    await _error(_refresh(stub, pair))
    await stub.Logout(auth_pb2.LogoutRequest(refresh_token=second.refresh_token), metadata=bearer(second.access_token))
    logged = caplog.text + "".join(str(vars(record)) for record in caplog.records)
    assert "logged in" in logged and "login failed" in logged
    for secret in (PASSWORD, "a wrong password", pair.access_token, pair.refresh_token, second.refresh_token):
        assert secret not in logged


@pytest.mark.parametrize("username", ["", "nul\x00byte", "x" * 10_000, "ünïcode"])
async def test_login_with_a_malformed_username_is_just_a_failed_login(stub, username):
    err = await _error(_login(stub, username, "any password at all"))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, "invalid username or password")
