"""Image uids: 128 random bits, URL-safe, and strictly validated before any use."""

import re
import secrets

# 16 random bytes in unpadded URL-safe base64 are exactly 22 characters of [A-Za-z0-9_-].
_UID = re.compile(r"[A-Za-z0-9_-]{22}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def new_uid() -> str:
    return secrets.token_urlsafe(16)


def is_valid_uid(value: str) -> bool:
    return _UID.fullmatch(value) is not None


def is_valid_sha256(value: str) -> bool:
    return _SHA256.fullmatch(value) is not None
