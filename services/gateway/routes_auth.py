"""/v1/auth, /v1/me and the JWKS: accounts and tokens, answered by the auth service."""

from fastapi import APIRouter, Request, Response

from services.gateway import schemas
from services.gateway.deps import BackendsDep, Token, client_address

router = APIRouter(tags=["auth"])


@router.post("/v1/auth/register", status_code=201, response_model=schemas.User)
async def register(body: schemas.Credentials, request: Request, backends: BackendsDep) -> schemas.User:
    """Creates an account: 3 to 32 letters, digits, '.', '_' or '-', and a password of 8 to 256 characters.

    Registrations per client address are limited (429 with Retry-After beyond it)."""
    user = await backends.auth.register(body.username, body.password, client_address=client_address(request))
    return schemas.user_from(user)


@router.post("/v1/auth/login", response_model=schemas.TokenPair)
async def login(body: schemas.Credentials, request: Request, backends: BackendsDep) -> schemas.TokenPair:
    """Exchanges username and password for an access token and a refresh token.

    Repeated failures for one account from one address answer 429 with Retry-After, whatever the password."""
    pair = await backends.auth.login(body.username, body.password, client_address=client_address(request))
    return schemas.tokens_from(pair)


@router.post("/v1/auth/refresh", response_model=schemas.TokenPair)
async def refresh(body: schemas.RefreshTokenBody, backends: BackendsDep) -> schemas.TokenPair:
    """Spends a refresh token for a new pair; reusing a spent one revokes the whole session."""
    return schemas.tokens_from(await backends.auth.refresh(body.refresh_token))


@router.post("/v1/auth/logout", status_code=204, response_class=Response)
async def logout(body: schemas.RefreshTokenBody, token: Token, backends: BackendsDep) -> Response:
    """Ends the session the refresh token belongs to. Idempotent."""
    await backends.auth.logout(token, body.refresh_token)
    return Response(status_code=204)


@router.get("/v1/me", response_model=schemas.User)
async def me(token: Token, backends: BackendsDep) -> schemas.User:
    """The signed-in user."""
    return schemas.user_from(await backends.auth.me(token))


@router.get("/.well-known/jwks.json", response_model=schemas.Jwks)
async def jwks(backends: BackendsDep, response: Response) -> schemas.Jwks:
    """The public keys that verify access tokens."""
    response.headers["Cache-Control"] = "public, max-age=300"
    return schemas.Jwks(keys=(await backends.auth.jwks()).get("keys", []))
