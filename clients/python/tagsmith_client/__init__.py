"""Tagsmith's Python client and the `tagsmith` command."""

from tagsmith_client.client import DEFAULT_URL, Client
from tagsmith_client.errors import ApiError, ConnectionFailed, NotLoggedIn, TagsmithError
from tagsmith_client.models import Count, Image, KnownDigest, Label, Limits, Session, User

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "Client",
    "ConnectionFailed",
    "Count",
    "Image",
    "KnownDigest",
    "Label",
    "Limits",
    "NotLoggedIn",
    "Session",
    "TagsmithError",
    "User",
]
