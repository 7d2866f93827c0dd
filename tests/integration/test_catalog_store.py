"""The store against a real PostgreSQL: the upload path's one-statement writes give the same rows as the general path,
the pool stays clean, and rows read back equal the ones the dataclass builds."""

import hashlib

import pytest
from psycopg.rows import class_row

from services.catalog import terms
from services.catalog.models import Classification, ImageRow, NewImage, Outcome
from services.catalog.store import CatalogStore
from services.catalog.store.base import COLUMNS, image_rows
from services.catalog.terms import LabelScore
from services.common.db import open_pool

CLASSIFICATION = Classification(
    labels=[
        LabelScore("golden retriever", 207, 0.71),
        LabelScore("Labrador retriever", 208, 0.2),
        LabelScore("tennis ball", 852, 0.05),
    ],
    category="golden retriever",
    tags=["dog", "retriever", "ball"],
    model_name="efficientnet_lite0",
    model_version="1",
)


def new_image(seed: str, *, owner: str = "owner-1", attempt: int = 1) -> NewImage:
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return NewImage(
        uid=f"{seed}-{owner}-{attempt}",
        owner_id=owner,
        sha256=digest,
        filename=f"{seed}.jpg",
        content_type="image/jpeg",
        size_bytes=100,
        width=4,
        height=3,
        thumb_format="jpeg",
        orientation=1,
    )


@pytest.fixture
async def store(catalog_dsn):
    pool = await open_pool(catalog_dsn, max_size=2, name="store-test")
    await pool.wait()
    try:
        yield CatalogStore(pool)
    finally:
        await pool.close()


async def index_rows(store: CatalogStore, image_id: int) -> tuple[list, ...]:
    queries = (
        "SELECT tag, score, manual FROM catalog.tags WHERE image_id = %(id)s ORDER BY tag",
        "SELECT term, weight FROM catalog.search_terms WHERE image_id = %(id)s ORDER BY term",
        "SELECT tag, images FROM catalog.tag_counts WHERE images > 0 ORDER BY tag",
    )
    async with store.pool.connection() as conn:
        return tuple(
            [[tuple(row) for row in await (await conn.execute(q, {"id": image_id})).fetchall()] for q in queries]
        )


async def test_finalize_writes_the_rows_a_full_reclassification_writes(store):
    row, created = await store.reserve(new_image("a"))
    assert created and row.status == "uploading"
    final = await store.finalize(row.id, Outcome("classified", classification=CLASSIFICATION))
    assert final.status == "classified" and final.category == "golden retriever"
    tags = [tag.tag for tag in final.tags]
    assert tags[0] == "retriever" and {"dog", "golden retriever", "tennis ball", "ball"} <= set(tags)
    after_upload = await index_rows(store, row.id)
    assert ("labrador retriever", pytest.approx(0.2)) in after_upload[1]
    assert await store.save_classification(row.id, CLASSIFICATION, statuses=("classified",)) is not None
    assert await index_rows(store, row.id) == after_upload
    assert await store.category_counts("owner-1", min_score=0.5) == [("golden retriever", 1)]
    assert await store.category_counts("owner-1", min_score=0.8) == []


async def test_finalize_only_completes_an_uploading_row_once(store):
    row, _ = await store.reserve(new_image("b"))
    assert (await store.finalize(row.id, Outcome("pending", "waiting"))).status == "pending"
    assert await store.finalize(row.id, Outcome("classified", classification=CLASSIFICATION)) is None
    assert await index_rows(store, row.id) == ([], [], [])


async def test_reserving_the_same_bytes_again_joins_the_first_row(store):
    first, created = await store.reserve(new_image("c"))
    again, created_again = await store.reserve(new_image("c", attempt=2))
    other_owner, created_other = await store.reserve(new_image("c", owner="owner-2"))
    assert created and not created_again and created_other
    assert again.id == first.id and other_owner.id != first.id


async def test_connections_return_to_the_pool_in_transaction_mode(store):
    row, _ = await store.reserve(new_image("d"))
    await store.finalize(row.id, Outcome("classified", classification=CLASSIFICATION))
    for _ in range(2):
        async with store.pool.connection() as conn:
            assert conn.autocommit is False


async def test_the_precomputed_counts_use_the_default_min_score(store):
    async with store.pool.connection() as conn:
        threshold = (await (await conn.execute("SELECT catalog.count_threshold()")).fetchone())[0]
    assert threshold == terms.DEFAULT_MIN_SCORE


async def test_a_several_word_search_reads_the_rarest_word_first(store):
    # Words that seldom meet ("animal vehicle") made the search read the commoner word's rows until the end.
    async with store.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO catalog.term_counts (owner_id, term, images) VALUES"
            " ('owner-1', 'animal', 900), ('owner-1', 'vehicle', 12), ('owner-2', 'animal', 1)"
        )
        assert await store._rarest_first(conn, "owner-1", ["animal", "vehicle"]) == ["vehicle", "animal"]
        # Another owner's counts do not count; a word on none of the owner's images is the rarest of all.
        assert await store._rarest_first(conn, "owner-2", ["vehicle", "animal", "unicorn"]) == [
            "vehicle",
            "unicorn",
            "animal",
        ]


async def test_image_rows_equal_the_dataclass_built_ones_and_stay_immutable(store):
    row, _ = await store.reserve(new_image("rows"))
    await store.finalize(row.id, Outcome("classified", classification=CLASSIFICATION))
    query = f"SELECT {COLUMNS.as_string()} FROM catalog.images AS i WHERE id = %(id)s"
    async with store.pool.connection() as conn:
        fast = await (await conn.cursor(row_factory=image_rows).execute(query, {"id": row.id})).fetchone()
        built = await (await conn.cursor(row_factory=class_row(ImageRow)).execute(query, {"id": row.id})).fetchone()
        # Fewer columns than fields: the dataclass's own __init__, so a missing field is an error, not a gap.
        with pytest.raises(TypeError):
            await (await conn.cursor(row_factory=image_rows).execute("SELECT id, uid FROM catalog.images")).fetchone()
    assert fast == built and fast.labels and fast.tag_names == built.tag_names
    with pytest.raises(AttributeError):
        fast.status = "failed"  # type: ignore[misc]
