"""Classifying stored images: the pending-queue worker and model-upgrade reclassification share this."""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from services.catalog.blobstore import BlobNotFound, BlobStore
from services.catalog.content import ContentBytes, original_key
from services.catalog.inference_client import InferenceClient, InferenceFailed, InferenceRejected
from services.catalog.models import Classification, ImageRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    row: ImageRow
    classification: Classification | None = None
    # Set when the image cannot be classified; `permanent` when retrying cannot help.
    error: str = ""
    permanent: bool = False


class StoredImageClassifier:
    """Streams stored originals to the inference service, a few at a time, and keeps the thumbnails it sends."""

    def __init__(self, *, blobs: BlobStore, inference: InferenceClient, timeout: float, concurrency: int) -> None:
        self._blobs = blobs
        self._contents = ContentBytes(blobs)
        self._inference = inference
        self._timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)

    async def classify_all(self, rows: Sequence[ImageRow], token: str) -> list[Result | BaseException]:
        """One Result per row; InferenceUnavailable (or any unexpected error) comes back as the exception."""
        return await asyncio.gather(*(self._one(row, token) for row in rows), return_exceptions=True)

    async def _one(self, row: ImageRow, token: str) -> Result:
        async with self._slots:
            try:
                reader = await self._blobs.open(original_key(row.sha256))
            except BlobNotFound:
                return Result(row, error="the stored image bytes are missing", permanent=True)
            try:
                found = await self._inference.classify(reader.chunks(), token=token, timeout=self._timeout)
            except InferenceRejected as exc:
                return Result(row, error=f"the classifier rejected the image: {exc}", permanent=True)
            except InferenceFailed as exc:
                return Result(row, error=str(exc))
            finally:
                await reader.close()
        await self._contents.save_thumbnail(row.sha256, found, thumb_format=row.thumb_format)
        return Result(row, classification=found)
