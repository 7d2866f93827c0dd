"""FastAPI dependencies: the backends, the settings, and the caller's token.

All are `async def` although none awaits: FastAPI runs plain functions in a worker thread, and three thread hops
per request cost more CPU than the whole route.
"""

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from services.common.identity import TokenProvider
from services.common.tokens import InvalidToken, Principal
from services.gateway.clients import Backends
from services.gateway.config import Settings
from services.gateway.errors import ApiError, unauthenticated
from services.gateway.identity import anonymous_token, bearer_token

# Declares the scheme in the OpenAPI document (and the Authorize button of /docs); the header is parsed below.
bearer_scheme = HTTPBearer(auto_error=False, description="An access token from POST /v1/auth/login.")


async def get_backends(request: Request) -> Backends:
    return request.app.state.backends


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def caller_token(request: Request, _: Annotated[object, Security(bearer_scheme)] = None) -> str:
    """The caller's bearer token; 401 when there is none."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise unauthenticated()
    return token


async def legacy_token(request: Request, _: Annotated[object, Security(bearer_scheme)] = None) -> str:
    """The caller's token, or in anonymous mode the shared anonymous user's when the request carries none."""
    token = bearer_token(request.headers.get("authorization"))
    if token is not None:
        return token
    anonymous: TokenProvider | None = request.app.state.anonymous
    if anonymous is None:
        raise unauthenticated()
    request.state.anonymous = True
    return await anonymous_token(anonymous)


async def optional_token(request: Request) -> str | None:
    """The caller's token when it sent one; open routes forward it but do not need it."""
    return bearer_token(request.headers.get("authorization"))


async def legacy_optional_token(request: Request) -> str | None:
    """The caller's token; else, in anonymous mode, the anonymous user's; else none."""
    token = bearer_token(request.headers.get("authorization"))
    anonymous: TokenProvider | None = request.app.state.anonymous
    if token is None and anonymous is not None:
        request.state.anonymous = True
        return await anonymous_token(anonymous)
    return token


async def admin(request: Request, token: Annotated[str, Depends(caller_token)]) -> Principal:
    """The caller, verified here with the auth service's published keys, when an administrator; else 401 or 403.
    Checked locally so the status page works while auth is down (once the keys are known)."""
    try:
        principal = await request.app.state.verifier.verify(token)
    except InvalidToken as exc:
        raise unauthenticated(str(exc)) from None
    if not principal.is_admin:
        raise ApiError(403, "only administrators may see the system status")
    return principal


def client_address(request: Request) -> str | None:
    """The end user's address: uvicorn has already replaced the peer by the X-Forwarded-For entry that the
    proxies in TAGSMITH_TRUSTED_PROXIES vouch for, and ignores the header from anyone else."""
    return request.client.host if request.client else None


Token = Annotated[str, Depends(caller_token)]
LegacyToken = Annotated[str, Depends(legacy_token)]
OptionalToken = Annotated[str | None, Depends(optional_token)]
LegacyOptionalToken = Annotated[str | None, Depends(legacy_optional_token)]
BackendsDep = Annotated[Backends, Depends(get_backends)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
AdminDep = Annotated[Principal, Depends(admin)]
