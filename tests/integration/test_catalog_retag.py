"""A vocabulary change re-tags stored images from their labels, without the model: in batches, resumably."""

import asyncio
import dataclasses
import subprocess
import sys

import pytest

from services.catalog.models import Outcome
from services.catalog.retag import Retagger
from services.catalog.store import CatalogStore
from services.common.db import open_pool
from services.common.vocabulary import Vocabulary, load
from tests.integration.test_catalog_store import CLASSIFICATION, new_image
from tests.support.auth_fixtures import REPO, service_env
from tests.support.waiting import eventually


def next_vocabulary() -> Vocabulary:
    """The shipped vocabulary with one more synonym for the golden retriever, as a new version."""
    current = load()
    classes = list(current.classes)
    golden = classes[207]
    classes[207] = dataclasses.replace(golden, synonyms=(*golden.synonyms, "goldie"))
    return Vocabulary("next-version", tuple(classes))


@pytest.fixture
async def pool(catalog_dsn):
    pool = await open_pool(catalog_dsn, max_size=2, name="retag-test")
    await pool.wait()
    try:
        yield pool
    finally:
        await pool.close()


async def _classified(store: CatalogStore, count: int) -> list[int]:
    ids = []
    for n in range(count):
        row, _ = await store.reserve(new_image(f"retag-{n}"))
        await store.finalize(row.id, Outcome("classified", classification=CLASSIFICATION))
        ids.append(row.id)
    return ids


async def _search(store: CatalogStore, word: str) -> list[int]:
    page = await store.search(owner="owner-1", query_terms=[word], min_score=0.1, after=None, limit=50)
    return sorted(row.id for row in page.rows)


async def test_a_new_vocabulary_retags_every_image_in_batches(pool):
    old = CatalogStore(pool)
    ids = await _classified(old, 5)
    assert await _search(old, "goldie") == []
    new = CatalogStore(pool, vocabulary=next_vocabulary())
    assert await new.count_untagged() == 5
    # One batch, then an interruption: the next run resumes with what is left.
    count, last = await new.retag_batch(after_id=0, limit=2)
    assert (count, last) == (2, ids[1])
    assert await new.count_untagged() == 3
    assert await Retagger(new, batch_size=2).run_all() == 3
    assert await new.count_untagged() == 0
    assert await _search(new, "goldie") == ids
    row = await new.get_by_id(ids[0])
    assert row.vocabulary_version == "next-version" and "goldie" in [tag.tag for tag in row.tags]
    assert row.labels == (await old.get_by_id(ids[0])).labels
    assert await Retagger(new, batch_size=2).run_all() == 0


async def test_the_retag_command_tags_with_the_shipped_vocabulary(pool, catalog_dsn, tmp_path):
    stale = CatalogStore(pool, vocabulary=next_vocabulary())
    ids = await _classified(stale, 2)
    env = service_env(TAGSMITH_POSTGRES_DSN=catalog_dsn, TAGSMITH_BLOB_DIR=str(tmp_path / "blobs"))
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.catalog", "retag", "--batch-size", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    current = CatalogStore(pool)
    assert await current.count_untagged() == 0
    assert await _search(current, "goldie") == []
    assert await _search(current, "retriever") == ids


async def test_the_server_retags_in_the_background_after_a_vocabulary_change(pool, catalog_server):
    ids = await _classified(CatalogStore(pool, vocabulary=next_vocabulary()), 3)
    await catalog_server(retag_enabled=True)
    current = CatalogStore(pool)

    async def all_tagged() -> bool:
        return await current.count_untagged() == 0

    await eventually(all_tagged, awaiting="the background re-tag of every image", within=30, interval=0.1)
    assert await _search(current, "retriever") == ids
    assert await _search(current, "goldie") == []
