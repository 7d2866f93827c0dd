"""The sweeper removes unfinished uploads and unreferenced bytes after the grace period, and nothing else."""

import io
import os
import time
import uuid

import psycopg
import pytest
from tagsmith.catalog.v1 import catalog_pb2

from services.catalog.content import ContentBytes
from services.catalog.store import CatalogStore
from services.catalog.sweeper import Sweeper
from services.common.db import open_pool
from tests.support.images import image_bytes

HOUR = 3600


def _sha() -> str:
    return uuid.uuid4().hex * 2


async def _put(blobs, key: str, data: bytes = b"bytes") -> None:
    await blobs.put(key, io.BytesIO(data), len(data), content_type="image/jpeg")


async def _keys(blobs) -> set[str]:
    return {b.key async for b in blobs.list("objects/")} | {b.key async for b in blobs.list("thumbs/")}


def _insert_uploading(dsn: str, sha: str, *, age_seconds: float) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO catalog.images (uid, owner_id, sha256, filename, content_type, size_bytes, width, height,"
            " thumb_format, status, updated_at) VALUES (%s, 'crashed', %s, 'x.jpg', 'image/jpeg', 5, 1, 1, 'jpeg',"
            " 'uploading', now() - make_interval(secs => %s))",
            (uuid.uuid4().hex[:22], sha, age_seconds),
        )


@pytest.fixture
async def store(catalog_dsn):
    pool = await open_pool(catalog_dsn, max_size=3)
    yield CatalogStore(pool)
    await pool.close()


@pytest.fixture(params=["local", "s3"])
async def catalog(request, catalog_server, tmp_path):
    if request.param == "local":
        return await catalog_server()
    blobs = request.getfixturevalue("s3_blob_store")
    return await catalog_server(blob_store=blobs)


def _age(catalog, key: str, seconds: float) -> bool:
    """Backdates a local object; S3 objects cannot be, so those tests use a zero grace period instead."""
    root = getattr(catalog.blobs, "_root", None)
    if root is None:
        return False
    old = time.time() - seconds
    os.utime(root / key, (old, old))
    return True


async def test_orphans_and_stale_uploads_are_removed_after_grace(catalog, catalog_dsn, store, test_keys):
    alice = catalog.client(test_keys.token("alice"))
    kept = await alice.upload(image_bytes())
    await alice.GetThumbnail(catalog_pb2.GetThumbnailRequest(uid=kept.uid)).read()
    orphan, fresh, crashed, recent_upload = _sha(), _sha(), _sha(), _sha()
    await _put(catalog.blobs, f"objects/{orphan}")
    await _put(catalog.blobs, f"thumbs/{orphan}-256.jpg")
    await _put(catalog.blobs, f"objects/{fresh}")
    await _put(catalog.blobs, f"objects/{crashed}")
    await _put(catalog.blobs, f"objects/{recent_upload}")
    await _put(catalog.blobs, "objects/not-ours.txt")
    _insert_uploading(catalog_dsn, crashed, age_seconds=2 * HOUR)
    _insert_uploading(catalog_dsn, recent_upload, age_seconds=60)
    backdated = all(
        _age(catalog, key, 2 * HOUR)
        for key in (
            f"objects/{orphan}",
            f"thumbs/{orphan}-256.jpg",
            f"objects/{crashed}",
            f"objects/{kept.sha256}",
            f"objects/{recent_upload}",
            "objects/not-ours.txt",
        )
    )
    grace = HOUR if backdated else 0
    report = await Sweeper(store=store, contents=ContentBytes(catalog.blobs), grace_seconds=grace).sweep_once()
    left = await _keys(catalog.blobs)
    assert f"objects/{kept.sha256}" in left and f"thumbs/{kept.sha256}-256.jpg" in left
    assert f"objects/{orphan}" not in left and f"thumbs/{orphan}-256.jpg" not in left
    assert f"objects/{crashed}" not in left
    assert (f"objects/{recent_upload}" in left) == backdated  # within the grace period its upload may still run
    assert "objects/not-ours.txt" in left
    assert (f"objects/{fresh}" in left) == backdated
    assert report.uploads == (1 if backdated else 2)
    with psycopg.connect(catalog_dsn) as conn:
        owners = [row[0] for row in conn.execute("SELECT owner_id FROM catalog.images ORDER BY id")]
    assert owners == (["alice", "crashed"] if backdated else ["alice"])
    _, body = await alice.download(kept.uid)
    assert body == image_bytes()


async def test_one_replica_sweeps_at_a_time(catalog_server, store):
    catalog = await catalog_server()
    sweeper = Sweeper(store=store, contents=ContentBytes(catalog.blobs), grace_seconds=0)
    async with store.exclusive("catalog-sweeper") as held:
        assert held
        assert (await sweeper.sweep_once()).ran is False
    assert (await sweeper.sweep_once()).ran is True
