"""Signing keys: thumbprints, loading from the environment, files and directories, and local generation."""

import base64
import json
import stat

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.auth.config import Settings
from services.auth.issuer import TokenIssuer, new_refresh_token, refresh_token_hash
from services.auth.keys import (
    GENERATED_KEY_NAME,
    KeyConfigError,
    KeySet,
    load_keyset,
    private_pem,
    public_pem,
    thumbprint,
)
from services.common.tokens import parse_jwks


def _settings(tmp_path, **values) -> Settings:
    return Settings(data_dir=tmp_path / "data", **values)


def test_thumbprint_matches_rfc_8037_example():
    # RFC 8037, appendix A.2 and A.3: an Ed25519 public key and its RFC 7638 thumbprint.
    x = base64.urlsafe_b64decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    assert thumbprint(Ed25519PublicKey.from_public_bytes(x)) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_local_run_generates_a_private_key_once_with_mode_0600(tmp_path):
    first = load_keyset(_settings(tmp_path))
    path = tmp_path / "data" / GENERATED_KEY_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keyset(_settings(tmp_path)).kid == first.kid


def test_key_from_environment_wins_over_file(tmp_path):
    env_key, file_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(private_pem(file_key))
    both = load_keyset(
        _settings(tmp_path, jwt_private_key=private_pem(env_key).decode(), jwt_private_key_file=key_file)
    )
    assert both.kid == thumbprint(env_key.public_key())
    assert load_keyset(_settings(tmp_path, jwt_private_key_file=key_file)).kid == thumbprint(file_key.public_key())
    assert not (tmp_path / "data").exists()


def test_non_ed25519_or_garbage_keys_are_refused(tmp_path):
    ec_pem = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyConfigError, match="Ed25519"):
        load_keyset(_settings(tmp_path, jwt_private_key=ec_pem.decode()))
    with pytest.raises(KeyConfigError, match="PEM private key"):
        load_keyset(_settings(tmp_path, jwt_private_key="not a key"))


def test_key_from_environment_may_be_on_one_line(tmp_path):
    key = Ed25519PrivateKey.generate()
    one_line = private_pem(key).decode().replace("\n", "\\n")
    assert load_keyset(_settings(tmp_path, jwt_private_key=one_line)).kid == thumbprint(key.public_key())


def test_unwritable_data_dir_names_the_setting_to_use(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(KeyConfigError, match="TAGSMITH_JWT_PRIVATE_KEY_FILE"):
        load_keyset(Settings(data_dir=blocker / "auth"))


def test_missing_key_file_fails_at_settings_time(tmp_path):
    with pytest.raises(ValueError, match="JWT_PRIVATE_KEY_FILE"):
        _settings(tmp_path, jwt_private_key_file=tmp_path / "absent.pem")


def test_extra_public_keys_from_a_file_or_a_directory_are_published(tmp_path):
    signing = Ed25519PrivateKey.generate()
    old_a, old_b = Ed25519PrivateKey.generate().public_key(), Ed25519PrivateKey.generate().public_key()
    bundle = tmp_path / "extra.pem"
    bundle.write_bytes(public_pem(old_a) + public_pem(old_b))
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    (keys_dir / "a.pem").write_bytes(public_pem(old_a))
    (keys_dir / "b.pem").write_bytes(public_pem(old_b) + public_pem(signing.public_key()))
    expected = [thumbprint(k) for k in (signing.public_key(), old_a, old_b)]
    for source in (bundle, keys_dir):
        keyset = load_keyset(
            _settings(tmp_path, jwt_private_key=private_pem(signing).decode(), jwt_extra_public_keys_file=source)
        )
        jwks = keyset.jwks()
        assert [k["kid"] for k in jwks["keys"]] == expected
        assert all(k["alg"] == "EdDSA" and k["use"] == "sig" and "d" not in k for k in jwks["keys"])
        assert set(parse_jwks(json.loads(json.dumps(jwks)))) == set(expected)


def test_extra_keys_file_without_public_keys_is_refused(tmp_path):
    bad = tmp_path / "extra.pem"
    bad.write_bytes(private_pem(Ed25519PrivateKey.generate()))
    with pytest.raises(KeyConfigError, match="no PEM public key"):
        load_keyset(_settings(tmp_path, jwt_extra_public_keys_file=bad))


def test_access_token_header_and_claims():
    keyset = KeySet(Ed25519PrivateKey.generate())
    issuer = TokenIssuer(keyset, issuer="tagsmith-auth", audience="tagsmith", ttl_seconds=900)
    token = issuer.access_token(user_id="u-1", username="alice", roles=["user", "admin"], session_id="s-1")
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "kid": keyset.kid, "typ": "at+jwt"}
    claims = jwt.decode(token, keyset.signing_key.public_key(), algorithms=["EdDSA"], audience="tagsmith")
    assert claims["exp"] - claims["iat"] == 900
    assert (claims["iss"], claims["sub"], claims["name"], claims["roles"]) == (
        "tagsmith-auth",
        "u-1",
        "alice",
        ["admin", "user"],
    )
    assert len(claims["jti"]) == 32
    assert claims["sid"] == "s-1"


def test_refresh_tokens_are_random_and_hashed():
    first, second = new_refresh_token(), new_refresh_token()
    assert first != second and len(first) >= 43
    assert len(refresh_token_hash(first)) == 32
    assert refresh_token_hash(first) == refresh_token_hash(first) != refresh_token_hash(second)
