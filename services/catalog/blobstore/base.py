"""The object-storage interface every driver implements, and the key rules they all enforce."""

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO

# Keys look like "objects/<sha256>" or "thumbs/<sha256>-256.jpg": a lower-case folder, then one name that
# starts with a letter or digit, so no key can climb out of its root ("..") or be absolute.
_KEY = re.compile(r"[a-z0-9]+/[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PREFIX = re.compile(r"[a-z0-9]+/")
CHUNK_BYTES = 1024 * 1024


class BlobNotFound(Exception):
    """No object under that key."""


class BlobStoreUnavailable(Exception):
    """The storage backend could not be reached or refused the request."""


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"invalid object key {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"invalid key prefix {prefix!r}")
    return prefix


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    modified: datetime


class BlobReader(ABC):
    """An open object, read piece by piece; always close it."""

    size: int

    @abstractmethod
    async def read(self, n: int = CHUNK_BYTES) -> bytes:
        """Up to `n` bytes; b"" at the end."""

    @abstractmethod
    async def close(self) -> None: ...

    async def chunks(self, n: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        while chunk := await self.read(n):
            yield chunk


class BlobStore(ABC):
    """Whole objects under validated keys: written atomically, read as a stream, listed by prefix."""

    @abstractmethod
    async def ensure_ready(self) -> None:
        """Creates the bucket or directory when missing."""

    @abstractmethod
    async def put(self, key: str, source: IO[bytes], size: int, *, content_type: str) -> None:
        """Stores `size` bytes read from `source`; readers see the old object or the new one, never a mix."""

    async def put_new(self, key: str, source: IO[bytes], size: int, *, content_type: str) -> bool:
        """Like put(), unless an object already exists under `key`; True when written.

        For content-addressed keys, where an existing object holds the same bytes.
        """
        if await self.exists(key):
            return False
        await self.put(key, source, size, content_type=content_type)
        return True

    @abstractmethod
    async def open(self, key: str) -> BlobReader:
        """Raises BlobNotFound when there is no such object."""

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Removes the object; a missing one is not an error."""

    @abstractmethod
    def list(self, prefix: str) -> AsyncIterator[BlobInfo]:
        """Every object whose key starts with `prefix` (a top folder such as "objects/")."""

    async def close(self) -> None:
        return None
