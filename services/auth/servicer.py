"""The AuthService RPCs: register, log in, refresh, log out, who am I, and the public keys."""

import hashlib
import json
import logging
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc

from services.auth.issuer import TokenIssuer, new_refresh_token, refresh_token_hash
from services.auth.keys import KeySet
from services.auth.passwords import (
    PASSWORD_MAX,
    InvalidCredentials,
    PasswordHasher,
    check_password,
    check_username,
    normalize_password,
    username_key,
)
from services.auth.ratelimit import LoginLimiter, Throttled, client_address
from services.auth.store import AuthStore, RefreshOutcome, User, UsernameTaken
from services.common.context import current_principal
from services.common.rpc_names import method_path

log = logging.getLogger(__name__)

SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]
SERVICE_NAME = SERVICE.full_name
OPEN_METHODS = frozenset(
    method_path(SERVICE, name) for name in ("Register", "Login", "Refresh", "GetPublicKeys", "GetRevocations")
)
INVALID_LOGIN = "invalid username or password"
# NFKC can shorten a string, but never to a quarter; longer input cannot be a valid password.
_LOGIN_PASSWORD_INPUT_MAX = 4 * PASSWORD_MAX
_REFRESH_FAILURES = {
    RefreshOutcome.UNKNOWN: "invalid refresh token; log in again",
    RefreshOutcome.EXPIRED: "refresh token expired; log in again",
    RefreshOutcome.REVOKED: "this session was ended; log in again",
    RefreshOutcome.REUSED: "refresh token was already used, so its session was ended; log in again",
}


@dataclass(frozen=True)
class Dependencies:
    """What the servicer works with, built once by the server."""

    store: AuthStore
    hasher: PasswordHasher
    issuer: TokenIssuer
    limiter: LoginLimiter
    keys: KeySet
    refresh_ttl_seconds: int
    trust_forwarded_for: bool


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, deps: Dependencies) -> None:
        self._deps = deps
        self._jwks_json = json.dumps(deps.keys.jwks(), sort_keys=True)

    async def Register(self, request: auth_pb2.RegisterRequest, context: grpc.aio.ServicerContext) -> auth_pb2.User:
        try:
            username = check_username(request.username)
            password = check_password(request.password)
        except InvalidCredentials as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        address = self._client_address(request, context)
        if request.public_api:
            await self._admit_registration(address, context)
        if await self._deps.store.user_by_username(username) is not None:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"username {username!r} is taken")
        password_hash = await self._deps.hasher.hash(password)
        try:
            user = await self._deps.store.create_user(username=username, password_hash=password_hash, roles=["user"])
        except UsernameTaken:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"username {username!r} is taken")
        if request.public_api:
            await self._deps.limiter.remember(user_id=user.id, address=address)
        log.info("registered a user", extra={"user_id": user.id, "client": address})
        return user_message(user)

    async def Login(self, request: auth_pb2.LoginRequest, context: grpc.aio.ServicerContext) -> auth_pb2.TokenPair:
        username = _valid_username(request.username)
        account = username_key(username) if username else _unusable_name_key(request.username)
        address = self._client_address(request, context)
        user = await self._deps.store.user_by_username(username) if username else None
        try:
            attempt = await self._deps.limiter.begin(
                account=account, address=address, user_id=user.id if user else None, public=request.public_api
            )
        except Throttled as exc:
            log.warning("login throttled", extra={"client": address, "retry_after": exc.retry_after})
            await _abort_throttled(context, exc, "too many failed logins for this account from your address")
        if request.public_api and user is not None and "service" in user.roles:
            user = None  # service identities never log in through the public API: answered as an unknown name
        password = normalize_password(request.password[:_LOGIN_PASSWORD_INPUT_MAX])
        # Verified even for an unknown name, so that a wrong name takes as long as a wrong password.
        verified = await self._deps.hasher.verify(user.password_hash if user else None, password)
        if user is None or not verified:
            log.info("login failed", extra={"client": address})
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, INVALID_LOGIN)
        if user.disabled:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "this account is disabled; ask an administrator")
        await self._deps.limiter.succeeded(attempt, user_id=user.id, address=address)
        await self._rehash_if_needed(user, password)
        log.info("logged in", extra={"user_id": user.id})
        return await self._new_session(user)

    async def _admit_registration(self, address: str, context: grpc.aio.ServicerContext) -> None:
        try:
            await self._deps.limiter.admit_registration(address)
        except Throttled as exc:
            log.warning("registration throttled", extra={"client": address, "retry_after": exc.retry_after})
            await _abort_throttled(context, exc, "too many accounts were registered from your address")

    async def Refresh(self, request: auth_pb2.RefreshRequest, context: grpc.aio.ServicerContext) -> auth_pb2.TokenPair:
        if not request.refresh_token:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "refresh_token is required")
        new_token = new_refresh_token()
        rotation = await self._deps.store.rotate(
            old_hash=refresh_token_hash(request.refresh_token),
            new_hash=refresh_token_hash(new_token),
            ttl_seconds=self._deps.refresh_ttl_seconds,
        )
        if rotation.outcome is RefreshOutcome.REUSED and rotation.user is not None:
            log.warning("refresh token reused; its session is revoked", extra={"user_id": rotation.user.id})
        if rotation.outcome is not RefreshOutcome.ROTATED or rotation.user is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFRESH_FAILURES[rotation.outcome])
        return self._token_pair(rotation.user, new_token, rotation.session_id)

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.LogoutResponse:
        if not request.refresh_token:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refresh_token is required")
        principal = current_principal()
        if await self._deps.store.revoke_family(
            token_hash=refresh_token_hash(request.refresh_token), user_id=principal.subject
        ):
            log.info("logged out", extra={"user_id": principal.subject})
        return auth_pb2.LogoutResponse()

    async def GetMe(self, request: auth_pb2.GetMeRequest, context: grpc.aio.ServicerContext) -> auth_pb2.User:
        user = await self._deps.store.user_by_id(current_principal().subject)
        if user is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "the user this token was issued to no longer exists")
        return user_message(user)

    async def GetPublicKeys(
        self, request: auth_pb2.GetPublicKeysRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.PublicKeys:
        return auth_pb2.PublicKeys(jwks_json=self._jwks_json)

    async def GetRevocations(
        self, request: auth_pb2.GetRevocationsRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.Revocations:
        reply = auth_pb2.Revocations()
        for entry in await self._deps.store.revocations():
            listed = reply.sessions if entry.kind == "session" else reply.users
            listed.add(id=entry.subject_id, revoked_at=entry.revoked_at, expires_at=entry.expires_at)
        return reply

    def _client_address(self, request: auth_pb2.LoginRequest | auth_pb2.RegisterRequest, context) -> str:
        return client_address(context.peer(), request.client_address, trust_claimed=self._deps.trust_forwarded_for)

    async def _rehash_if_needed(self, user: User, password: str) -> None:
        if self._deps.hasher.needs_rehash(user.password_hash):
            await self._deps.store.set_password_hash(user.id, await self._deps.hasher.hash(password))
            log.info("password rehashed with the current parameters", extra={"user_id": user.id})

    async def _new_session(self, user: User) -> auth_pb2.TokenPair:
        refresh_token = new_refresh_token()
        session_id = await self._deps.store.start_family(
            user_id=user.id, token_hash=refresh_token_hash(refresh_token), ttl_seconds=self._deps.refresh_ttl_seconds
        )
        return self._token_pair(user, refresh_token, session_id)

    def _token_pair(self, user: User, refresh_token: str, session_id: str) -> auth_pb2.TokenPair:
        issuer = self._deps.issuer
        token = issuer.access_token(user_id=user.id, username=user.username, roles=user.roles, session_id=session_id)
        return auth_pb2.TokenPair(
            access_token=token,
            token_type="Bearer",
            expires_in=issuer.ttl_seconds,
            refresh_token=refresh_token,
            refresh_expires_in=self._deps.refresh_ttl_seconds,
        )


def _unusable_name_key(username: str) -> str:
    """The limiter key for a name no account can have: hashed, so whatever it holds (NUL bytes, megabytes)
    becomes a short plain key, and failures still count per name as they do for unknown valid names."""
    return "invalid:" + hashlib.sha256(username.encode()).hexdigest()[:32]


def _valid_username(username: str) -> str | None:
    """The username if it could name an account; None for one that cannot (too long, NUL bytes, non-ASCII)."""
    try:
        return check_username(username)
    except InvalidCredentials:
        return None


def user_message(user: User) -> auth_pb2.User:
    created_at = Timestamp()
    created_at.FromDatetime(user.created_at)
    return auth_pb2.User(id=user.id, username=user.username, roles=user.roles, created_at=created_at)


async def _abort_throttled(context: grpc.aio.ServicerContext, throttled: Throttled, reason: str) -> None:
    metadata = (*(context.trailing_metadata() or ()), ("retry-after", str(throttled.retry_after)))
    minutes = f"{throttled.minutes} minute{'s' if throttled.minutes != 1 else ''}"
    await context.abort(
        grpc.StatusCode.RESOURCE_EXHAUSTED, f"{reason}; try again in {minutes}", trailing_metadata=metadata
    )
