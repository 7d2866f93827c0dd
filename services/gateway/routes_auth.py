"""/v1/auth, /v1/me and the JWKS: accounts and tokens, answered by the auth service."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from services.gateway import schemas
from services.gateway.deps import BackendsDep, Token, client_address
from services.gateway.session_cookie import clear_refresh_cookie, refresh_token_of, set_refresh_cookie

router = APIRouter(tags=["auth"])
# The web page's choice: the refresh token goes into an HttpOnly cookie instead of the body.
CookieSession = Annotated[
    bool, Query(description="Set the refresh token as an HttpOnly cookie (path /v1/auth) and leave it out of the body.")
]


@router.post("/v1/auth/register", status_code=201, response_model=schemas.User)
async def register(body: schemas.Credentials, request: Request, backends: BackendsDep) -> schemas.User:
    """Creates an account: 3 to 32 letters, digits, '.', '_' or '-', and a password of 8 to 256 characters.

    Registrations per client address are limited (429 with Retry-After beyond it)."""
    user = await backends.auth.register(body.username, body.password, client_address=client_address(request))
    return schemas.user_from(user)


@router.post("/v1/auth/login", response_model=schemas.TokenPair)
async def login(
    body: schemas.Credentials,
    request: Request,
    response: Response,
    backends: BackendsDep,
    cookie: CookieSession = False,
) -> schemas.TokenPair:
    """Exchanges username and password for an access token and a refresh token.

    Repeated failures for one account from one address answer 429 with Retry-After, whatever the password."""
    pair = await backends.auth.login(body.username, body.password, client_address=client_address(request))
    tokens = schemas.tokens_from(pair)
    return set_refresh_cookie(response, request, tokens) if cookie else tokens


@router.post("/v1/auth/refresh", response_model=schemas.TokenPair)
async def refresh(
    request: Request, response: Response, backends: BackendsDep, body: schemas.RefreshTokenBody | None = None
) -> schemas.TokenPair:
    """Spends a refresh token (the body's, else the session cookie's) for a new pair; reusing a spent one revokes
    the whole session. A cookie's token is replaced by the new one in the cookie."""
    refresh_token, from_cookie = refresh_token_of(request, body)
    tokens = schemas.tokens_from(await backends.auth.refresh(refresh_token))
    return set_refresh_cookie(response, request, tokens) if from_cookie else tokens


@router.post("/v1/auth/logout", status_code=204, response_class=Response)
async def logout(
    request: Request, token: Token, backends: BackendsDep, body: schemas.RefreshTokenBody | None = None
) -> Response:
    """Ends the session the refresh token (the body's, else the session cookie's) belongs to, and clears the
    cookie. Idempotent."""
    refresh_token = refresh_token_of(request, body, required=False)[0]
    if refresh_token:
        await backends.auth.logout(token, refresh_token)
    response = Response(status_code=204)
    clear_refresh_cookie(response, request)
    return response


@router.get("/v1/me", response_model=schemas.User)
async def me(token: Token, backends: BackendsDep) -> schemas.User:
    """The signed-in user."""
    return schemas.user_from(await backends.auth.me(token))


@router.get("/.well-known/jwks.json", response_model=schemas.Jwks)
async def jwks(backends: BackendsDep, response: Response) -> schemas.Jwks:
    """The public keys that verify access tokens."""
    response.headers["Cache-Control"] = "public, max-age=300"
    return schemas.Jwks(keys=(await backends.auth.jwks()).get("keys", []))
