"""Access-token verification against the keys and the revocation list auth publishes, cached locally."""

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt

from services.common.settings import TokenSettings

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
# How long one fetch from auth may take before the verifier goes on with what it knows.
FETCH_TIMEOUT_SECONDS = 2.0
# After a failed key fetch, how soon a token with an unknown key may try again (it gets UNAVAILABLE meanwhile).
RETRY_FAILED_FETCH_SECONDS = 1.0
CACHE_FILE_NAME = "auth-keys.json"
REVOKED_MESSAGE = "this session was ended or its user disabled or deleted; log in again"


class InvalidToken(Exception):
    """The token is missing, malformed, expired, tampered with, revoked or signed by an unknown key."""


class KeysUnavailable(Exception):
    """The token names a key the verifier does not know and auth cannot be asked now: try again, do not log out."""


@dataclass(frozen=True)
class Revocations:
    """Sessions and users (by id) whose tokens issued at or before the given Unix second are refused."""

    sessions: dict[str, int] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)

    def covers(self, *, session_id: str, subject: str, issued_at: int) -> bool:
        session_cut = self.sessions.get(session_id) if session_id else None
        user_cut = self.users.get(subject)
        return any(cut is not None and issued_at <= cut for cut in (session_cut, user_cut))

    def to_json(self) -> dict[str, Any]:
        return {"sessions": self.sessions, "users": self.users}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Revocations":
        return cls(sessions=_cuts(data.get("sessions")), users=_cuts(data.get("users")))


def _cuts(entries: object) -> dict[str, int]:
    if not isinstance(entries, dict):
        return {}
    return {str(key): int(value) for key, value in entries.items() if isinstance(value, int)}


JwksSource = Callable[[], Awaitable[dict[str, Any]]]
RevocationSource = Callable[[], Awaitable[Revocations]]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject and roles, and the raw token to forward downstream."""

    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    token: str = field(default="", repr=False)
    username: str = ""
    session_id: str = ""
    issued_at: int = 0

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_service(self) -> bool:
        return "service" in self.roles


class TokenVerifier:
    """Verifies access tokens locally against auth's keys and revocation list, fetched now and then.

    The keys are refetched when a token names an unknown `kid` or the set grows old; the revocation list every
    `revocation_refresh_seconds` (in the background; a request waits for it only once the list is twice that
    old, which bounds how long a revoked token keeps working). When auth cannot be reached the last known keys
    and list stay in use, and a token with an unknown key gets KeysUnavailable rather than InvalidToken: an auth
    outage must not log anyone out. With `cache_file`, keys and list are also saved there, so a restart while
    auth is down still knows them. `clock` (monotonic) and `wall_clock` (epoch) let tests move time on.
    """

    def __init__(
        self,
        *,
        jwks_source: JwksSource,
        issuer: str,
        audience: str,
        min_refresh_seconds: float = 10.0,
        max_key_age_seconds: float = DEFAULT_MAX_KEY_AGE_SECONDS,
        leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
        revocation_source: RevocationSource | None = None,
        revocation_refresh_seconds: float = 15.0,
        cache_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self._clock = clock  # refresh intervals and key age
        self._wall_clock = wall_clock  # remembered tokens' expiry, in the epoch seconds of `exp`
        self._jwks_source = jwks_source
        self._issuer = issuer
        self._audience = audience
        self._min_refresh = min_refresh_seconds
        self._max_age = max_key_age_seconds
        self._leeway = leeway_seconds
        self._revocation_source = revocation_source
        self._revocation_every = revocation_refresh_seconds
        self._cache_file = cache_file
        self._keys: dict[str, jwt.PyJWK] = {}
        self._jwks: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._last_fetch_failed = False
        self._lock = asyncio.Lock()
        self._verified: dict[str, tuple[Principal, float, str]] = {}
        self._revocations = Revocations()
        self._revocations_at = float("-inf")
        self._revocations_tried_at = float("-inf")
        self._revocations_task: asyncio.Task[None] | None = None
        self._load_cache()

    async def verify(self, token: str) -> Principal:
        refreshing = self._revocations_due()
        principal = await self._verified_principal(token)  # meanwhile the list is fetched, if due
        if refreshing is not None:
            await asyncio.shield(refreshing)
        if self._revocations.covers(
            session_id=principal.session_id, subject=principal.subject, issued_at=principal.issued_at
        ):
            raise InvalidToken(REVOKED_MESSAGE)
        return principal

    async def _verified_principal(self, token: str) -> Principal:
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
        fresh = self._clock() - self._fetched_at <= self._max_age
        return fresh and kid in self._keys and self._wall_clock() < expires_at

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
        principal = Principal(
            subject=_subject(claims),
            roles=_roles(claims),
            token=token,
            username=_name(claims),
            session_id=_session(claims),
            issued_at=_issued_at(claims),
        )
        return principal, float(claims["exp"]), header["kid"]

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
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
        if kid not in self._keys or self._clock() - self._fetched_at > self._max_age:
            await self._refresh()
        if kid in self._keys:
            return self._keys[kid]
        if self._last_fetch_failed:
            raise KeysUnavailable("cannot check the token now: the auth service's keys are unreachable; try again")
        raise InvalidToken("token signed by an unknown key")

    async def _refresh(self) -> None:
        async with self._lock:
            interval = RETRY_FAILED_FETCH_SECONDS if self._last_fetch_failed else self._min_refresh
            if self._clock() - self._fetched_at < interval:
                return
            self._fetched_at = self._clock()
            try:
                jwks = await self._jwks_source()
                self._keys, self._jwks = parse_jwks(jwks), jwks
            except Exception:
                self._last_fetch_failed = True
                log.warning("could not fetch the public keys; keeping the ones already known", exc_info=True)
                return
            self._last_fetch_failed = False
            self._save_cache()

    def _revocations_due(self) -> asyncio.Task[None] | None:
        """Starts refreshing the list once it is due; returns the refresh to wait for once it is twice as old."""
        if self._revocation_source is None:
            return None
        now = self._clock()
        if now - self._revocations_at < self._revocation_every:
            return None
        if self._revocations_task is None or self._revocations_task.done():
            if now - self._revocations_tried_at < self._revocation_every:
                return None  # the last try failed recently: go on with the list already known
            self._revocations_tried_at = now
            self._revocations_task = asyncio.create_task(self._fetch_revocations(self._revocation_source))
        return self._revocations_task if now - self._revocations_at >= 2 * self._revocation_every else None

    async def _fetch_revocations(self, source: RevocationSource) -> None:
        try:
            self._revocations = await source()
        except Exception:
            log.warning("could not fetch the revocation list; keeping the one already known", exc_info=True)
            return
        self._revocations_at = self._clock()
        self._save_cache()

    def _load_cache(self) -> None:
        """Starts from the keys and revocations a previous run saved, if any; they count as old."""
        if self._cache_file is None or not self._cache_file.is_file():
            return
        try:
            saved = json.loads(self._cache_file.read_text())
            self._keys, self._jwks = parse_jwks(saved["jwks"]), saved["jwks"]
            self._revocations = Revocations.from_json(saved.get("revocations", {}))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring the unreadable key cache %s", self._cache_file, exc_info=True)
            return
        log.info("loaded %d public key(s) from %s", len(self._keys), self._cache_file)

    def _save_cache(self) -> None:
        """Writes keys and revocations atomically (temporary file, then rename), so a crash never leaves half."""
        if self._cache_file is None or not self._jwks:
            return
        staging = self._cache_file.with_name(f".{self._cache_file.name}.{os.getpid()}.tmp")
        try:
            self._cache_file.parent.mkdir(parents=True, exist_ok=True)
            staging.write_text(json.dumps({"jwks": self._jwks, "revocations": self._revocations.to_json()}))
            staging.replace(self._cache_file)
        except OSError:
            log.warning("could not write the key cache %s", self._cache_file, exc_info=True)


def _subject(claims: dict[str, Any]) -> str:
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("invalid token: the subject must be a non-empty string")
    return subject


def _roles(claims: dict[str, Any]) -> frozenset[str]:
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise InvalidToken("invalid token: roles must be a list of strings")
    return frozenset(roles)


def _session(claims: dict[str, Any]) -> str:
    session_id = claims.get("sid", "")
    if not isinstance(session_id, str):
        raise InvalidToken("invalid token: sid must be a string")
    return session_id


def _issued_at(claims: dict[str, Any]) -> int:
    issued_at = claims["iat"]
    if not isinstance(issued_at, int | float):
        raise InvalidToken("invalid token: iat must be a number")
    return int(issued_at)


def _name(claims: dict[str, Any]) -> str:
    name = claims.get("name", "")
    if not isinstance(name, str):
        raise InvalidToken("invalid token: name must be a string")
    return name


def parse_jwks(jwks: dict[str, Any]) -> dict[str, jwt.PyJWK]:
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


def grpc_jwks_source(channel: grpc.aio.Channel) -> JwksSource:
    """Fetches the key set from the auth service over an open channel."""
    from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc

    stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def fetch() -> dict[str, Any]:
        # No waiting for a connection: while auth is down the caller should hear UNAVAILABLE promptly, and the
        # channel's retry policy already rides out a restart's brief refusals.
        reply = await stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest(), timeout=FETCH_TIMEOUT_SECONDS)
        jwks: dict[str, Any] = json.loads(reply.jwks_json)
        return jwks

    return fetch


def grpc_revocation_source(channel: grpc.aio.Channel) -> RevocationSource:
    """Fetches the revocation list from the auth service over an open channel."""
    from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc

    stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def fetch() -> Revocations:
        reply = await stub.GetRevocations(auth_pb2.GetRevocationsRequest(), timeout=FETCH_TIMEOUT_SECONDS)
        return Revocations(
            sessions={entry.id: entry.revoked_at for entry in reply.sessions},
            users={entry.id: entry.revoked_at for entry in reply.users},
        )

    return fetch


def auth_verifier(settings: TokenSettings, channel: grpc.aio.Channel) -> TokenVerifier:
    """The verifier of a service that trusts auth's published keys and revocations (TokenSettings)."""
    cache_dir = settings.auth_cache_dir
    return TokenVerifier(
        jwks_source=grpc_jwks_source(channel),
        revocation_source=grpc_revocation_source(channel),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        min_refresh_seconds=settings.jwks_min_refresh_seconds,
        revocation_refresh_seconds=settings.revocations_refresh_seconds,
        cache_file=cache_dir / CACHE_FILE_NAME if cache_dir is not None else None,
    )
