"""Where an image's bytes live: content-addressed object keys built only from a validated SHA-256."""

import io
import logging
import re
from typing import IO

from services.catalog.blobstore import BlobStore, BlobStoreUnavailable
from services.catalog.ids import is_valid_sha256
from services.catalog.models import Classification

log = logging.getLogger(__name__)

ORIGINALS = "objects/"
THUMBNAILS = "thumbs/"
THUMB_SIZE = 256
# The long side of the display copy a viewer shows when the browser cannot decode the original (HEIC).
DISPLAY_SIZE = 1600
THUMB_SIZES = (THUMB_SIZE, DISPLAY_SIZE)
_THUMB_EXTENSIONS = {"jpeg": "jpg", "png": "png"}
THUMB_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}
_KEY_HASH = re.compile(r"(?:objects/([0-9a-f]{64})|thumbs/([0-9a-f]{64})-(?:256|1600)\.(?:jpg|png))")


def _checked(sha256: str) -> str:
    if not is_valid_sha256(sha256):
        raise ValueError("not a hex SHA-256")
    return sha256


def original_key(sha256: str) -> str:
    return f"{ORIGINALS}{_checked(sha256)}"


def thumbnail_key(sha256: str, thumb_format: str, size: int = THUMB_SIZE) -> str:
    if size not in THUMB_SIZES:
        raise ValueError(f"no thumbnail size {size}")
    return f"{THUMBNAILS}{_checked(sha256)}-{size}.{_THUMB_EXTENSIONS[thumb_format]}"


def hash_of(key: str) -> str | None:
    """The content hash a key belongs to, or None for keys this service does not manage."""
    match = _KEY_HASH.fullmatch(key)
    return None if match is None else match.group(1) or match.group(2)


class ContentBytes:
    """Originals and thumbnails of one content hash, shared by every row with that hash."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    async def save_original(self, sha256: str, source: IO[bytes], size: int, *, content_type: str) -> None:
        """Writes the bytes unless an identical object is already stored (content addressing)."""
        source.seek(0)
        await self.blobs.put_new(original_key(sha256), source, size, content_type=content_type)

    async def save_thumbnail(self, sha256: str, classification: Classification | None, *, thumb_format: str) -> None:
        """Stores the thumbnail inference made from its own decode, so the original is never decoded again here.

        Best effort: without it (none sent, another format, storage down) the thumbnail is rendered on request.
        """
        if classification is None or not classification.thumbnail or classification.thumbnail_format != thumb_format:
            return
        data = classification.thumbnail
        try:
            await self.blobs.put_new(
                thumbnail_key(sha256, thumb_format), io.BytesIO(data), len(data), content_type=THUMB_TYPES[thumb_format]
            )
        except BlobStoreUnavailable:
            log.warning("could not store the thumbnail of %s; it is rendered on first request", sha256)

    async def remove(self, sha256: str) -> None:
        """Removes the original and any cached thumbnail or display copy; missing objects are fine."""
        thumbs = [thumbnail_key(sha256, fmt, size) for fmt in _THUMB_EXTENSIONS for size in THUMB_SIZES]
        for key in (original_key(sha256), *thumbs):
            await self.blobs.delete(key)

    async def discard(self, sha256: str) -> None:
        """Like remove(), but while storage is unreachable the bytes stay: no row refers to them any more,
        so the sweeper removes them later, and the caller's change (a delete) still succeeds."""
        try:
            await self.remove(sha256)
        except BlobStoreUnavailable:
            log.warning("object storage unreachable; the sweeper will remove the bytes of %s", sha256)
