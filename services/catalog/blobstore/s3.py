"""The S3 driver (MinIO or any S3 endpoint) on the synchronous minio SDK, each call run in a worker thread."""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO, Any, TypeVar

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from services.catalog.blobstore.base import (
    CHUNK_BYTES,
    BlobInfo,
    BlobNotFound,
    BlobReader,
    BlobStore,
    BlobStoreUnavailable,
    check_key,
    check_prefix,
)

T = TypeVar("T")
_MISSING = ("NoSuchKey", "NoSuchObject", "NotFound")
_LIST_BATCH = 1000
# Objects larger than this go up in multipart pieces of this size.
_PART_BYTES = 16 * 1024 * 1024
_CONNECT_SECONDS = 5.0
_READ_SECONDS = 60.0


async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs a blocking SDK call in a thread, turning transport and server failures into BlobStoreUnavailable."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except S3Error as exc:
        if exc.code in _MISSING:
            raise BlobNotFound(exc.object_name or "") from None
        raise BlobStoreUnavailable(f"object storage refused the request: {exc.code}") from exc
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise BlobStoreUnavailable("object storage is unreachable") from exc


class _ObjectReader(BlobReader):
    def __init__(self, response: urllib3.BaseHTTPResponse, size: int) -> None:
        self._response = response
        self.size = size

    async def read(self, n: int = CHUNK_BYTES) -> bytes:
        return await _call(self._response.read, n)

    async def close(self) -> None:
        def release() -> None:
            self._response.close()
            self._response.release_conn()

        await asyncio.to_thread(release)


class S3BlobStore(BlobStore):
    """Objects in one bucket; the bucket is created on start-up when missing."""

    def __init__(self, client: Minio, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    @classmethod
    def connect(
        cls,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool,
        region: str,
        retries: int = 3,
    ) -> "S3BlobStore":
        """A store with bounded timeouts: a hung endpoint fails a call instead of holding it for minutes."""
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=_CONNECT_SECONDS, read=_READ_SECONDS),
            retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
            maxsize=16,
        )
        client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region or None,
            http_client=http,
        )
        return cls(client, bucket)

    async def ensure_ready(self) -> None:
        if not await _call(self._client.bucket_exists, self._bucket):
            try:
                await _call(self._client.make_bucket, self._bucket)
            except BlobStoreUnavailable:
                # Another replica may have created it in the meantime.
                if not await _call(self._client.bucket_exists, self._bucket):
                    raise

    async def put(self, key: str, source: IO[bytes], size: int, *, content_type: str) -> None:
        part_size = _PART_BYTES if size > _PART_BYTES else 0
        await _call(
            self._client.put_object,
            self._bucket,
            check_key(key),
            source,
            size,
            content_type=content_type,
            part_size=part_size,
        )

    async def open(self, key: str) -> BlobReader:
        response = await _call(self._client.get_object, self._bucket, check_key(key))
        return _ObjectReader(response, int(response.headers.get("Content-Length", "0")))

    async def exists(self, key: str) -> bool:
        try:
            await _call(self._client.stat_object, self._bucket, check_key(key))
        except BlobNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        try:
            await _call(self._client.remove_object, self._bucket, check_key(key))
        except BlobNotFound:
            return

    async def list(self, prefix: str) -> AsyncIterator[BlobInfo]:
        objects = self._client.list_objects(self._bucket, prefix=check_prefix(prefix), recursive=True)
        while batch := await _call(_take, objects, _LIST_BATCH):
            for item in batch:
                yield BlobInfo(key=item.object_name, size=item.size or 0, modified=item.last_modified)


def _take(iterator: Iterator[T], n: int) -> list[T]:
    batch: list[T] = []
    for item in iterator:
        batch.append(item)
        if len(batch) == n:
            break
    return batch
