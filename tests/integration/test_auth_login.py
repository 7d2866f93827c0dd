"""Login hardening over real gRPC and PostgreSQL: throttling per account and address, what it never locks, equal
answers, registrations per address, rehashing."""

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
WRONG = "wrong password"
OWNER, ATTACKER = "198.51.100.10", "203.0.113.66"


async def _start(auth_harness, **overrides):
    """Starts a server trusting the claimed client address; returns (stub, address, channel) with user "alice"
    registered (internally, so no address is familiar to her yet)."""
    overrides.setdefault("trust_forwarded_for", True)
    _, address = await auth_harness.start(**overrides)
    channel = open_channel(address)
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    await stub.Register(auth_pb2.RegisterRequest(username="alice", password=PASSWORD))
    return stub, address, channel


async def _login(stub, username="alice", password=PASSWORD, *, address=ATTACKER, public=True):
    request = auth_pb2.LoginRequest(username=username, password=password, client_address=address, public_api=public)
    return await stub.Login(request)


async def _error(awaitable) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await awaitable
    return err.value


async def _fail(stub, times: int, **kwargs) -> None:
    for _ in range(times):
        assert (await _error(_login(stub, password=WRONG, **kwargs))).code() == grpc.StatusCode.UNAUTHENTICATED


def _retry_after(err: grpc.aio.AioRpcError) -> int:
    return int(dict(err.trailing_metadata())["retry-after"])


async def test_one_address_locks_only_itself_out_of_the_account_until_the_window_passes(auth_harness):
    stub, address, channel = await _start(
        auth_harness, login_window_seconds=2, login_max_failures_per_account_address=3
    )
    async with channel:
        await _fail(stub, 3)
        locked = await _error(_login(stub))
        assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 1 <= _retry_after(locked) <= 2
        assert locked.details() == "too many failed logins for this account from your address; try again in 1 minute"
        assert dict(locked.trailing_metadata()).get("x-request-id")
        assert await _login(stub, address=OWNER), "the owner, elsewhere, is not refused"
        await auth_harness.pass_time(address, _retry_after(locked) + 0.2)
        assert (await _login(stub)).access_token


async def test_a_throttled_answer_says_nothing_about_the_password(auth_harness):
    stub, _, channel = await _start(auth_harness, login_max_failures_per_account_address=2)
    async with channel:
        await _fail(stub, 2)
        right, wrong = await _error(_login(stub)), await _error(_login(stub, password=WRONG))
    assert (right.code(), right.details()) == (wrong.code(), wrong.details())
    assert right.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "15 minutes" in right.details()


async def test_success_clears_the_pair_but_not_failures_from_elsewhere(auth_harness):
    stub, _, channel = await _start(
        auth_harness, login_max_failures_per_account_address=3, login_max_failures_per_account_hour=6
    )
    async with channel:
        await _fail(stub, 2, address=OWNER)
        await _login(stub, address=OWNER)
        await _fail(stub, 2, address=OWNER)
        assert await _login(stub, address=OWNER)
        await _fail(stub, 2, address=ATTACKER)
        # Six failures for alice this hour, from anywhere: strangers are refused, her own address is not.
        stranger = await _error(_login(stub, address="192.0.2.1"))
        assert stranger.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await _login(stub, address=OWNER)


async def test_guessing_from_many_addresses_is_capped_per_hour_but_never_locks_the_owner_out(auth_harness):
    stub, address, channel = await _start(
        auth_harness, login_window_seconds=1, login_max_failures_per_account_hour=3, login_max_failures_per_address=100
    )
    async with channel:
        await _login(stub, address=OWNER)  # where alice usually logs in
        for i in range(3):
            await _fail(stub, 1, address=f"203.0.113.{i}")
        await auth_harness.pass_time(address, 1.1)
        locked = await _error(_login(stub, address="203.0.113.200"))
        assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 3500 < _retry_after(locked) <= 3600
        assert "60 minutes" in locked.details()
        assert await _login(stub, address=OWNER)


async def test_one_address_failing_on_many_accounts_is_refused_only_where_it_never_logged_in(auth_harness):
    # Under `make run` every client is 127.0.0.1: failures there must not lock every account from it.
    stub, _, channel = await _start(auth_harness, login_max_failures_per_address=3)
    async with channel:
        await _login(stub, address=ATTACKER)
        await stub.Register(auth_pb2.RegisterRequest(username="bob", password=PASSWORD))
        for i in range(3):
            await _error(_login(stub, username=f"guess{i}", password=WRONG))
        assert (await _error(_login(stub, "bob"))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await _login(stub, address=OWNER, username="bob")
        assert await _login(stub), "alice has logged in from this address before"


async def test_unknown_usernames_lock_like_real_ones(auth_harness):
    stub, _, channel = await _start(auth_harness, login_max_failures_per_account_address=2)
    async with channel:
        for _ in range(2):
            await _error(_login(stub, username="nobody"))
        assert (await _error(_login(stub, username="NOBODY"))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_claimed_addresses_count_only_where_trusted(auth_harness):
    untrusting, _, channel = await _start(
        auth_harness, trust_forwarded_for=False, login_max_failures_per_account_address=3
    )
    async with channel:
        for i in range(3):
            await _error(_login(untrusting, password=WRONG, address=f"203.0.113.{i}"))
        locked = await _error(_login(untrusting, address="203.0.113.99"))
    assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("claimed", ["not-an-ip", "10.0.0.1\x00", "1" * 10_000, "", "::1]:80"])
async def test_garbage_client_addresses_fall_back_to_the_peer(auth_harness, claimed):
    stub, _, channel = await _start(auth_harness, login_max_failures_per_account_address=2)
    async with channel:
        await _fail(stub, 2, address=claimed)
        locked = await _error(_login(stub, address="127.0.0.1"))
    assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_the_public_api_can_neither_log_in_as_nor_lock_a_service_account(auth_harness):
    stub, address, channel = await _start(auth_harness, login_max_failures_per_account_address=2)
    service = await auth_harness.service_account(address, "catalog-worker")
    async with channel:
        refused = await _error(_login(stub, service.username, service.password))
        assert (refused.code(), refused.details()) == (grpc.StatusCode.UNAUTHENTICATED, "invalid username or password")
        await _fail(stub, 1, username=service.username)
        locked = await _error(_login(stub, service.username, service.password))
        assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        internal = await _login(stub, service.username, service.password, address="", public=False)
        assert internal.access_token


async def test_internal_logins_are_throttled_apart_from_public_ones(auth_harness):
    # The gateway's anonymous user logs in internally: strangers' public failures never touch that count.
    stub, _, channel = await _start(auth_harness, login_max_failures_per_account_address=2)
    async with channel:
        await _fail(stub, 2, address=ATTACKER)
        assert await _login(stub, address="", public=False)
        await _fail(stub, 2, address="", public=False)
        assert (await _error(_login(stub, address="", public=False))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await _login(stub, address=OWNER)


async def test_concurrent_attempts_never_exceed_the_limit(auth_harness):
    stub, _, channel = await _start(auth_harness, login_max_failures_per_account_address=3)
    async with channel:
        results = await asyncio.gather(*(_login(stub, password=WRONG) for _ in range(10)), return_exceptions=True)
    codes = sorted(r.code().name for r in results)
    assert codes.count("UNAUTHENTICATED") == 3
    assert codes.count("RESOURCE_EXHAUSTED") == 7


async def test_failures_are_shared_by_replicas(auth_harness):
    stub, address, channel = await _start(auth_harness, login_max_failures_per_account_address=2)
    dsn = auth_harness.settings(address).postgres_dsn
    _, other_address = await auth_harness.start(
        dsn=dsn, login_max_failures_per_account_address=2, trust_forwarded_for=True
    )
    async with channel, open_channel(other_address) as other_channel:
        await _fail(stub, 2)
        other = auth_pb2_grpc.AuthServiceStub(other_channel)
        assert (await _error(_login(other))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_disabled_account_says_so_only_to_its_password(auth_harness):
    stub, address, channel = await _start(auth_harness)
    async with channel:
        await auth_harness.set_disabled(address, "alice", True)
        wrong = await _error(_login(stub, password=WRONG))
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
        right = await _error(_login(stub))
        assert (right.code(), right.details()) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "this account is disabled; ask an administrator",
        )
        await auth_harness.set_disabled(address, "alice", False)
        assert await _login(stub)


async def _register(stub, username: str, address: str, *, public: bool = True):
    request = auth_pb2.RegisterRequest(username=username, password=PASSWORD, client_address=address, public_api=public)
    return await stub.Register(request)


async def test_registrations_are_limited_per_address(auth_harness):
    stub, address, channel = await _start(auth_harness, register_max_per_address=2, register_window_seconds=2)
    async with channel:
        await _register(stub, "first", ATTACKER)
        taken = await _error(_register(stub, "first", ATTACKER))  # attempts count, taken names included
        assert taken.code() == grpc.StatusCode.ALREADY_EXISTS
        refused = await _error(_register(stub, "third", ATTACKER))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.details() == "too many accounts were registered from your address; try again in 1 minute"
        assert 1 <= _retry_after(refused) <= 2
        assert await _register(stub, "other", OWNER), "another address is not limited"
        assert await _register(stub, "operator", ATTACKER, public=False), "internal callers are not limited"
        invalid = await _error(_register(stub, "x", OWNER))  # refused input does not count
        assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert await _register(stub, "another", OWNER)
        await auth_harness.pass_time(address, _retry_after(refused) + 0.2)
        assert await _register(stub, "third", ATTACKER)


async def test_the_address_an_account_registered_from_is_familiar(auth_harness):
    stub, _, channel = await _start(auth_harness, login_max_failures_per_account_hour=1)
    async with channel:
        await _register(stub, "carol", OWNER)
        await _fail(stub, 1, username="carol", address=ATTACKER)
        assert (await _error(_login(stub, "carol", address="192.0.2.9"))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await _login(stub, "carol", address=OWNER)


async def _timed_failure(stub, username: str) -> tuple[float, grpc.aio.AioRpcError]:
    start = time.perf_counter()
    err = await _error(_login(stub, username=username, password=WRONG))
    return time.perf_counter() - start, err


async def test_unknown_user_and_wrong_password_get_the_same_answer_in_about_the_same_time(auth_harness):
    stub, _, channel = await _start(
        auth_harness, login_max_failures_per_account_address=100, login_max_failures_per_address=100
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
        await _error(_login(stub, password=WRONG))
        assert stored_time_cost() == 2
        assert await _login(stub)
        assert stored_time_cost() == 3
        assert await _login(stub)


async def test_unicode_look_alike_usernames_neither_log_in_nor_escape_the_lockout(auth_harness):
    # PostgreSQL lower-cases "İ" to "i" where Python does not, so "alİce" once reached alice's account
    # while its failures were counted under another key: a way around her lockout.
    stub, _, channel = await _start(auth_harness, login_max_failures_per_account_address=2)
    async with channel:
        await _fail(stub, 2)
        for look_alike in ("alİce", "ALİCE"):
            err = await _error(_login(stub, username=look_alike))
            assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, "invalid username or password")
        assert (await _error(_login(stub))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_concurrent_registrations_from_one_address_never_exceed_the_limit(auth_harness):
    stub, _, channel = await _start(auth_harness, register_max_per_address=3)
    async with channel:
        results = await asyncio.gather(
            *(_register(stub, f"racer{i}", ATTACKER) for i in range(8)), return_exceptions=True
        )
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(results) - len(refused) == 3
    assert {r.code() for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
