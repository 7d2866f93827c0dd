"""Object storage for image bytes and thumbnails: one interface, a local-directory and an S3 driver."""

from services.catalog.blobstore.base import (
    CHUNK_BYTES,
    BlobInfo,
    BlobNotFound,
    BlobReader,
    BlobStore,
    BlobStoreUnavailable,
    check_key,
)
from services.catalog.blobstore.local import LocalBlobStore
from services.catalog.config import Settings

__all__ = [
    "CHUNK_BYTES",
    "BlobInfo",
    "BlobNotFound",
    "BlobReader",
    "BlobStore",
    "BlobStoreUnavailable",
    "LocalBlobStore",
    "check_key",
    "open_blob_store",
]


def open_blob_store(settings: Settings) -> BlobStore:
    """The driver the settings choose; call ensure_ready() before use."""
    if settings.blob_driver == "s3":
        # Imported only when chosen: the S3 SDK costs start-up time and memory a local run does not need.
        from services.catalog.blobstore.s3 import S3BlobStore

        return S3BlobStore.connect(
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
            bucket=settings.s3_bucket,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
    return LocalBlobStore(settings.blob_dir)
