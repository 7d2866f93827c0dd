"""Who a request acts as: the bearer token it carries, or the shared anonymous user of the original API."""

import asyncio
import re
import time

import grpc

from services.gateway.clients import AuthClient
from services.gateway.errors import from_rpc_error, unauthenticated

# RFC 6750 b64token; anything else cannot be valid and must not reach gRPC metadata.
_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
# Log in again this long before the anonymous access token expires.
_EXPIRY_MARGIN_SECONDS = 30.0


def bearer_token(authorization: str | None) -> str | None:
    """The token of an "Authorization: Bearer <token>" header; None when absent; 401 when malformed."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthenticated("the Authorization header must be 'Bearer <token>'")
    if len(token) > 8192 or not _TOKEN.match(token):
        raise unauthenticated("the bearer token is malformed")
    return token


class AnonymousSession:
    """Keeps a valid access token for the shared anonymous user, logging in again before it expires."""

    def __init__(self, auth: AuthClient, *, username: str, password: str) -> None:
        self._auth = auth
        self._username = username
        self._password = password
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        async with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                return await self._login()
            return self._token

    def forget(self) -> None:
        """Drops the cached token, e.g. after a backend refused it."""
        self._token = None

    async def _login(self) -> str:
        try:
            # Not a public login: strangers' failed guesses at this name never lock the gateway's own login out.
            pair = await self._auth.login(self._username, self._password, client_address=None, public_api=False)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, overrides={grpc.StatusCode.UNAUTHENTICATED: 503}) from None
        self._token = pair.access_token
        lifetime = float(pair.expires_in)
        self._expires_at = time.monotonic() + lifetime - min(_EXPIRY_MARGIN_SECONDS, lifetime / 2)
        return pair.access_token
