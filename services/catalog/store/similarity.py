"""Similar photos and near-duplicates from the stored embeddings (pgvector), always within one owner's images."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from pgvector import HalfVector
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from services.catalog.store.base import statement
from services.common.db import one_row
from services.common.model_contract import EMBEDDING_SIZE

EMBEDDING_DIMENSIONS = EMBEDDING_SIZE
# Stored and indexed: a fixed random projection of the model's 1280 numbers (see project), five times smaller, so
# the index builds and searches several times faster. Measured on 21 scikit-image photos with 7 variants each:
# cosine similarities move by 0.05 on average (at most 0.18 over 14k pairs); every photo's 7 nearest are still its
# own variants, and 95.9 % of variants still score 0.80 or more against their original, as at full size.
STORED_DIMENSIONS = 256
_PROJECTION_SEED = b"tagsmith embedding projection v1/"
# Cosine similarity at or above which two of a user's photos are near-duplicates. Measured on 17 scikit-image
# photos, each with 7 variants (JPEG q30, half size, 90 % and 80 % crops, mirrored, 30 % brighter, shifted 10 %):
# variants score 0.77-1.00 (median 0.97) against their original, unrelated photos at most 0.51 (median 0.15).
# At 0.80, 98 % of variant pairs are found and none of the 136 unrelated pairs.
NEAR_DUPLICATE_SIMILARITY = 0.80
# Owners with at most this many images are searched exactly, every one of their embeddings compared (about 2.5 us
# each): no slower than the index then, and exact. Larger libraries walk the HNSW index of their partition.
EXACT_SEARCH_MAX_IMAGES = 2_000
# How many index candidates one similar-photo query may examine; iterative scans keep going past ef_search
# until the owner filter has found enough rows or this many tuples were visited.
_EF_SEARCH = 40
_MAX_SCAN_TUPLES = 20_000

_SCAN_SETTINGS = statement(
    "SELECT set_config('hnsw.ef_search', %(ef_search)s, true),"
    " set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.max_scan_tuples', %(tuples)s, true)"
)
_DISTANCE = sql.SQL("OPERATOR(public.<=>)")
# Where candidates come from: the table, whose HNSW index the ordered scan walks with the owner filter inside it,
# or the owner's embeddings read out first (a materialised CTE has no index, so the nearest are found exactly).
_INDEXED = {"mine": sql.SQL(""), "candidates": sql.SQL("catalog.image_embeddings")}
_EXACT = {
    "mine": sql.SQL(
        "WITH mine AS MATERIALIZED (SELECT image_id, owner_id, embedding FROM catalog.image_embeddings"
        " WHERE owner_id = %(owner)s) "
    ),
    "candidates": sql.SQL("mine"),
}
# Every statement names the owner, so PostgreSQL reads only the partition holding their images. relaxed_order may
# return the nearest rows slightly out of order, hence the outer sort. Images no longer classified (being
# deleted, reclassified into failure) drop out after the scan, so a few spare rows are read.
_SIMILAR = (
    "{mine}SELECT found.image_id, 1 - found.distance AS similarity FROM catalog.image_embeddings AS q"
    " CROSS JOIN LATERAL (SELECT e.image_id, e.embedding {distance} q.embedding AS distance"
    " FROM {candidates} AS e WHERE e.owner_id = %(owner)s AND e.image_id <> q.image_id"
    " ORDER BY e.embedding {distance} q.embedding LIMIT %(limit)s + 10) AS found"
    " JOIN catalog.images AS i ON i.id = found.image_id AND i.status = 'classified' AND i.deleted_at IS NULL"
    " WHERE q.owner_id = %(owner)s AND q.image_id = %(id)s ORDER BY found.distance, found.image_id DESC"
    " LIMIT %(limit)s"
)
_SIMILAR_INDEXED = statement(_SIMILAR, distance=_DISTANCE, **_INDEXED)
_SIMILAR_EXACT = statement(_SIMILAR, distance=_DISTANCE, **_EXACT)
_NEAREST_OTHER = (
    "{mine}SELECT e.image_id, i.uid, 1 - (e.embedding {distance} %(embedding)s::public.halfvec) AS similarity"
    " FROM {candidates} AS e JOIN catalog.images AS i ON i.id = e.image_id AND i.deleted_at IS NULL"
    " WHERE e.owner_id = %(owner)s AND e.image_id <> %(id)s"
    " ORDER BY e.embedding {distance} %(embedding)s::public.halfvec LIMIT 1"
)
_NEAREST_OTHER_INDEXED = statement(_NEAREST_OTHER, distance=_DISTANCE, **_INDEXED)
_NEAREST_OTHER_EXACT = statement(_NEAREST_OTHER, distance=_DISTANCE, **_EXACT)
# The owner's image count, kept by a trigger on catalog.images (storage_usage): an upper bound on their embeddings.
_OWNER_IMAGES = statement(
    "SELECT coalesce((SELECT images FROM catalog.storage_usage WHERE owner_id = %(owner)s), 0),"
    " EXISTS (SELECT FROM catalog.image_embeddings WHERE owner_id = %(owner)s AND image_id = %(id)s)"
)
_SAVE = statement(
    "WITH saved AS (INSERT INTO catalog.image_embeddings (image_id, owner_id, embedding)"
    " SELECT id, owner_id, %(embedding)s::public.halfvec FROM catalog.images WHERE id = %(id)s AND owner_id = %(owner)s"
    " ON CONFLICT (owner_id, image_id) DO UPDATE SET embedding = excluded.embedding RETURNING image_id)"
    " UPDATE catalog.images SET near_duplicate_of = %(near)s WHERE id IN (SELECT image_id FROM saved)"
)
_DUPLICATE_LINKS = statement(
    "SELECT id, near_duplicate_of FROM catalog.images WHERE owner_id = %(owner)s AND near_duplicate_of IS NOT NULL"
    " AND status = 'classified' AND deleted_at IS NULL ORDER BY id DESC LIMIT %(limit)s"
)
_MISSING = statement(
    "SELECT i.id, i.uid, i.owner_id, i.sha256 FROM catalog.images AS i WHERE i.status = 'classified'"
    " AND i.id > %(after)s AND NOT EXISTS"
    " (SELECT FROM catalog.image_embeddings AS e WHERE e.owner_id = i.owner_id AND e.image_id = i.id)"
    " ORDER BY i.id LIMIT %(limit)s"
)


# Embeddings stored before migration 0019 (1280 numbers), taken a batch at a time to be projected.
_TAKE_UNPROJECTED = statement(
    "DELETE FROM catalog.image_embeddings_1280 WHERE image_id IN (SELECT image_id FROM catalog.image_embeddings_1280"
    " ORDER BY image_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING image_id, owner_id, embedding::text"
)
# An embedding stored since (by an upload or the backfill) is newer and stays.
_PUT_PROJECTED = statement(
    "INSERT INTO catalog.image_embeddings (image_id, owner_id, embedding) VALUES (%s, %s, %s::public.halfvec)"
    " ON CONFLICT (owner_id, image_id) DO NOTHING"
)


@dataclass(frozen=True)
class Neighbour:
    image_id: int
    similarity: float


@cache
def _projection() -> np.ndarray:
    """A 1280 x 256 matrix of +-1/16 (Achlioptas' random projection, which keeps angles), derived from SHA-256 so
    that every process, version and platform computes the same one: row i holds the bits of one digest."""
    digests = b"".join(hashlib.sha256(_PROJECTION_SEED + str(row).encode()).digest() for row in range(EMBEDDING_SIZE))
    bits = np.unpackbits(np.frombuffer(digests, dtype=np.uint8)).reshape(EMBEDDING_SIZE, -1)[:, :STORED_DIMENSIONS]
    matrix: np.ndarray = (bits.astype(np.float32) * 2 - 1) / np.sqrt(STORED_DIMENSIONS)
    matrix.setflags(write=False)
    return matrix


def project(embeddings: np.ndarray) -> np.ndarray:
    """Model embeddings (rows of 1280) as the unit vectors of STORED_DIMENSIONS that are stored and compared."""
    projected: np.ndarray = np.asarray(embeddings, dtype=np.float32) @ _projection()
    unit: np.ndarray = projected / np.linalg.norm(projected, axis=-1, keepdims=True)
    return unit


def as_vector(embedding: Sequence[float] | np.ndarray) -> str:
    """The projected embedding in pgvector's text form, cast to halfvec in the statements (no per-connection type
    registration needed)."""
    vector = np.asarray(embedding, dtype=np.float32)
    if vector.shape != (EMBEDDING_DIMENSIONS,) or not np.isfinite(vector).all() or not vector.any():
        raise ValueError(f"an embedding has {EMBEDDING_DIMENSIONS} finite numbers, not all zero; got {vector.shape}")
    return HalfVector(project(vector).astype(np.float16)).to_text()


async def _plan_search(conn: AsyncConnection, *, owner: str, image_id: int, exact_max: int) -> tuple[bool, bool]:
    """(whether the image has an embedding, whether to search the owner's images exactly); an indexed search gets
    this transaction's iterative-scan settings."""
    cur = await conn.execute(_OWNER_IMAGES, {"owner": owner, "id": image_id})
    images, stored = one_row(await cur.fetchone(), "counting the owner's images")
    exact = images <= exact_max
    if not exact:
        await conn.execute(_SCAN_SETTINGS, {"ef_search": str(_EF_SEARCH), "tuples": str(_MAX_SCAN_TUPLES)})
    return bool(stored), exact


def _groups(links: list[tuple[int, int]]) -> list[list[int]]:
    """Connected groups of (image, image it nearly duplicates) links, each newest first, newest group first."""
    parent: dict[int, int] = {}

    def root(image_id: int) -> int:
        while parent.setdefault(image_id, image_id) != image_id:
            parent[image_id] = parent[parent[image_id]]
            image_id = parent[image_id]
        return image_id

    for image_id, other in links:
        parent[root(image_id)] = root(other)
    groups: dict[int, list[int]] = {}
    for image_id in parent:
        groups.setdefault(root(image_id), []).append(image_id)
    ordered = [sorted(members, reverse=True) for members in groups.values() if len(members) > 1]
    return sorted(ordered, key=lambda members: members[0], reverse=True)


async def save_embedding(
    conn: AsyncConnection,
    *,
    image_id: int,
    owner: str,
    embedding: Sequence[float],
    exact_max: int = EXACT_SEARCH_MAX_IMAGES,
) -> str | None:
    """Stores the image's embedding, in the caller's transaction, and links the image to the other image of the
    same owner it nearly duplicates; returns that image's uid, or None. Any other image, not only earlier ones: in a
    bulk import the later upload may be analysed first, and the pair must still end up linked."""
    vector = as_vector(embedding)
    _, exact = await _plan_search(conn, owner=owner, image_id=image_id, exact_max=exact_max)
    nearest_other = _NEAREST_OTHER_EXACT if exact else _NEAREST_OTHER_INDEXED
    cur = await conn.execute(nearest_other, {"embedding": vector, "owner": owner, "id": image_id})
    nearest = await cur.fetchone()
    near = nearest if nearest is not None and nearest[2] >= NEAR_DUPLICATE_SIMILARITY else None
    params = {"embedding": vector, "near": None if near is None else near[0], "id": image_id, "owner": owner}
    await conn.execute(_SAVE, params)
    return None if near is None else str(near[1])


class SimilarityIndex:
    """Embeddings in catalog.images and the questions asked of them; every query is scoped to one owner."""

    def __init__(self, pool: AsyncConnectionPool, *, exact_max_images: int = EXACT_SEARCH_MAX_IMAGES) -> None:
        self._pool = pool
        self._exact_max = exact_max_images

    async def store(self, *, image_id: int, owner: str, embedding: Sequence[float]) -> str | None:
        """save_embedding in a transaction of its own."""
        async with self._pool.connection() as conn, conn.transaction():
            return await save_embedding(
                conn, image_id=image_id, owner=owner, embedding=embedding, exact_max=self._exact_max
            )

    async def project_stored(self, *, limit: int) -> int:
        """Moves up to `limit` embeddings stored before migration 0019 into the projected table, in one transaction
        (SKIP LOCKED, so replicas share the work); returns how many it took, 0 once none are left."""
        async with self._pool.connection() as conn, conn.transaction():
            rows = await (await conn.execute(_TAKE_UNPROJECTED, {"limit": limit})).fetchall()
            if not rows:
                return 0
            vectors = project(np.stack([HalfVector.from_text(text).to_numpy() for _, _, text in rows]))
            kept = [
                (image_id, owner, HalfVector(vector.astype(np.float16)).to_text())
                for (image_id, owner, _), vector in zip(rows, vectors, strict=True)
                if np.isfinite(vector).all()
            ]
            async with conn.cursor() as cur:
                await cur.executemany(_PUT_PROJECTED, kept)
        return len(rows)

    async def similar_to(self, *, image_id: int, owner: str, limit: int) -> list[Neighbour] | None:
        """The owner's images nearest to this one of theirs, best first, the image itself excluded; None when the
        image has no embedding yet."""
        async with self._pool.connection() as conn, conn.transaction():
            stored, exact = await _plan_search(conn, owner=owner, image_id=image_id, exact_max=self._exact_max)
            if not stored:
                return None
            similar = _SIMILAR_EXACT if exact else _SIMILAR_INDEXED
            cur = await conn.execute(similar, {"id": image_id, "owner": owner, "limit": limit})
            return [Neighbour(found, float(similarity)) for found, similarity in await cur.fetchall()]

    async def duplicate_groups(self, *, owner: str, max_links: int) -> list[list[int]]:
        """The owner's near-duplicate groups as image ids (see _groups)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(_DUPLICATE_LINKS, {"owner": owner, "limit": max_links})
            return _groups(await cur.fetchall())

    async def missing(self, *, after_id: int, limit: int) -> list[tuple[int, str, str, str]]:
        """Classified images without an embedding yet, by id: (id, uid, owner, sha256), for the backfill."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(_MISSING, {"after": after_id, "limit": limit})
            return await cur.fetchall()
