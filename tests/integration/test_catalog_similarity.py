"""Similar-photo search and near-duplicate links against a real PostgreSQL with pgvector's HNSW index."""

import hashlib
import itertools

import numpy as np
import pytest

from services.catalog import embedding_upgrade
from services.catalog.models import NewImage, Outcome
from services.catalog.store import CatalogStore
from services.catalog.store.similarity import EMBEDDING_DIMENSIONS, NEAR_DUPLICATE_SIMILARITY, SimilarityIndex, _groups
from services.common.db import open_pool
from tests.integration.test_catalog_store import CLASSIFICATION


@pytest.fixture
async def pool(catalog_dsn):
    pool = await open_pool(catalog_dsn, max_size=2, name="similarity-test")
    await pool.wait()
    try:
        yield pool
    finally:
        await pool.close()


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def nudged(vector: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    return unit(vector + amount * rng.standard_normal(EMBEDDING_DIMENSIONS) / np.sqrt(EMBEDDING_DIMENSIONS))


async def add_image(store: CatalogStore, index: SimilarityIndex, *, owner: str, seed: str, embedding) -> int:
    digest = hashlib.sha256(f"{owner}/{seed}".encode()).hexdigest()
    uid = f"{seed}-{owner}"[:22].ljust(22, "x")
    new = NewImage(uid, owner, digest, f"{seed}.jpg", "image/jpeg", 1, 4, 3, "jpeg", orientation=1)
    row, _ = await store.reserve(new)
    await store.finalize(row.id, Outcome("classified", classification=CLASSIFICATION))
    await index.store(image_id=row.id, owner=owner, embedding=embedding.tolist())
    return row.id


# Owners with few images are compared exactly, others through the HNSW index: both ways must keep to the owner.
SEARCHES = pytest.mark.parametrize("exact_max", [0, 10_000], ids=["indexed", "exact"])


@SEARCHES
async def test_similar_photos_are_the_owners_own_nearest_first(pool, exact_max):
    store, index, rng = CatalogStore(pool), SimilarityIndex(pool, exact_max_images=exact_max), np.random.default_rng(7)
    query = unit(rng.standard_normal(EMBEDDING_DIMENSIONS))
    mine = [
        await add_image(store, index, owner="alice", seed=f"a{i}", embedding=nudged(query, rng, 0.3 * i))
        for i in range(6)
    ]
    # Many other users hold images closer to the query than any of alice's: none may appear.
    for user in range(20):
        for i in range(10):
            await add_image(store, index, owner=f"user{user}", seed=f"u{i}", embedding=nudged(query, rng, 0.01))
    found = await index.similar_to(image_id=mine[0], owner="alice", limit=10)
    assert [n.image_id for n in found] == mine[1:], "alice's other images, nearest first, and nothing else"
    assert all(a.similarity >= b.similarity for a, b in itertools.pairwise(found))
    # Another owner's image is not alice's to search from: as if it had no embedding.
    assert await index.similar_to(image_id=mine[0], owner="user0", limit=10) is None


async def test_an_owner_sharing_a_partition_with_many_others_finds_only_their_own(pool):
    """Every owner's embeddings sit in one of 16 partitions, shared with other owners: the index walk in a crowded
    partition must still return the owner's images only, and all of them when few."""
    store, index, rng = CatalogStore(pool), SimilarityIndex(pool, exact_max_images=0), np.random.default_rng(9)
    query = unit(rng.standard_normal(EMBEDDING_DIMENSIONS))
    mine = [
        await add_image(store, index, owner="carol", seed=f"c{i}", embedding=nudged(query, rng, 2.0)) for i in range(3)
    ]
    for user in range(64):
        await add_image(store, index, owner=f"crowd{user}", seed="x", embedding=nudged(query, rng, 0.01))
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM catalog.image_embeddings WHERE owner_id <> 'carol' AND tableoid ="
            " (SELECT tableoid FROM catalog.image_embeddings WHERE owner_id = 'carol' LIMIT 1)"
        )
        assert (await cur.fetchone())[0] > 0, "carol's partition holds other owners' images"
    found = await index.similar_to(image_id=mine[0], owner="carol", limit=10)
    assert sorted(n.image_id for n in found) == sorted(mine[1:])


@SEARCHES
async def test_a_near_duplicate_links_to_the_earlier_shot_and_groups_form(pool, exact_max):
    store, index, rng = CatalogStore(pool), SimilarityIndex(pool, exact_max_images=exact_max), np.random.default_rng(8)
    shot = unit(rng.standard_normal(EMBEDDING_DIMENSIONS))
    first = await add_image(store, index, owner="alice", seed="first", embedding=shot)
    again = await add_image(store, index, owner="alice", seed="again", embedding=nudged(shot, rng, 0.05))
    other = await add_image(
        store, index, owner="alice", seed="other", embedding=unit(rng.standard_normal(EMBEDDING_DIMENSIONS))
    )
    # The same shot in bob's library is not alice's duplicate.
    bobs = await add_image(store, index, owner="bob", seed="bobs", embedding=nudged(shot, rng, 0.05))
    async with pool.connection() as conn:
        links = dict(await (await conn.execute("SELECT id, near_duplicate_of FROM catalog.images")).fetchall())
    assert links[again] == first and links[other] is None and links[bobs] is None
    assert await index.duplicate_groups(owner="alice", max_links=100) == [[again, first]]
    assert await index.duplicate_groups(owner="bob", max_links=100) == []


def test_groups_join_chains_and_order_newest_first():
    assert _groups([(5, 3), (3, 1), (9, 8)]) == [[9, 8], [5, 3, 1]]
    assert NEAR_DUPLICATE_SIMILARITY < 1


async def test_embeddings_stored_before_the_projection_are_projected_without_the_model(pool):
    store, index, rng = CatalogStore(pool), SimilarityIndex(pool), np.random.default_rng(11)
    query = unit(rng.standard_normal(EMBEDDING_DIMENSIONS))
    old = {
        await add_image(store, index, owner="alice", seed=f"o{i}", embedding=nudged(query, rng, 0.3 * i)): i
        for i in range(5)
    }
    # As migration 0019 left them: the model's 1280 numbers, set aside in the old table.
    async with pool.connection() as conn:
        await conn.execute("DELETE FROM catalog.image_embeddings WHERE image_id = ANY(%s)", [list(old)])
        for image_id, i in old.items():
            text = "[" + ",".join(f"{x:.6f}" for x in nudged(query, np.random.default_rng(i), 0.3 * i)) + "]"
            await conn.execute(
                "INSERT INTO catalog.image_embeddings_1280 VALUES (%s, 'alice', %s::public.halfvec)", [image_id, text]
            )
    first = min(old)
    assert await index.similar_to(image_id=first, owner="alice", limit=10) is None

    assert await embedding_upgrade.project_stored_embeddings(index, batch=2) == 5
    found = await index.similar_to(image_id=first, owner="alice", limit=10)
    assert [n.image_id for n in found] == sorted(old)[1:], "the projected embeddings, nearest first"
    async with pool.connection() as conn:
        left = await (await conn.execute("SELECT count(*) FROM catalog.image_embeddings_1280")).fetchone()
    assert left == (0,)
    assert await embedding_upgrade.project_stored_embeddings(index) == 0
