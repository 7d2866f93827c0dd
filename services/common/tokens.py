"""Access-token verification against the keys auth publishes (JWKS), cached locally."""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import jwt

log = logging.getLogger(__name__)

# Only asymmetric algorithms; the token's own header never chooses a key or an HMAC.
ALLOWED_ALGORITHMS = ("EdDSA", "ES256", "RS256")
ACCESS_TOKEN_TYPE = "at+jwt"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud", "jti"]
# Tolerated clock difference between the issuing and the verifying host, for `iat` and `exp`.
DEFAULT_LEEWAY_SECONDS = 30.0
# Keys are refetched at least this often, so a key auth stops publishing stops being trusted.
DEFAULT_MAX_KEY_AGE_SECONDS = 300.0
# Verified tokens remembered until they expire: a signature check costs more than the RPC it guards.
VERIFIED_CACHE_SIZE = 10_000

JwksSource = Callable[[], Awaitable[dict]]


class InvalidToken(Exception):
    """The token is missing, malformed, expired, tampered with or signed by an unknown key."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject and roles, and the raw token to forward downstream."""

    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    token: str = field(default="", repr=False)
    username: str = ""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_service(self) -> bool:
        return "service" in self.roles


class TokenVerifier:
    """Verifies access tokens locally; refetches the key set when it meets an unknown `kid` or grows old."""

    def __init__(
        self,
        *,
        jwks_source: JwksSource,
        issuer: str,
        audience: str,
        min_refresh_seconds: float = 10.0,
        max_key_age_seconds: float = DEFAULT_MAX_KEY_AGE_SECONDS,
        leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
    ):
        self._jwks_source = jwks_source
        self._issuer = issuer
        self._audience = audience
        self._min_refresh = min_refresh_seconds
        self._max_age = max_key_age_seconds
        self._leeway = leeway_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self._verified: dict[str, tuple[Principal, float, str]] = {}

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None and self._still_trusted(*cached[1:]):
            return cached[0]
        self._verified.pop(token, None)
        principal, expires_at, kid = await self._verify_signature(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (principal, expires_at, kid)
        return principal

    def _still_trusted(self, expires_at: float, kid: str) -> bool:
        """A remembered token counts while unexpired, its key still listed and the key set fresh."""
        fresh = time.monotonic() - self._fetched_at <= self._max_age
        return fresh and kid in self._keys and time.time() < expires_at

    async def _verify_signature(self, token: str) -> tuple[Principal, float, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidToken("not an access token")
        key = await self._key_for(header.get("kid"))
        if header.get("alg") != key.algorithm_name:
            raise InvalidToken("token algorithm does not match its key")
        claims = self._decode(token, key)
        principal = Principal(subject=_subject(claims), roles=_roles(claims), token=token, username=_name(claims))
        return principal, float(claims["exp"]), header["kid"]

    def _decode(self, token: str, key: jwt.PyJWK) -> dict:
        try:
            return jwt.decode(
                token,
                key=key.key,
                algorithms=[key.algorithm_name],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from exc

    async def _key_for(self, kid: object) -> jwt.PyJWK:
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token has no key id")
        if kid not in self._keys or time.monotonic() - self._fetched_at > self._max_age:
            await self._refresh()
        try:
            return self._keys[kid]
        except KeyError:
            raise InvalidToken("token signed by an unknown key") from None

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self._min_refresh:
                return
            self._fetched_at = time.monotonic()
            try:
                self._keys = parse_jwks(await self._jwks_source())
            except Exception:
                log.warning("could not fetch the public keys; keeping the ones already known", exc_info=True)


def _subject(claims: dict) -> str:
    if not claims["sub"]:
        raise InvalidToken("invalid token: empty subject")
    return claims["sub"]


def _roles(claims: dict) -> frozenset[str]:
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise InvalidToken("invalid token: roles must be a list of strings")
    return frozenset(roles)


def _name(claims: dict) -> str:
    name = claims.get("name", "")
    if not isinstance(name, str):
        raise InvalidToken("invalid token: name must be a string")
    return name


def parse_jwks(jwks: dict) -> dict[str, jwt.PyJWK]:
    """Keys by `kid`, keeping only well-formed signature keys with an allowed algorithm."""
    keys = {}
    for entry in jwks.get("keys", []):
        if not isinstance(entry, dict) or entry.get("alg") not in ALLOWED_ALGORITHMS or not entry.get("kid"):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            log.warning("ignoring malformed public key %s", entry.get("kid"))
    return keys


def grpc_jwks_source(channel) -> JwksSource:
    """Fetches the key set from the auth service over an open channel."""
    from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc

    stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def fetch() -> dict:
        # Waiting for the connection rides out an auth restart instead of failing at once and
        # then distrusting every new key until the next refetch is allowed.
        reply = await stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest(), timeout=5, wait_for_ready=True)
        return json.loads(reply.jwks_json)

    return fetch
