"""Revocation and auth outages as the catalog sees them, with a real auth server and a real catalog.

A deleted or disabled user, a logged-out session and a reused refresh token stop working at the catalog within
twice the revocation refresh interval (0.2 s here), with no call to auth per request. With auth unreachable the
catalog answers UNAVAILABLE for tokens it cannot check (503 through the gateway), and a catalog restarted while auth
is down still accepts valid tokens thanks to its key cache.
"""

import time
from collections.abc import Awaitable

import grpc
import httpx
import jwt
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc
from tagsmith.catalog.v1 import catalog_pb2

from services.common.channels import bearer, open_channel
from services.gateway.app import create_app
from services.gateway.clients import Backends
from tests.support.gateway_fixtures import gateway_settings
from tests.support.ports import free_port
from tests.support.waiting import eventually

PASSWORD = "correct horse battery staple"
REFRESH_SECONDS = 0.2
# Twice the refresh interval is the promise; the rest is slack for a loaded machine.
BOUND_SECONDS = 2 * REFRESH_SECONDS + 1.5


async def _catalog(catalog_server, auth_address: str, **overrides):
    return await catalog_server(
        identity_from_settings=True,
        auth_addr=auth_address,
        revocations_refresh_seconds=REFRESH_SECONDS,
        jwks_min_refresh_seconds=0,
        **overrides,
    )


async def _list_status(catalog, token: str) -> grpc.StatusCode:
    try:
        await catalog.client(token).ListImages(catalog_pb2.ListImagesRequest(), timeout=10)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def _refused_within_bound(catalog, token: str) -> float:
    """Seconds until the catalog refuses `token` with UNAUTHENTICATED; fails past the bound."""
    started = time.monotonic()
    await eventually(
        lambda: _refused(_list_status(catalog, token)),
        awaiting="the catalog to refuse the revoked token",
        within=BOUND_SECONDS,
        interval=0.01,
    )
    return time.monotonic() - started


async def _refused(status: Awaitable[grpc.StatusCode]) -> bool:
    return await status == grpc.StatusCode.UNAUTHENTICATED


async def _get_me_status(stub, token: str) -> grpc.StatusCode:
    try:
        await stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(token))
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def _session(stub, username: str) -> auth_pb2.TokenPair:
    return await stub.Login(auth_pb2.LoginRequest(username=username, password=PASSWORD))


async def test_a_deleted_users_token_stops_working_at_the_catalog_within_the_bound(
    auth_harness, auth_server, catalog_server
):
    _, address = auth_server
    doomed = await auth_harness.user_token(address, "doomed")
    kept = await auth_harness.user_token(address, "kept")
    catalog = await _catalog(catalog_server, address)
    assert await _list_status(catalog, doomed) == grpc.StatusCode.OK
    await auth_harness.delete_user(address, "doomed")
    elapsed = await _refused_within_bound(catalog, doomed)
    assert elapsed <= BOUND_SECONDS
    assert await _list_status(catalog, kept) == grpc.StatusCode.OK


async def test_logout_ends_only_that_session_everywhere(auth_harness, catalog_server):
    _, address = await auth_harness.start(revocations_refresh_seconds=REFRESH_SECONDS)
    await auth_harness.user_token(address, "frank")
    catalog = await _catalog(catalog_server, address)
    async with open_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        laptop, phone = await _session(stub, "frank"), await _session(stub, "frank")
        await stub.Logout(
            auth_pb2.LogoutRequest(refresh_token=laptop.refresh_token), metadata=bearer(laptop.access_token)
        )
        await _refused_within_bound(catalog, laptop.access_token)
        assert await _list_status(catalog, phone.access_token) == grpc.StatusCode.OK
        await eventually(
            lambda: _refused(_get_me_status(stub, laptop.access_token)),
            awaiting="auth itself to refuse the ended session too",
            within=BOUND_SECONDS,
        )


async def test_a_reused_refresh_token_revokes_its_sessions_access_tokens(auth_harness, auth_server, catalog_server):
    _, address = auth_server
    await auth_harness.user_token(address, "gina")
    catalog = await _catalog(catalog_server, address)
    async with open_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        first = await _session(stub, "gina")
        second = await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token))
        assert (await _error(stub.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token)))).code() == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    await _refused_within_bound(catalog, second.access_token)


async def test_a_disabled_user_is_refused_and_cannot_refresh(auth_harness, auth_server, catalog_server):
    _, address = auth_server
    await auth_harness.user_token(address, "hank")
    catalog = await _catalog(catalog_server, address)
    async with open_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        pair = await _session(stub, "hank")
        await auth_harness.set_disabled(address, "hank", True)
        await _refused_within_bound(catalog, pair.access_token)
        refresh = await _error(stub.Refresh(auth_pb2.RefreshRequest(refresh_token=pair.refresh_token)))
        assert refresh.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_auth_unreachable_means_unavailable_not_logged_out(auth_harness, catalog_server, tmp_path):
    running, address = await auth_harness.start()
    token = await auth_harness.user_token(address, "ivy")
    cache_dir = tmp_path / "auth-cache"
    warm = await _catalog(catalog_server, address, auth_cache_dir=cache_dir)
    assert await _list_status(warm, token) == grpc.StatusCode.OK
    assert (cache_dir / "auth-keys.json").is_file()
    await auth_harness.stop(running)

    assert await _list_status(warm, token) == grpc.StatusCode.OK, "known keys keep working while auth is down"
    cold = await _catalog(catalog_server, address)
    assert await _list_status(cold, token) == grpc.StatusCode.UNAVAILABLE
    restarted = await _catalog(catalog_server, address, auth_cache_dir=cache_dir)
    assert await _list_status(restarted, token) == grpc.StatusCode.OK, "the key cache makes a restart independent"
    assert await _list_status(restarted, token[:-4] + "AAAA") == grpc.StatusCode.UNAUTHENTICATED

    settings = gateway_settings(
        address, catalog_addr=cold.address, inference_addr=f"127.0.0.1:{free_port()}", backend_timeout_seconds=10
    )
    backends = Backends.open(settings)
    transport = httpx.ASGITransport(app=create_app(settings, backends=backends))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as gateway:
        answer = await gateway.get("/v1/images", headers={"Authorization": f"Bearer {token}"})
    await backends.close()
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"].isdigit()


async def _error(awaitable) -> grpc.aio.AioRpcError:
    try:
        await awaitable
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError("the call succeeded")


async def test_the_revocation_list_names_the_ended_session_and_the_deleted_user(auth_harness):
    _, address = await auth_harness.start(access_token_ttl_seconds=600)
    await auth_harness.user_token(address, "jack")
    async with open_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        assert await stub.GetRevocations(auth_pb2.GetRevocationsRequest()) == auth_pb2.Revocations()
        pair = await _session(stub, "jack")
        claims = jwt.decode(pair.access_token, options={"verify_signature": False})
        await stub.Logout(auth_pb2.LogoutRequest(refresh_token=pair.refresh_token), metadata=bearer(pair.access_token))
        await stub.Logout(auth_pb2.LogoutRequest(refresh_token=pair.refresh_token), metadata=bearer(pair.access_token))
        await auth_harness.delete_user(address, "jack")
        listed = await stub.GetRevocations(auth_pb2.GetRevocationsRequest())
    now = time.time()
    (session,) = listed.sessions
    (user,) = listed.users
    assert (session.id, user.id) == (claims["sid"], claims["sub"])
    for entry in (session, user):
        assert claims["iat"] <= entry.revoked_at <= now
        assert now + 600 < entry.expires_at <= now + 600 + 120, "listed until every token it covers has expired"
