"""The Ed25519 signing key, the extra keys still trusted during rotation, and the JWKS that publishes them."""

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.auth.config import Settings

log = logging.getLogger(__name__)

ALGORITHM = "EdDSA"
GENERATED_KEY_NAME = "signing-key.pem"
_PEM_BLOCK_END = b"-----END PUBLIC KEY-----"


class KeyConfigError(ValueError):
    """A configured key is missing, unreadable or not an Ed25519 key."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The key's required JWK members (RFC 8037): kty, crv and x."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}


def thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint: SHA-256 of the required members, sorted, without whitespace."""
    canonical = json.dumps(public_jwk(public_key), sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True)
class KeySet:
    """Signs with one private key; publishes its public half and any extra verification-only keys."""

    signing_key: Ed25519PrivateKey
    extra_public_keys: tuple[Ed25519PublicKey, ...] = ()

    @property
    def kid(self) -> str:
        return thumbprint(self.signing_key.public_key())

    def jwks(self) -> dict:
        """The JWK Set: the signing key first, then the extra keys, without duplicates."""
        keys, seen = [], set()
        for public in (self.signing_key.public_key(), *self.extra_public_keys):
            kid = thumbprint(public)
            if kid not in seen:
                seen.add(kid)
                keys.append({**public_jwk(public), "kid": kid, "alg": ALGORITHM, "use": "sig"})
        return {"keys": keys}

    async def jwks_source(self) -> dict:
        """A TokenVerifier key source reading this set directly, with no network call."""
        return self.jwks()


def load_private_key(pem: bytes, *, source: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyConfigError(f"{source} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyConfigError(f"{source} must be an Ed25519 key, not {type(key).__name__}")
    return key


def load_public_keys(pem: bytes, *, source: str) -> list[Ed25519PublicKey]:
    """Every public key in a file of one or more concatenated PEM blocks."""
    keys = []
    for block in pem.split(_PEM_BLOCK_END)[:-1]:
        try:
            key = serialization.load_pem_public_key(block + _PEM_BLOCK_END)
        except ValueError as exc:
            raise KeyConfigError(f"{source} holds a PEM block that is not a public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyConfigError(f"{source} must hold Ed25519 public keys, not {type(key).__name__}")
        keys.append(key)
    if not keys:
        raise KeyConfigError(f"{source} holds no PEM public key")
    return keys


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Writes a private key readable by its owner only (0600), refusing to overwrite an existing file.

    The key appears complete or not at all: it is written to a temporary file, then hard-linked into place.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(private_pem(key))
        os.link(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def _local_key(data_dir: Path) -> Ed25519PrivateKey:
    path = data_dir / GENERATED_KEY_NAME
    try:
        if not path.exists():
            log.warning("no signing key configured; generating one in %s (fine for a local run only)", path)
            write_private_key(path, Ed25519PrivateKey.generate())
    except OSError as exc:
        if isinstance(exc, FileExistsError) and path.is_file():
            pass  # another local process generated it first
        else:
            raise KeyConfigError(
                f"cannot create a signing key in {data_dir} ({exc.strerror}); set TAGSMITH_JWT_PRIVATE_KEY_FILE"
            ) from exc
    return load_private_key(path.read_bytes(), source=str(path))


def _signing_key(settings: Settings) -> Ed25519PrivateKey:
    if settings.jwt_private_key is not None:
        # Accept a PEM squeezed onto one line with literal "\n", as some secret stores require.
        pem = settings.jwt_private_key.get_secret_value().replace("\\n", "\n")
        return load_private_key(pem.encode(), source="TAGSMITH_JWT_PRIVATE_KEY")
    if settings.jwt_private_key_file is not None:
        path = settings.jwt_private_key_file
        return load_private_key(path.read_bytes(), source=str(path))
    return _local_key(settings.data_dir)


def _extra_keys(path: Path | None) -> tuple[Ed25519PublicKey, ...]:
    if path is None:
        return ()
    files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
    return tuple(key for file in files for key in load_public_keys(file.read_bytes(), source=str(file)))


def load_keyset(settings: Settings) -> KeySet:
    """The key set the settings describe; raises KeyConfigError with a clear message when a key is unusable."""
    keyset = KeySet(_signing_key(settings), _extra_keys(settings.jwt_extra_public_keys_file))
    log.info("signing with key %s; publishing %d key(s)", keyset.kid, len(keyset.jwks()["keys"]))
    return keyset
