"""A signing key for tests that need access tokens without running the auth service."""

import json
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.tokens import ACCESS_TOKEN_TYPE, TokenVerifier

ISSUER = "tagsmith-auth"
AUDIENCE = "tagsmith"


class TestKeys:
    """Mints Ed25519-signed access tokens and serves the matching JWKS to a TokenVerifier."""

    __test__ = False  # not a pytest test class

    def __init__(self, kid: str = "test-key") -> None:
        self.kid = kid
        self.private_key = Ed25519PrivateKey.generate()

    def jwks(self) -> dict:
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.private_key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]}

    async def jwks_source(self) -> dict:
        return self.jwks()

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(jwks_source=self.jwks_source, issuer=ISSUER, audience=AUDIENCE, min_refresh_seconds=0)

    def token(self, subject: str = "user-1", *, roles=("user",), ttl: int = 300, **overrides) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "roles": list(roles),
            **overrides,
        }
        headers = {"kid": self.kid, "typ": ACCESS_TOKEN_TYPE}
        return jwt.encode(claims, self.private_key, algorithm="EdDSA", headers=headers)
