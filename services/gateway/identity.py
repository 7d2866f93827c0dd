"""Who a request acts as: the bearer token it carries, or the shared anonymous user of the original API."""

import re

import grpc

from services.common.identity import LoginFailed, TokenProvider
from services.gateway.errors import from_rpc_error, unauthenticated

# RFC 6750 b64token; anything else cannot be valid and must not reach gRPC metadata.
_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")


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


async def anonymous_token(anonymous: TokenProvider) -> str:
    """The shared anonymous user's token. Auth refusing the gateway's own login is the gateway's misconfiguration,
    not the caller's: 503, not 401."""
    try:
        return await anonymous.token()
    except LoginFailed as exc:
        raise from_rpc_error(exc.error, overrides={grpc.StatusCode.UNAUTHENTICATED: 503}) from None
