"""A service's own identity: the access token of a fixed account (a service account, the gateway's anonymous user),
logged in once and renewed before it expires."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import grpc
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc

log = logging.getLogger(__name__)

# Renew once this share of a token's lifetime has passed, so calls never carry a token about to expire.
RENEW_AT = 0.8
# A token is kept at least this long, however short the lifetime auth grants.
MIN_KEEP_SECONDS = 1.0


class LoginFailed(Exception):
    """The account could not obtain a token (wrong password, auth down, rate limited); `error` is auth's answer."""

    def __init__(self, username: str, error: grpc.aio.AioRpcError) -> None:
        super().__init__(f"login as {username!r}: {error.code().name}")
        self.error = error


class TokenProvider(Protocol):
    async def token(self) -> str: ...

    def invalidate(self) -> None: ...


class StaticTokenProvider:
    """A fixed token: for tests, and for commands handed a token by their operator."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token

    def invalidate(self) -> None:
        return None


class LoginTokenProvider:
    """Logs in as one account, then rotates its refresh token before each access token expires; logs in again when
    the refresh token is refused or has run out.

    The login is not a public one: strangers' failed guesses at the account's name never lock it out.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        username: str,
        password: str,
        call_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._username = username
        self._password = password
        self._call_timeout = call_timeout
        self._clock = clock
        self._lock = asyncio.Lock()
        self._access = ""
        self._renew_at = 0.0
        self._refresh = ""
        self._refresh_until = 0.0

    async def token(self) -> str:
        async with self._lock:
            now = self._clock()
            if self._access and now < self._renew_at:
                return self._access
            pair = await self._renewed() if self._refresh and now < self._refresh_until else None
            if pair is None:
                pair = await self._login()
            self._store(pair, now)
            return self._access

    def invalidate(self) -> None:
        """Forgets the access token (e.g. after a backend refused it) so the next call renews it."""
        self._access = ""

    async def _login(self) -> auth_pb2.TokenPair:
        request = auth_pb2.LoginRequest(username=self._username, password=self._password, public_api=False)
        return await self._call(self._stub.Login, request)

    async def _renewed(self) -> auth_pb2.TokenPair | None:
        try:
            return await self._call(self._stub.Refresh, auth_pb2.RefreshRequest(refresh_token=self._refresh))
        except LoginFailed:
            log.info("token refresh for %r refused; logging in again", self._username)
            self._refresh = ""
            return None

    async def _call(self, method: Callable[..., Awaitable[auth_pb2.TokenPair]], request: object) -> auth_pb2.TokenPair:
        try:
            return await method(request, timeout=self._call_timeout)
        except grpc.aio.AioRpcError as error:
            raise LoginFailed(self._username, error) from None

    def _store(self, pair: auth_pb2.TokenPair, now: float) -> None:
        self._access = pair.access_token
        self._renew_at = now + max(MIN_KEEP_SECONDS, pair.expires_in * RENEW_AT)
        self._refresh = pair.refresh_token
        self._refresh_until = now + pair.refresh_expires_in * RENEW_AT
