"""Opaque page tokens: URL-safe base64 of a small JSON cursor, strictly validated and bound to one query."""

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from typing import Any

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
_MAX_TOKEN_CHARS = 512
_VERSION = 1


class InvalidPage(ValueError):
    """A page size or page token the client must fix."""


def page_size(requested: int) -> int:
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= requested <= MAX_PAGE_SIZE:
        raise InvalidPage(f"page_size must be between 1 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})")
    return requested


def fingerprint(*parts: object) -> str:
    """Identifies the query a token belongs to, so a token is never replayed against other filters."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def encode(query: str, cursor: Sequence[int | float]) -> str:
    payload = json.dumps({"v": _VERSION, "q": query, "c": list(cursor)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode(token: str, query: str, shape: Sequence[type]) -> tuple[Any, ...] | None:
    """The cursor in `token`, checked against the query fingerprint and the expected types; None for no token."""
    if not token:
        return None
    if len(token) > _MAX_TOKEN_CHARS:
        raise InvalidPage("page_token is not one this service issued")
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidPage("page_token is not one this service issued") from None
    if not isinstance(payload, dict) or payload.get("v") != _VERSION or payload.get("q") != query:
        raise InvalidPage("page_token does not belong to this request; start again without a page_token")
    cursor = payload.get("c")
    if not isinstance(cursor, list) or len(cursor) != len(shape) or not all(map(_is, cursor, shape)):
        raise InvalidPage("page_token is not one this service issued")
    return tuple(cursor)


def _is(value: object, expected: type) -> bool:
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 2
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63
    return isinstance(value, expected)
