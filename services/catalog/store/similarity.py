"""Similar photos and near-duplicates from the stored embeddings (pgvector), always within one owner's images."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pgvector import HalfVector
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from services.catalog.store.base import statement
from services.common.db import one_row
from services.common.model_contract import EMBEDDING_SIZE

EMBEDDING_DIMENSIONS = EMBEDDING_SIZE
# Cosine similarity at or above which two of a user's photos are near-duplicates. Measured on 17 scikit-image
# photos, each with 7 variants (JPEG q30, half size, 90 % and 80 % crops, mirrored, 30 % brighter, shifted 10 %):
# variants score 0.77-1.00 (median 0.97) against their original, unrelated photos at most 0.51 (median 0.15).
# At 0.80, 98 % of variant pairs are found and none of the 136 unrelated pairs.
NEAR_DUPLICATE_SIMILARITY = 0.80
# How many index candidates one similar-photo query may examine; iterative scans keep going past ef_search
# until the owner filter has found enough rows or this many tuples were visited.
_EF_SEARCH = 100
_MAX_SCAN_TUPLES = 50_000

_SCAN_SETTINGS = statement(
    "SELECT set_config('hnsw.ef_search', %(ef_search)s, true),"
    " set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.max_scan_tuples', %(tuples)s, true)"
)
_DISTANCE = sql.SQL("OPERATOR(public.<=>)")
# The owner filter sits inside the ordered index scan, so the index is walked only for this owner's rows;
# relaxed_order may return the nearest rows slightly out of order, hence the outer sort. Images no longer
# classified (being deleted, reclassified into failure) drop out after the scan, so a few spare rows are read.
_SIMILAR = statement(
    "SELECT found.image_id, 1 - found.distance AS similarity FROM catalog.image_embeddings AS q"
    " CROSS JOIN LATERAL (SELECT e.image_id, e.embedding {distance} q.embedding AS distance"
    " FROM catalog.image_embeddings AS e WHERE e.owner_id = q.owner_id AND e.image_id <> q.image_id"
    " ORDER BY e.embedding {distance} q.embedding LIMIT %(limit)s + 10) AS found"
    " JOIN catalog.images AS i ON i.id = found.image_id AND i.status = 'classified' AND i.deleted_at IS NULL"
    " WHERE q.image_id = %(id)s ORDER BY found.distance, found.image_id DESC LIMIT %(limit)s",
    distance=_DISTANCE,
)
_HAS_EMBEDDING = statement("SELECT EXISTS (SELECT FROM catalog.image_embeddings WHERE image_id = %(id)s)")
_NEAREST_OTHER = statement(
    "SELECT e.image_id, i.uid, 1 - (e.embedding {distance} %(embedding)s::public.halfvec) AS similarity"
    " FROM catalog.image_embeddings AS e JOIN catalog.images AS i ON i.id = e.image_id AND i.deleted_at IS NULL"
    " WHERE e.owner_id = %(owner)s AND e.image_id <> %(id)s"
    " ORDER BY e.embedding {distance} %(embedding)s::public.halfvec LIMIT 1",
    distance=_DISTANCE,
)
_SAVE = statement(
    "WITH saved AS (INSERT INTO catalog.image_embeddings (image_id, owner_id, embedding)"
    " SELECT id, owner_id, %(embedding)s::public.halfvec FROM catalog.images WHERE id = %(id)s"
    " ON CONFLICT (image_id) DO UPDATE SET embedding = excluded.embedding RETURNING image_id)"
    " UPDATE catalog.images SET near_duplicate_of = %(near)s WHERE id IN (SELECT image_id FROM saved)"
)
_DUPLICATE_LINKS = statement(
    "SELECT id, near_duplicate_of FROM catalog.images WHERE owner_id = %(owner)s AND near_duplicate_of IS NOT NULL"
    " AND status = 'classified' AND deleted_at IS NULL ORDER BY id DESC LIMIT %(limit)s"
)
_MISSING = statement(
    "SELECT i.id, i.uid, i.owner_id, i.sha256 FROM catalog.images AS i WHERE i.status = 'classified'"
    " AND i.id > %(after)s AND NOT EXISTS (SELECT FROM catalog.image_embeddings AS e WHERE e.image_id = i.id)"
    " ORDER BY i.id LIMIT %(limit)s"
)


@dataclass(frozen=True)
class Neighbour:
    image_id: int
    similarity: float


def as_vector(embedding: Sequence[float] | np.ndarray) -> str:
    """pgvector's text form, cast to halfvec in the statements (no per-connection type registration needed)."""
    vector = np.asarray(embedding, dtype=np.float32)
    if vector.shape != (EMBEDDING_DIMENSIONS,) or not np.isfinite(vector).all():
        raise ValueError(f"an embedding has {EMBEDDING_DIMENSIONS} finite numbers, not {vector.shape}")
    return HalfVector(vector.astype(np.float16)).to_text()


async def _scan_iteratively(conn: AsyncConnection) -> None:
    await conn.execute(_SCAN_SETTINGS, {"ef_search": str(_EF_SEARCH), "tuples": str(_MAX_SCAN_TUPLES)})


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


async def save_embedding(conn: AsyncConnection, *, image_id: int, owner: str, embedding: Sequence[float]) -> str | None:
    """Stores the image's embedding, in the caller's transaction, and links the image to the other image of the
    same owner it nearly duplicates; returns that image's uid, or None. Any other image, not only earlier ones: in a
    bulk import the later upload may be analysed first, and the pair must still end up linked."""
    vector = as_vector(embedding)
    await _scan_iteratively(conn)
    cur = await conn.execute(_NEAREST_OTHER, {"embedding": vector, "owner": owner, "id": image_id})
    nearest = await cur.fetchone()
    near = nearest if nearest is not None and nearest[2] >= NEAR_DUPLICATE_SIMILARITY else None
    await conn.execute(_SAVE, {"embedding": vector, "near": None if near is None else near[0], "id": image_id})
    return None if near is None else str(near[1])


class SimilarityIndex:
    """Embeddings in catalog.images and the questions asked of them; every query is scoped to one owner."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def store(self, *, image_id: int, owner: str, embedding: Sequence[float]) -> str | None:
        """save_embedding in a transaction of its own."""
        async with self._pool.connection() as conn, conn.transaction():
            return await save_embedding(conn, image_id=image_id, owner=owner, embedding=embedding)

    async def similar_to(self, *, image_id: int, limit: int) -> list[Neighbour] | None:
        """The owner's images nearest to this one, best first, the image itself excluded; None when the image has
        no embedding yet."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(_HAS_EMBEDDING, {"id": image_id})
            if not one_row(await cur.fetchone(), "checking for an embedding")[0]:
                return None
            await _scan_iteratively(conn)
            cur = await conn.execute(_SIMILAR, {"id": image_id, "limit": limit})
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
