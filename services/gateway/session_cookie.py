"""The web page's session: its refresh token lives in an HttpOnly cookie that page scripts can never read.

SameSite=Strict keeps other sites from sending it; the path keeps it off every request but /v1/auth/*; Secure is set
whenever the gateway is reached over TLS (directly, or through a trusted proxy that says so).
"""

from fastapi import Request, Response

from services.gateway import schemas
from services.gateway.errors import unauthenticated

REFRESH_COOKIE = "tagsmith_refresh"
REFRESH_COOKIE_PATH = "/v1/auth"


def set_refresh_cookie(response: Response, request: Request, pair: schemas.TokenPair) -> schemas.TokenPair:
    """Stores the refresh token in the cookie and returns the pair without it."""
    response.set_cookie(
        REFRESH_COOKIE,
        pair.refresh_token,
        max_age=pair.refresh_expires_in,
        path=REFRESH_COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return pair.model_copy(update={"refresh_token": ""})


def clear_refresh_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        REFRESH_COOKIE,
        path=REFRESH_COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def refresh_token_of(
    request: Request, body: schemas.RefreshTokenBody | None, *, required: bool = True
) -> tuple[str, bool]:
    """The refresh token from the body, else from the cookie, and whether it came from the cookie.

    401 when there is none and one is `required`; else an empty token.
    """
    if body is not None:
        return body.refresh_token, False
    token = request.cookies.get(REFRESH_COOKIE, "")
    if (not token and required) or len(token) > 4096:
        raise unauthenticated("no refresh token: send one in the body, or sign in again")
    return token, bool(token)
