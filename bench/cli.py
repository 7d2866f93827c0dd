"""Bulk import with the `tagsmith` command against the benchmark's own HTTP client (bench/_http.py).

Both import the same kind of files (distinct JPEGs cut from real photographs, made the same way) at the CLI's
default concurrency into a fresh account each. Every round gets files of its own, so neither side profits from
the other's work: the inference service caches results by content hash and identical bytes are stored once.
The CLI's time is the whole command: process start, login, hashing, the digests query and the uploads.
"""

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.e2e import WARM_UP, unique_photos, upload_requests, upload_round
from local.stack import Stack, StackOptions

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
FILES = 192
ROUNDS = 3
# The CLI's default -j.
CONCURRENCY = 4
TARGET_RATIO = 0.8
PASSWORD = "bench password 123"
SEED = 100


def _account(base_url: str) -> tuple[str, dict[str, str]]:
    username = f"bench_{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=base_url, timeout=30) as client:
        client.post("/v1/auth/register", json={"username": username, "password": PASSWORD}).raise_for_status()
        token = client.post("/v1/auth/login", json={"username": username, "password": PASSWORD}).json()["access_token"]
    return username, {"Authorization": f"Bearer {token}"}


def load_generator_round(base_url: str, photos: list[bytes]) -> dict:
    _, headers = _account(base_url)
    prepared = upload_requests(base_url, headers, photos)
    result = asyncio.run(upload_round(base_url, prepared, CONCURRENCY))
    return {"files_per_second": result["per_second"], "classified": result["classified"]}


def cli_round(base_url: str, photos: list[bytes], folder: Path) -> dict:
    """Writes the photos into a folder tree and times `tagsmith upload -r` on it."""
    for index, data in enumerate(photos):
        path = folder / f"album{index % 4}" / f"{index:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    username, _ = _account(base_url)
    env = os.environ | {"TAGSMITH_URL": base_url, "TAGSMITH_USERNAME": username, "TAGSMITH_PASSWORD": PASSWORD}
    command = [sys.executable, "-m", "tagsmith_client", "upload", "-r", "-q", "--json", str(folder)]
    cpu_before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    *files, last = (json.loads(line) for line in done.stdout.splitlines())
    summary = last["summary"]
    # Counted as the load generator counts: stored new and classified (a category), not left pending.
    classified = sum(1 for f in files if f["status"] == "new" and f["category"])
    return {
        "files_per_second": classified / elapsed,
        "new": summary["new"],
        "classified": classified,
        "seconds": elapsed,
        # Interpreter start, imports and the folder walk: the command's time before its import clock starts.
        "start_seconds": elapsed - summary["seconds"],
        "cpu_ms_per_file": (_children_cpu() - cpu_before) * 1000 / len(photos),
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(base_url: str, scratch: Path) -> dict:
    sets = iter(unique_photos(FILES, seed=SEED + n) for n in range(2 * ROUNDS + 1))
    load_generator_round(base_url, next(sets)[:WARM_UP])
    generator, cli = [], []
    for round_index in range(ROUNDS):
        # Alternated, so a slow moment of the shared machine does not fall on one side only.
        generator.append(load_generator_round(base_url, next(sets)))
        cli.append(cli_round(base_url, next(sets), scratch / f"round{round_index}"))
    best_generator = max(run["files_per_second"] for run in generator)
    best_cli = max(run["files_per_second"] for run in cli)
    return {
        "files": FILES,
        "concurrency": CONCURRENCY,
        "load_generator": generator,
        "cli": cli,
        "ratio": best_cli / best_generator,
    }


def report(results: dict) -> str:
    generator = max(run["files_per_second"] for run in results["load_generator"])
    cli = max(run["files_per_second"] for run in results["cli"])
    cpu = min(run["cpu_ms_per_file"] for run in results["cli"])
    start = min(run["start_seconds"] for run in results["cli"])
    verdict = "meets" if results["ratio"] >= TARGET_RATIO else "misses"
    return "\n".join(
        [
            f"{results['files']} files per round, concurrency {results['concurrency']}, best of {ROUNDS} rounds each:",
            f"  bench HTTP client   {generator:6.1f} files/s",
            f"  tagsmith upload -r  {cli:6.1f} files/s  (whole command, of which {start:.1f} s to start up;"
            f" {cpu:.1f} ms CPU per file)",
            f"  ratio {results['ratio']:.2f}: {verdict} the target of {TARGET_RATIO}"
            f" (ratio of the means of the rounds: {_mean(results['cli']) / _mean(results['load_generator']):.2f})",
        ]
    )


def _mean(runs: list[dict]) -> float:
    return sum(run["files_per_second"] for run in runs) / len(runs)


def run() -> dict:
    """Starts the system on free ports in a temporary directory, measures, stops it, prints and returns the figures."""
    model_base = Path(os.environ.get("TAGSMITH_MODEL_BASE_PATH", REPO / "models"))
    options = StackOptions(model_base_path=model_base, postgres_dsn=os.environ.get("TAGSMITH_POSTGRES_DSN", ""))
    (REPO / "var").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-cli-", dir=REPO / "var") as base, Stack(options) as stack:
        stack.start(Path(base) / "stack")
        results = measure(stack.gateway_url, Path(base) / "photos")
    results["summary"] = report(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cli.json").write_text(json.dumps(results, indent=2))
    sys.stdout.write(results["summary"] + "\n")
    return results


if __name__ == "__main__":
    run()
