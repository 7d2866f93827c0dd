"""The catalog's own identity for background work: a service account's access token, refreshed before expiry."""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

import grpc
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc

log = logging.getLogger(__name__)

# Renew once this share of a token's lifetime has passed, so calls never carry a token about to expire.
_RENEW_AT = 0.8
_CALL_TIMEOUT = 5.0


class ServiceLoginFailed(Exception):
    """The service account could not obtain a token (wrong password, auth down, rate limited)."""


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
    """Logs in with the service account's password, then rotates the refresh token before each expiry."""

    def __init__(
        self, channel: grpc.aio.Channel, *, username: str, password: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._username = username
        self._password = password
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
            pair = await self._renewed(now) if self._refresh and now < self._refresh_until else None
            if pair is None:
                pair = await self._login()
            self._store(pair, now)
            return self._access

    def invalidate(self) -> None:
        """Forgets the access token (e.g. after UNAUTHENTICATED) so the next call renews it."""
        self._access = ""

    async def _login(self) -> auth_pb2.TokenPair:
        request = auth_pb2.LoginRequest(username=self._username, password=self._password)
        return await self._call(self._stub.Login, request)

    async def _renewed(self, now: float) -> auth_pb2.TokenPair | None:
        try:
            return await self._call(self._stub.Refresh, auth_pb2.RefreshRequest(refresh_token=self._refresh))
        except ServiceLoginFailed:
            log.info("service token refresh refused; logging in again")
            self._refresh = ""
            return None

    async def _call(self, method, request) -> auth_pb2.TokenPair:
        try:
            return await method(request, timeout=_CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            raise ServiceLoginFailed(f"service login as {self._username!r}: {error.code().name}") from None

    def _store(self, pair: auth_pb2.TokenPair, now: float) -> None:
        self._access = pair.access_token
        self._renew_at = now + max(1.0, pair.expires_in * _RENEW_AT)
        self._refresh = pair.refresh_token
        self._refresh_until = now + pair.refresh_expires_in * _RENEW_AT
