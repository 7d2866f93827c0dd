"""Issues access tokens (signed JWTs) and refresh tokens (opaque random strings stored only as hashes)."""

import hashlib
import secrets
import time
import uuid
from collections.abc import Iterable

import jwt

from services.auth.keys import ALGORITHM, KeySet
from services.common.tokens import ACCESS_TOKEN_TYPE

REFRESH_TOKEN_BYTES = 32


class TokenIssuer:
    """Signs access tokens with the key set's signing key and the configured issuer, audience and lifetime."""

    def __init__(self, keys: KeySet, *, issuer: str, audience: str, ttl_seconds: int) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self.ttl_seconds = ttl_seconds

    def access_token(self, *, user_id: str, username: str, roles: Iterable[str], session_id: str) -> str:
        """A signed token; `sid` names its session, so logging out revokes it (see GetRevocations)."""
        now = int(time.time())
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "name": username,
            "roles": sorted(roles),
            "iat": now,
            "exp": now + self.ttl_seconds,
            "jti": uuid.uuid4().hex,
            "sid": session_id,
        }
        headers = {"kid": self._keys.kid, "typ": ACCESS_TOKEN_TYPE}
        return jwt.encode(claims, self._keys.signing_key, algorithm=ALGORITHM, headers=headers)


def new_refresh_token() -> str:
    """256 random bits, URL-safe; only its hash is ever stored."""
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def refresh_token_hash(token: str) -> bytes:
    """SHA-256 suffices: the token is random, so a slow hash would add nothing against guessing."""
    return hashlib.sha256(token.encode()).digest()
