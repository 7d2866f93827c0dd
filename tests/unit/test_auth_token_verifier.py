"""The shared TokenVerifier's hardening: odd headers and claims, clock skew, and key-set refresh."""

import asyncio
import base64
import json
import time

import jwt
import pytest

from services.common.tokens import InvalidToken, TokenVerifier
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

    verifier = TokenVerifier(
        jwks_source=source, issuer=ISSUER, audience=AUDIENCE, min_refresh_seconds=0, max_key_age_seconds=0.05
    )
    await verifier.verify(keys.token())
    await verifier.verify(keys.token())
    assert len(fetches) == 1
    published["jwks"] = {"keys": []}
    await asyncio.sleep(0.1)
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
    verifier = TokenVerifier(
        jwks_source=test_keys.jwks_source, issuer=ISSUER, audience=AUDIENCE, min_refresh_seconds=0, leeway_seconds=0
    )
    token = test_keys.token(ttl=1)
    first = await verifier.verify(token)
    with monkeypatch.context() as patch:
        patch.setattr(jwt, "decode", lambda *a, **k: pytest.fail("a remembered token was verified again"))
        assert await verifier.verify(token) == first
    await asyncio.sleep(1.1)
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
