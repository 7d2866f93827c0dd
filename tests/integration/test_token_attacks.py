"""Forged, altered and misused tokens are refused by a real downstream service that trusts the real auth server.

The downstream service is the shared server plumbing with a tiny servicer; its AuthInterceptor fetches the
key set from the auth server over gRPC, exactly as catalog and inference do.
"""

import base64
import hashlib
import hmac
import json
import time

import grpc
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc
from tagsmith.inference.v1 import inference_pb2, inference_pb2_grpc

from services.auth.keys import GENERATED_KEY_NAME, load_private_key, private_pem, public_pem, thumbprint
from services.common.channels import bearer, open_channel
from services.common.context import current_principal
from services.common.server import start_server, token_verification
from services.common.settings import ServiceSettings, TokenSettings
from tests.support.auth_fixtures import AuthHarness

ISSUER, AUDIENCE = "tagsmith-auth", "tagsmith"
PASSWORD = "correct horse battery staple"


class _DownstreamSettings(ServiceSettings, TokenSettings):
    pass


class _WhoAmI(inference_pb2_grpc.InferenceServiceServicer):
    """Answers with the length of the caller's subject, so a test can see the principal arrived."""

    async def GetLimits(self, request, context):
        return inference_pb2.Limits(max_bytes=len(current_principal().subject))


async def _start_downstream(auth_address: str):
    settings = _DownstreamSettings(host="127.0.0.1", port=0, auth_addr=auth_address, jwks_min_refresh_seconds=0)
    interceptor, channel = token_verification(settings)
    running = await start_server(
        settings,
        register=lambda s: inference_pb2_grpc.add_InferenceServiceServicer_to_server(_WhoAmI(), s),
        service_names=[inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name],
        interceptors=[interceptor],
    )
    running.on_stop(channel.close)
    return running


class Downstream:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = inference_pb2_grpc.InferenceServiceStub(channel)

    async def call(self, token: str) -> grpc.StatusCode:
        try:
            await self._stub.GetLimits(inference_pb2.GetLimitsRequest(), metadata=bearer(token))
        except grpc.aio.AioRpcError as err:
            return err.code()
        return grpc.StatusCode.OK


# The attacks only read, so they share one auth server and one downstream service (creating databases is slow).
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(postgres_admin_dsn, tmp_path_factory):
    """(auth address, a real access token pair, the auth signing key, a Downstream client)."""
    harness = AuthHarness(postgres_admin_dsn, tmp_path_factory.mktemp("token-attacks"))
    _, address = await harness.start()
    pair = await _register_and_login(address, "alice")
    key_pem = (harness.settings(address).data_dir / GENERATED_KEY_NAME).read_bytes()
    downstream = await _start_downstream(address)
    async with open_channel(f"127.0.0.1:{downstream.port}", retries=False) as channel:
        yield address, pair, load_private_key(key_pem, source="test"), Downstream(channel)
    await downstream.stop(0)
    await harness.stop_all()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(postgres_admin_dsn, tmp_path_factory):
    """For the rotation tests, which restart auth servers with other keys."""
    harness = AuthHarness(postgres_admin_dsn, tmp_path_factory.mktemp("key-rotation"))
    yield harness
    await harness.stop_all()


async def _register_and_login(address: str, username: str) -> auth_pb2.TokenPair:
    async with open_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        await stub.Register(auth_pb2.RegisterRequest(username=username, password=PASSWORD))
        return await stub.Login(auth_pb2.LoginRequest(username=username, password=PASSWORD))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(real_token: str, **changes) -> dict:
    claims = jwt.decode(real_token, options={"verify_signature": False})
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(key: Ed25519PrivateKey, claims: dict, **header) -> str:
    headers = {"kid": thumbprint(key.public_key()), "typ": "at+jwt", **header}
    return jwt.encode(claims, key, algorithm="EdDSA", headers=headers)


def _unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"


async def test_real_token_is_accepted(setup):
    _, pair, _, downstream = setup
    assert await downstream.call(pair.access_token) == grpc.StatusCode.OK


async def test_alg_none_is_rejected(setup):
    _, pair, key, downstream = setup
    for alg in ("none", "None", "NONE"):
        header = {"alg": alg, "typ": "at+jwt", "kid": thumbprint(key.public_key())}
        assert await downstream.call(_unsigned(header, _claims(pair.access_token))) == grpc.StatusCode.UNAUTHENTICATED


async def test_hs256_signed_with_the_public_key_is_rejected(setup):
    _, pair, key, downstream = setup
    public = key.public_key()
    header = {"alg": "HS256", "typ": "at+jwt", "kid": thumbprint(public)}
    secrets_tried = [public_pem(public), public.public_bytes_raw(), thumbprint(public).encode()]
    for secret in secrets_tried:
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(pair.access_token)).encode())}"
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert await downstream.call(f"{signing_input}.{_b64(signature)}") == grpc.StatusCode.UNAUTHENTICATED


async def test_expired_token_is_rejected(setup):
    _, pair, key, downstream = setup
    now = int(time.time())
    claims = _claims(pair.access_token, iat=now - 1000, exp=now - 120)
    assert await downstream.call(_sign(key, claims)) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("change", [{"aud": "someone-else"}, {"aud": ["someone-else"]}, {"iss": "evil-auth"}])
async def test_wrong_audience_or_issuer_is_rejected(setup, change):
    _, pair, key, downstream = setup
    assert await downstream.call(_sign(key, _claims(pair.access_token, **change))) == grpc.StatusCode.UNAUTHENTICATED


async def test_tampered_payload_is_rejected(setup):
    _, pair, _, downstream = setup
    header, _, signature = pair.access_token.split(".")
    payload = _b64(json.dumps(_claims(pair.access_token, roles=["admin", "user"])).encode())
    assert await downstream.call(f"{header}.{payload}.{signature}") == grpc.StatusCode.UNAUTHENTICATED


async def test_unknown_kid_is_rejected(setup):
    _, pair, key, downstream = setup
    for kid in ("no-such-key", "../../etc/passwd", ""):
        token = _sign(key, _claims(pair.access_token), kid=kid)
        assert await downstream.call(token) == grpc.StatusCode.UNAUTHENTICATED


async def test_token_signed_by_another_key_is_rejected(setup):
    _, pair, key, downstream = setup
    attacker = Ed25519PrivateKey.generate()
    claims = _claims(pair.access_token, roles=["admin"])
    for kid in (thumbprint(key.public_key()), thumbprint(attacker.public_key())):
        assert await downstream.call(_sign(attacker, claims, kid=kid)) == grpc.StatusCode.UNAUTHENTICATED


async def test_refresh_token_is_not_an_access_token(setup):
    _, pair, _, downstream = setup
    assert await downstream.call(pair.refresh_token) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("typ", [None, "JWT", "refresh+jwt"])
async def test_token_of_another_type_is_rejected(setup, typ):
    _, pair, key, downstream = setup
    token = jwt.encode(
        _claims(pair.access_token),
        key,
        algorithm="EdDSA",
        headers={"kid": thumbprint(key.public_key()), "typ": typ},
    )
    assert await downstream.call(token) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "jti", "iss", "aud"])
async def test_token_missing_a_required_claim_is_rejected(setup, missing):
    _, pair, key, downstream = setup
    claims = _claims(pair.access_token)
    del claims[missing]
    assert await downstream.call(_sign(key, claims)) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "Bearer", "e30.e30.", "e30.e30.e30", "W10.e30.e30"])
async def test_malformed_tokens_are_rejected(setup, token):
    *_, downstream = setup
    assert await downstream.call(token) == grpc.StatusCode.UNAUTHENTICATED


async def test_key_rotation_keeps_old_tokens_valid_and_downstream_learns_the_new_key(harness, tmp_path):
    old_key, new_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    (tmp_path / "old.pem").write_bytes(private_pem(old_key))
    (tmp_path / "new.pem").write_bytes(private_pem(new_key))
    (tmp_path / "old.pub.pem").write_bytes(public_pem(old_key.public_key()))
    first, address = await harness.start(jwt_private_key_file=tmp_path / "old.pem")
    dsn, port = harness.settings(address).postgres_dsn, first.port
    old_token = (await _register_and_login(address, "alice")).access_token
    downstream = await _start_downstream(address)
    try:
        async with open_channel(f"127.0.0.1:{downstream.port}", retries=False) as channel:
            client = Downstream(channel)
            assert await client.call(old_token) == grpc.StatusCode.OK

            # Rotate: the new key signs, the old one stays published as an extra key.
            await harness.stop(first)
            await harness.start(
                dsn=dsn,
                port=port,
                jwt_private_key_file=tmp_path / "new.pem",
                jwt_extra_public_keys_file=tmp_path / "old.pub.pem",
            )
            new_token = await _login(address, "alice")
            assert jwt.get_unverified_header(new_token)["kid"] == thumbprint(new_key.public_key())
            assert await client.call(new_token) == grpc.StatusCode.OK  # unknown kid: refetched the keys
            assert await client.call(old_token) == grpc.StatusCode.OK
            assert await _fresh_downstream_accepts(address, old_token)
    finally:
        await downstream.stop(0)


async def test_a_key_no_longer_published_is_no_longer_trusted(harness, tmp_path):
    old_key = Ed25519PrivateKey.generate()
    (tmp_path / "old.pem").write_bytes(private_pem(old_key))
    first, address = await harness.start(jwt_private_key_file=tmp_path / "old.pem")
    dsn, port = harness.settings(address).postgres_dsn, first.port
    old_token = (await _register_and_login(address, "alice")).access_token
    await harness.stop(first)
    await harness.start(dsn=dsn, port=port)
    assert not await _fresh_downstream_accepts(address, old_token)
    assert await _fresh_downstream_accepts(address, await _login(address, "alice"))


async def _login(address: str, username: str) -> str:
    async with open_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        # wait_for_ready: right after a restart on the same port, the shared subchannel may still be backing off.
        request = auth_pb2.LoginRequest(username=username, password=PASSWORD)
        return (await stub.Login(request, wait_for_ready=True)).access_token


async def _fresh_downstream_accepts(auth_address: str, token: str) -> bool:
    downstream = await _start_downstream(auth_address)
    try:
        async with open_channel(f"127.0.0.1:{downstream.port}", retries=False) as channel:
            return await Downstream(channel).call(token) == grpc.StatusCode.OK
    finally:
        await downstream.stop(0)
