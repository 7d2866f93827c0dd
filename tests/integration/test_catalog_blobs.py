"""Content-addressed writes on both object-storage drivers: the first copy is kept, later ones are skipped."""

import io

import pytest

from services.catalog.blobstore import BlobStore, LocalBlobStore


@pytest.fixture(params=["local", "s3"])
async def blobs(request, tmp_path) -> BlobStore:
    store = LocalBlobStore(tmp_path / "blobs") if request.param == "local" else request.getfixturevalue("s3_blob_store")
    await store.ensure_ready()
    yield store
    await store.close()


async def read(blobs: BlobStore, key: str) -> bytes:
    reader = await blobs.open(key)
    try:
        return b"".join([chunk async for chunk in reader.chunks()])
    finally:
        await reader.close()


async def test_put_new_writes_only_when_nothing_is_stored(blobs):
    assert await blobs.put_new("objects/b1", io.BytesIO(b"first"), 5, content_type="image/jpeg")
    assert not await blobs.put_new("objects/b1", io.BytesIO(b"other"), 5, content_type="image/jpeg")
    assert await read(blobs, "objects/b1") == b"first"


async def test_local_put_new_refuses_a_short_source_and_leaves_nothing(tmp_path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    await blobs.ensure_ready()
    with pytest.raises(ValueError, match="expected 10 bytes, read 3"):
        await blobs.put_new("objects/b2", io.BytesIO(b"abc"), 10, content_type="image/jpeg")
    assert not await blobs.exists("objects/b2")
    assert list((tmp_path / "blobs" / ".tmp").iterdir()) == []
