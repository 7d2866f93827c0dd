"""Login hardening over real gRPC and PostgreSQL: lockouts, their expiry, equal answers, rehashing."""

import asyncio
import statistics
import time

import grpc
import psycopg
import pytest
from argon2 import extract_parameters
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc

from services.common.channels import open_channel

PASSWORD = "correct horse battery staple"


async def _start(auth_harness, **overrides):
    """Starts a server and returns (stub, address, channel) with a registered user "alice"."""
    _, address = await auth_harness.start(**overrides)
    channel = open_channel(address)
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    await stub.Register(auth_pb2.RegisterRequest(username="alice", password=PASSWORD))
    return stub, address, channel


async def _login(stub, username="alice", password=PASSWORD, forwarded_for=None):
    metadata = (("x-forwarded-for", forwarded_for),) if forwarded_for else ()
    return await stub.Login(auth_pb2.LoginRequest(username=username, password=password), metadata=metadata)


async def _error(awaitable) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await awaitable
    return err.value


def _retry_after(err: grpc.aio.AioRpcError) -> int:
    return int(dict(err.trailing_metadata())["retry-after"])


async def test_account_locks_after_repeated_failures_and_unlocks_when_the_window_passes(auth_harness):
    stub, _, channel = await _start(auth_harness, login_window_seconds=2, login_max_failures_per_account=3)
    async with channel:
        for _ in range(3):
            assert (await _error(_login(stub, password="wrong password"))).code() == grpc.StatusCode.UNAUTHENTICATED
        locked = await _error(_login(stub))
        assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 1 <= _retry_after(locked) <= 2
        assert "try again in" in locked.details()
        assert dict(locked.trailing_metadata()).get("x-request-id")
        await asyncio.sleep(_retry_after(locked) + 0.2)
        assert (await _login(stub)).access_token


async def test_success_clears_the_account_failures(auth_harness):
    stub, _, channel = await _start(auth_harness, login_max_failures_per_account=3)
    async with channel:
        for _ in range(2):
            await _error(_login(stub, password="wrong password"))
        await _login(stub)
        for _ in range(2):
            assert (await _error(_login(stub, password="wrong password"))).code() == grpc.StatusCode.UNAUTHENTICATED
        assert await _login(stub)


async def test_unknown_usernames_lock_like_real_ones(auth_harness):
    stub, _, channel = await _start(auth_harness, login_max_failures_per_account=2)
    async with channel:
        for _ in range(2):
            await _error(_login(stub, username="nobody"))
        assert (await _error(_login(stub, username="NOBODY"))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_address_limit_and_forwarded_for_trust(auth_harness):
    limits = {"login_max_failures_per_address": 3, "login_max_failures_per_account": 100}
    stub, _, channel = await _start(auth_harness, trust_forwarded_for=True, **limits)
    async with channel:
        for i in range(3):
            await _error(_login(stub, username=f"guess{i}", forwarded_for="203.0.113.7"))
        locked = await _error(_login(stub, forwarded_for="198.51.100.1, 203.0.113.7"))
        assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await _login(stub, forwarded_for="203.0.113.8")
    untrusting, _, channel = await _start(auth_harness, **limits)
    async with channel:
        for i in range(3):
            await _error(_login(untrusting, username=f"guess{i}", forwarded_for=f"203.0.113.{i}"))
        locked = await _error(_login(untrusting, forwarded_for="203.0.113.99"))
        assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_hourly_cap_holds_whatever_the_window(auth_harness):
    stub, _, channel = await _start(
        auth_harness,
        login_window_seconds=1,
        login_max_failures_per_account=100,
        login_max_failures_per_account_hour=3,
    )
    async with channel:
        for _ in range(3):
            await _error(_login(stub, password="wrong password"))
        await asyncio.sleep(1.1)
        locked = await _error(_login(stub))
    assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 3500 < _retry_after(locked) <= 3600


async def test_concurrent_attempts_never_exceed_the_limit(auth_harness):
    stub, _, channel = await _start(auth_harness, login_max_failures_per_account=3)
    async with channel:
        results = await asyncio.gather(
            *(_login(stub, password="wrong password") for _ in range(10)), return_exceptions=True
        )
    codes = sorted(r.code().name for r in results)
    assert codes.count("UNAUTHENTICATED") == 3
    assert codes.count("RESOURCE_EXHAUSTED") == 7


async def test_failures_are_shared_by_replicas(auth_harness):
    stub, address, channel = await _start(auth_harness, login_max_failures_per_account=2)
    dsn = auth_harness.settings(address).postgres_dsn
    _, other_address = await auth_harness.start(dsn=dsn, login_max_failures_per_account=2)
    async with channel, open_channel(other_address) as other_channel:
        for _ in range(2):
            await _error(_login(stub, password="wrong password"))
        other = auth_pb2_grpc.AuthServiceStub(other_channel)
        assert (await _error(_login(other))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def _timed_failure(stub, username: str) -> tuple[float, grpc.aio.AioRpcError]:
    start = time.perf_counter()
    err = await _error(_login(stub, username=username, password="wrong password"))
    return time.perf_counter() - start, err


async def test_unknown_user_and_wrong_password_get_the_same_answer_in_about_the_same_time(auth_harness):
    stub, _, channel = await _start(
        auth_harness, login_max_failures_per_account=100, login_max_failures_per_address=100
    )
    async with channel:
        wrong, unknown = [], []
        for i in range(6):
            wrong.append(await _timed_failure(stub, "alice"))
            unknown.append(await _timed_failure(stub, f"nobody{i}"))
    answers = {(err.code(), err.details()) for _, err in wrong + unknown}
    assert answers == {(grpc.StatusCode.UNAUTHENTICATED, "invalid username or password")}
    ratio = statistics.median(t for t, _ in unknown) / statistics.median(t for t, _ in wrong)
    # Generous bounds for a shared CPU; answering unknown users without a hash would give a ratio near 0.1.
    assert 0.6 < ratio < 1.6


async def test_login_rehashes_when_parameters_change(auth_harness):
    _, address, channel = await _start(auth_harness)
    await channel.close()
    dsn = auth_harness.settings(address).postgres_dsn

    def stored_time_cost() -> int:
        with psycopg.connect(dsn) as conn:
            return extract_parameters(conn.execute("SELECT password_hash FROM auth.users").fetchone()[0]).time_cost

    assert stored_time_cost() == 2
    _, stronger = await auth_harness.start(dsn=dsn, hash_time_cost=3)
    async with open_channel(stronger) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        await _error(_login(stub, password="wrong password"))
        assert stored_time_cost() == 2
        assert await _login(stub)
        assert stored_time_cost() == 3
        assert await _login(stub)


async def test_unicode_look_alike_usernames_neither_log_in_nor_escape_the_lockout(auth_harness):
    # PostgreSQL lower-cases "İ" to "i" where Python does not, so "alİce" once reached alice's account
    # while its failures were counted under another key: a way around her lockout.
    stub, _, channel = await _start(auth_harness, login_max_failures_per_account=2)
    async with channel:
        for _ in range(2):
            await _error(_login(stub, password="wrong password"))
        for look_alike in ("alİce", "ALİCE"):
            err = await _error(_login(stub, username=look_alike))
            assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, "invalid username or password")
        assert (await _error(_login(stub))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
