"""Username and password rules, argon2id parameters, and the bounded hashing pool."""

import asyncio
import threading
import time

import pytest
from argon2 import extract_parameters

from services.auth.passwords import (
    HashParameters,
    InvalidCredentials,
    PasswordHasher,
    check_password,
    check_username,
    username_key,
)

OWASP = HashParameters(memory_kib=19 * 1024, time_cost=2, parallelism=1)


class _Spy:
    """Wraps an argon2 hasher, replacing its hash method (the real one has read-only slots)."""

    def __init__(self, argon, hash_fn) -> None:
        self._argon = argon
        self.hash = hash_fn

    def __getattr__(self, name):
        return getattr(self._argon, name)


@pytest.mark.parametrize("name", ["bob", "Alice.Smith", "x_y-z.1", "a" * 32])
def test_valid_usernames(name):
    assert check_username(name) == name


@pytest.mark.parametrize(
    ("name", "rule"),
    [("ab", "3 to 32"), ("a" * 33, "3 to 32"), ("bob smith", "letters"), ("bøb", "letters"), ("bob/..", "letters")],
)
def test_invalid_usernames_name_the_rule(name, rule):
    with pytest.raises(InvalidCredentials, match=rule):
        check_username(name)


def test_usernames_compare_case_insensitively():
    assert username_key("Alice") == username_key("aLICE")


def test_password_length_bounds():
    assert check_password("12345678") == "12345678"
    assert check_password("p" * 256) == "p" * 256
    for bad in ("1234567", "p" * 257):
        with pytest.raises(InvalidCredentials, match="8 to 256"):
            check_password(bad)


def test_password_is_unicode_normalized():
    # "é" as one code point and as "e" plus a combining accent is the same password.
    assert check_password("caf\u00e9-latte") == check_password("cafe\u0301-latte")


async def test_hash_uses_argon2id_with_owasp_parameters_and_verifies():
    hasher = PasswordHasher(OWASP, max_concurrent=2)
    try:
        hashed = await hasher.hash("correct horse")
        params = extract_parameters(hashed)
        assert hashed.startswith("$argon2id$")
        assert (params.memory_cost, params.time_cost, params.parallelism) == (19 * 1024, 2, 1)
        assert await hasher.verify(hashed, "correct horse")
        assert not await hasher.verify(hashed, "wrong horse")
        assert not await hasher.verify("not a hash", "correct horse")
        assert not await hasher.verify(None, "correct horse")
    finally:
        hasher.close()


async def test_needs_rehash_when_parameters_change():
    old = PasswordHasher(OWASP, max_concurrent=1)
    new = PasswordHasher(HashParameters(memory_kib=19 * 1024, time_cost=3, parallelism=1), max_concurrent=1)
    try:
        hashed = await old.hash("correct horse")
        assert not old.needs_rehash(hashed)
        assert new.needs_rehash(hashed)
        assert new.needs_rehash("garbage")
    finally:
        old.close()
        new.close()


async def test_concurrent_hashes_never_exceed_the_limit_and_run_off_the_loop():
    hasher = PasswordHasher(OWASP, max_concurrent=2)
    active, peak, lock = 0, 0, threading.Lock()
    real_hash = hasher._argon.hash

    def counting_hash(password: str) -> str:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            return real_hash(password)
        finally:
            with lock:
                active -= 1

    hasher._argon = _Spy(hasher._argon, counting_hash)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(hasher.hash(f"password-{i}") for i in range(8)))
    finally:
        tick_task.cancel()
        hasher.close()
    assert peak == 2
    assert ticks > 5  # the event loop kept running while hashes were computed


async def test_cancelled_waiter_never_starts_hashing():
    hasher = PasswordHasher(OWASP, max_concurrent=1)
    calls = []
    real_hash = hasher._argon.hash
    hasher._argon = _Spy(hasher._argon, lambda password: calls.append(password) or real_hash(password))
    try:
        first = asyncio.create_task(hasher.hash("first-password"))
        await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(hasher.hash("second-password"), timeout=0.001)
        await first
        await asyncio.sleep(0.1)
    finally:
        hasher.close()
    assert calls == ["first-password"]


async def test_unknown_user_costs_about_as_much_as_a_wrong_password():
    hasher = PasswordHasher(OWASP, max_concurrent=1)
    try:
        await hasher.warm_up()
        hashed = await hasher.hash("correct horse")
        start = time.perf_counter()
        for _ in range(3):
            await hasher.verify(hashed, "wrong horse")
        wrong = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(3):
            await hasher.verify(None, "wrong horse")
        unknown = time.perf_counter() - start
    finally:
        hasher.close()
    # Generous bounds (the CPU is shared); without the dummy hash the ratio would be near 0.
    assert 0.3 < unknown / wrong < 3.0
