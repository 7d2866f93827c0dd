"""One contract for every object-storage driver: the local directory and S3 (moto's server, or MinIO)."""

import io
import os
from datetime import UTC, datetime, timedelta

import pytest

from services.catalog.blobstore import BlobNotFound, BlobStore, BlobStoreUnavailable, LocalBlobStore
from services.catalog.blobstore.s3 import S3BlobStore
from tests.support.ports import free_port


@pytest.fixture(params=["local", "s3"])
async def store(request, tmp_path) -> BlobStore:
    local = request.param == "local"
    blobs = LocalBlobStore(tmp_path / "blobs") if local else request.getfixturevalue("s3_blob_store")
    await blobs.ensure_ready()
    await blobs.ensure_ready()  # idempotent: an existing bucket or directory is fine
    yield blobs
    await blobs.close()


async def _read_all(blobs: BlobStore, key: str, n: int = 1024 * 1024) -> bytes:
    reader = await blobs.open(key)
    try:
        return b"".join([chunk async for chunk in reader.chunks(n)])
    finally:
        await reader.close()


async def test_put_then_read_back_in_chunks(store):
    data = os.urandom(300_000)
    await store.put("objects/a1", io.BytesIO(data), len(data), content_type="image/jpeg")
    reader = await store.open("objects/a1")
    assert reader.size == len(data)
    await reader.close()
    assert await _read_all(store, "objects/a1", 64 * 1024) == data
    assert await store.exists("objects/a1")


async def test_large_object_streams_through(store):
    data = os.urandom(17 * 1024 * 1024 + 5)
    await store.put("objects/big", io.BytesIO(data), len(data), content_type="application/octet-stream")
    assert await _read_all(store, "objects/big") == data


async def test_overwrite_replaces_whole_object(store):
    await store.put("thumbs/t-256.jpg", io.BytesIO(b"first version"), 13, content_type="image/jpeg")
    await store.put("thumbs/t-256.jpg", io.BytesIO(b"second"), 6, content_type="image/jpeg")
    assert await _read_all(store, "thumbs/t-256.jpg") == b"second"


async def test_missing_object(store):
    with pytest.raises(BlobNotFound):
        await store.open("objects/nothing")
    assert not await store.exists("objects/nothing")
    await store.delete("objects/nothing")  # deleting what is not there is fine


async def test_delete_removes(store):
    await store.put("objects/gone", io.BytesIO(b"x"), 1, content_type="image/png")
    await store.delete("objects/gone")
    assert not await store.exists("objects/gone")
    with pytest.raises(BlobNotFound):
        await store.open("objects/gone")


async def test_list_by_prefix_with_sizes_and_times(store):
    before = datetime.now(UTC) - timedelta(minutes=5)
    for key, body in (("objects/k1", b"1"), ("objects/k2", b"22"), ("thumbs/k1-256.jpg", b"333")):
        await store.put(key, io.BytesIO(body), len(body), content_type="image/jpeg")
    listed = [blob async for blob in store.list("objects/")]
    assert sorted((b.key, b.size) for b in listed) == [("objects/k1", 1), ("objects/k2", 2)]
    assert all(before < b.modified < datetime.now(UTC) + timedelta(minutes=5) for b in listed)
    assert [b.key async for b in store.list("empty/")] == []


@pytest.mark.parametrize(
    "key", ["../escape", "/abs/path", "objects/../../etc/passwd", "objects/", "objects/.hidden", "Objects/x", "a/b/c"]
)
async def test_invalid_keys_are_refused(store, key):
    with pytest.raises(ValueError, match="invalid object key"):
        await store.put(key, io.BytesIO(b"x"), 1, content_type="image/jpeg")
    with pytest.raises(ValueError, match="invalid object key"):
        await store.open(key)
    with pytest.raises(ValueError, match="invalid object key"):
        await store.delete(key)


async def test_short_source_fails_without_leaving_an_object(store):
    with pytest.raises((ValueError, BlobStoreUnavailable)):
        await store.put("objects/short", io.BytesIO(b"abc"), 10, content_type="image/jpeg")
    assert not await store.exists("objects/short")


async def test_unreachable_s3_is_unavailable():
    blobs = S3BlobStore.connect(
        endpoint=f"127.0.0.1:{free_port()}",
        access_key="a",
        secret_key="b",
        bucket="tagsmith-x",
        secure=False,
        region="us-east-1",
        retries=0,
    )
    with pytest.raises(BlobStoreUnavailable):
        await blobs.exists("objects/x")


async def test_local_files_stay_inside_root(tmp_path):
    blobs = LocalBlobStore(tmp_path / "root")
    await blobs.ensure_ready()
    await blobs.put("objects/abc", io.BytesIO(b"data"), 4, content_type="image/jpeg")
    assert (tmp_path / "root" / "objects" / "abc").read_bytes() == b"data"
    assert list((tmp_path / "root" / ".tmp").iterdir()) == []


async def test_a_missing_bucket_is_created(s3_endpoint):
    from minio import Minio

    endpoint, access_key, secret_key = s3_endpoint
    admin = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=False, region="us-east-1")
    bucket = f"tagsmith-new-{os.urandom(4).hex()}"
    blobs = S3BlobStore.connect(
        endpoint=endpoint, access_key=access_key, secret_key=secret_key, bucket=bucket, secure=False, region="us-east-1"
    )
    assert not admin.bucket_exists(bucket)
    await blobs.ensure_ready()
    assert admin.bucket_exists(bucket)
