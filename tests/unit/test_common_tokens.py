"""The shared TokenVerifier: odd headers and claims, clock skew, key refresh, outages, the key cache, revocations."""

import asyncio
import base64
import json
import time

import jwt
import pytest

from services.common.tokens import InvalidToken, KeysUnavailable, Revocations, TokenVerifier
from tests.support.clock import FakeClock
from tests.support.keys import AUDIENCE, ISSUER, TestKeys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(keys: TestKeys, header: dict) -> str:
    """A correctly signed token with a header pyjwt itself would refuse to write."""
    payload = keys.token().split(".")[1]
    signing_input = f"{_b64(json.dumps({'alg': 'EdDSA', 'typ': 'at+jwt', **header}).encode())}.{payload}"
    return f"{signing_input}.{_b64(keys.private_key.sign(signing_input.encode()))}"


def _with_claims(keys: TestKeys, **claims) -> str:
    payload = {**jwt.decode(keys.token(), options={"verify_signature": False}), **claims}
    return jwt.encode(payload, keys.private_key, algorithm="EdDSA", headers={"kid": keys.kid, "typ": "at+jwt"})


@pytest.mark.parametrize("kid", [["a", "b"], {"k": 1}, 7, ""])
async def test_non_string_kid_is_unauthenticated_not_a_crash(test_keys, kid):
    with pytest.raises(InvalidToken):
        await test_keys.verifier().verify(_forge(test_keys, {"kid": kid}))


@pytest.mark.parametrize("claims", [{"roles": "admin"}, {"roles": [1]}, {"sub": ""}, {"name": ["x"]}])
async def test_malformed_claims_are_rejected(test_keys, claims):
    with pytest.raises(InvalidToken):
        await test_keys.verifier().verify(_with_claims(test_keys, **claims))


async def test_small_clock_skew_is_tolerated_but_not_large(test_keys):
    now = int(time.time())
    verifier = test_keys.verifier()
    principal = await verifier.verify(test_keys.token(iat=now + 5))
    assert principal.subject == "user-1"
    with pytest.raises(InvalidToken):
        await verifier.verify(test_keys.token(iat=now + 600))


async def test_keys_are_refetched_when_old_so_a_withdrawn_key_stops_working():
    keys = TestKeys("k1")
    published = {"jwks": keys.jwks()}
    fetches = []

    async def source():
        fetches.append(1)
        return published["jwks"]

    clock = FakeClock()
    verifier = TokenVerifier(
        jwks_source=source, issuer=ISSUER, audience=AUDIENCE, min_refresh_seconds=0, max_key_age_seconds=60, clock=clock
    )
    await verifier.verify(keys.token())
    clock.advance(59)
    await verifier.verify(keys.token())
    assert len(fetches) == 1
    published["jwks"] = {"keys": []}
    clock.advance(2)
    with pytest.raises(InvalidToken, match="unknown key"):
        await verifier.verify(keys.token())


async def test_failed_or_malformed_fetch_keeps_known_keys():
    keys = TestKeys("k1")
    answers = [keys.jwks(), ["not", "a", "jwks"]]

    async def source():
        return answers.pop(0) if answers else (_ for _ in ()).throw(ConnectionError("down"))

    verifier = TokenVerifier(
        jwks_source=source, issuer=ISSUER, audience=AUDIENCE, min_refresh_seconds=0, max_key_age_seconds=0
    )
    for _ in range(3):
        assert (await verifier.verify(keys.token())).subject == "user-1"


async def test_keys_marked_for_encryption_are_ignored():
    keys = TestKeys("k1")
    jwks = keys.jwks()
    jwks["keys"][0]["use"] = "enc"

    async def source():
        return jwks

    verifier = TokenVerifier(jwks_source=source, issuer=ISSUER, audience=AUDIENCE, min_refresh_seconds=0)
    with pytest.raises(InvalidToken, match="unknown key"):
        await verifier.verify(keys.token())


async def test_verified_tokens_are_remembered_until_they_expire(test_keys, monkeypatch):
    wall_clock = FakeClock(time.time())
    verifier = TokenVerifier(
        jwks_source=test_keys.jwks_source,
        issuer=ISSUER,
        audience=AUDIENCE,
        min_refresh_seconds=0,
        leeway_seconds=0,
        wall_clock=wall_clock,
    )
    token = test_keys.token(ttl=60)
    first = await verifier.verify(token)
    wall_clock.advance(59)
    with monkeypatch.context() as patch:
        patch.setattr(jwt, "decode", lambda *a, **k: pytest.fail("a remembered token was verified again"))
        assert await verifier.verify(token) == first
    wall_clock.advance(2)

    def expired(*args, **kwargs):  # what PyJWT, on its own clock, answers once `exp` has passed
        raise jwt.ExpiredSignatureError("Signature has expired")

    monkeypatch.setattr(jwt, "decode", expired)
    with pytest.raises(InvalidToken, match="expired"):
        await verifier.verify(token)


async def test_remembered_token_stops_counting_when_its_key_is_withdrawn():
    old, new = TestKeys(kid="old"), TestKeys(kid="new")
    published = [old.jwks()]

    async def source() -> dict:
        return published[-1]

    verifier = TokenVerifier(jwks_source=source, issuer=ISSUER, audience=AUDIENCE, min_refresh_seconds=0)
    token = old.token()
    await verifier.verify(token)
    published.append(new.jwks())
    await verifier.verify(new.token())  # an unknown kid refetches the set, which no longer lists "old"
    with pytest.raises(InvalidToken, match="unknown key"):
        await verifier.verify(token)


async def _down() -> dict:
    raise ConnectionError("auth is down")


async def test_an_unknown_key_while_auth_is_unreachable_is_unavailable_not_invalid():
    keys = TestKeys("k1")
    verifier = TokenVerifier(jwks_source=_down, issuer=ISSUER, audience=AUDIENCE, min_refresh_seconds=0)
    with pytest.raises(KeysUnavailable, match="unreachable"):
        await verifier.verify(keys.token())
    reachable = TokenVerifier(jwks_source=TestKeys("other").jwks_source, issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(InvalidToken, match="unknown key"):
        await reachable.verify(keys.token())


async def test_the_key_cache_lets_a_restart_verify_tokens_while_auth_is_down(tmp_path):
    keys, cache = TestKeys("k1"), tmp_path / "cache" / "auth-keys.json"
    first = TokenVerifier(jwks_source=keys.jwks_source, issuer=ISSUER, audience=AUDIENCE, cache_file=cache)
    await first.verify(keys.token())
    assert json.loads(cache.read_text())["jwks"] == keys.jwks()
    assert not list(cache.parent.glob(".*.tmp")), "no staging file is left behind"
    restarted = TokenVerifier(
        jwks_source=_down, issuer=ISSUER, audience=AUDIENCE, cache_file=cache, min_refresh_seconds=0
    )
    assert (await restarted.verify(keys.token())).subject == "user-1"
    with pytest.raises(InvalidToken, match="invalid token"):
        await restarted.verify(keys.token()[:-4] + "AAAA")  # known key, bad signature: really invalid
    with pytest.raises(KeysUnavailable):
        await restarted.verify(TestKeys("k2").token())


@pytest.mark.parametrize("content", ["", "not json", '{"jwks": 5}', '["a"]'])
async def test_an_unreadable_key_cache_is_ignored(tmp_path, content):
    cache = tmp_path / "auth-keys.json"
    cache.write_text(content)
    keys = TestKeys("k1")
    verifier = TokenVerifier(jwks_source=keys.jwks_source, issuer=ISSUER, audience=AUDIENCE, cache_file=cache)
    assert (await verifier.verify(keys.token())).subject == "user-1"
    assert json.loads(cache.read_text())["jwks"] == keys.jwks()


def _listing(published: dict):
    async def source() -> Revocations:
        return published["list"]

    return source


async def test_revoked_sessions_and_users_are_refused_once_the_list_is_refreshed():
    keys = TestKeys("k1")
    now = int(time.time())
    published = {"list": Revocations()}
    clock = FakeClock()
    verifier = TokenVerifier(
        jwks_source=keys.jwks_source,
        revocation_source=_listing(published),
        revocation_refresh_seconds=15,
        issuer=ISSUER,
        audience=AUDIENCE,
        clock=clock,
    )
    session_token = keys.token("u-1", sid="s-1", iat=now - 5)
    user_token = keys.token("u-2", sid="s-2", iat=now - 5)
    later_token = keys.token("u-2", sid="s-3", iat=now + 1)
    for token in (session_token, user_token, later_token):
        await verifier.verify(token)
    published["list"] = Revocations(sessions={"s-1": now}, users={"u-2": now})
    clock.advance(30)  # twice the refresh interval: the next call waits for the new list
    for token in (session_token, user_token):
        with pytest.raises(InvalidToken, match="log in again"):
            await verifier.verify(token)
    assert (await verifier.verify(later_token)).subject == "u-2", "tokens issued after the revocation still work"
    assert (await verifier.verify(keys.token("u-1", sid="s-9"))).session_id == "s-9"


async def test_an_unreachable_revocation_list_keeps_the_last_one_and_does_not_stall_calls():
    keys = TestKeys("k1")
    now = int(time.time())
    calls = []
    clock = FakeClock()

    async def flaky() -> Revocations:
        calls.append(clock())
        if len(calls) > 1:
            await asyncio.sleep(0)  # an answer that takes a while: callers go on meanwhile
            raise ConnectionError("auth is down")
        return Revocations(users={"u-2": now})

    verifier = TokenVerifier(
        jwks_source=keys.jwks_source,
        revocation_source=flaky,
        revocation_refresh_seconds=10,
        issuer=ISSUER,
        audience=AUDIENCE,
        clock=clock,
    )
    revoked = keys.token("u-2", iat=now - 5)
    for _ in range(20):
        with pytest.raises(InvalidToken, match="log in again"):
            await verifier.verify(revoked)
        assert (await verifier.verify(keys.token("u-1"))).subject == "u-1"
        clock.advance(2)
    assert 2 <= len(calls) <= 40 / 10 + 2, "retried about once per interval, not on every call"


@pytest.mark.parametrize("claims", [{"sid": 5}, {"sid": ["a"]}, {"iat": "yesterday"}])
async def test_malformed_session_claims_are_rejected(test_keys, claims):
    with pytest.raises(InvalidToken):
        await test_keys.verifier().verify(_with_claims(test_keys, **claims))
