"""End to end: uploads/s through the gateway vs the raw model (ratio), CPU per upload by process, p50/p99, and
list/search vs PostgreSQL.

Two workloads: web-size JPEGs (about 480x360) at concurrency 1, 8 and 32, and phone photos (12-megapixel JPEGs of
2-3 MB, half stored sideways with an EXIF orientation, one in eight HEIC) at concurrency 8, each against the same
SavedModel called in process on the same files through its encoded-images signature.

On a small machine every process shares the same cores, so the CPU each one spends per upload explains the ratio:
the system cannot beat `cores / CPU per upload`, while the raw model reaches `cores / its CPU per image`.

A second measurement gives the model server cores of its own, as TF Serving has its own nodes in Kubernetes: half
the cores run the model server, the other half everything else, and the raw model is measured on the model's half.
"""

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import skimage.data
from PIL import Image

from bench._http import Connection, form_file, request
from local.stack import Stack, StackOptions

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png", "horse.png")
UPLOADS = {1: 48, 8: 128, 32: 384}
# Uploads sent first and not counted, so first-call costs (connections, model warm-up) stay out of the figures.
WARM_UP = 8
RAW_BATCH = 32
QUERY_REQUESTS = 400
QUERY_CONCURRENCY = 8
# Web-size uploads at concurrency 32, every process on the same cores.
TARGET_RATIO = 0.65
PHONE_PHOTOS = 32
PHONE_CONCURRENCY = 8
PHONE_LATENCY_UPLOADS = 6
PHONE_RAW_BATCH = 8
PHONE_SIZE = (4032, 3024)
HEIC_EVERY = 8
PHONE_TARGET_RATIO = 0.8
# A phone photo's upload at concurrency 1, against the raw model's single-image time.
PHONE_LATENCY_TARGET = 1.3
# Sensor noise of a phone camera at base ISO, as a standard deviation in 8-bit levels.
PHONE_NOISE_SIGMA = 5
# Tried in turn until the JPEG reaches 2 MB.
PHONE_JPEG_QUALITIES = (88, 92, 95, 97)
# Long side of the thumbnail a phone embeds in its HEIC files.
PHONE_HEIC_THUMBNAIL = 320
# Generated once (HEVC encoding of 12 megapixels takes long) and kept beside `make run`'s data; the number changes
# when the way they are made does.
PHONE_CACHE = REPO / "var" / "bench-phone-photos-2"


def unique_photos(count: int, *, seed: int = 7) -> list[bytes]:
    """Distinct JPEGs (about 480x360) cut from real photographs, so no cache or dedup shortens the work."""
    rng = random.Random(seed)
    sources = [Image.open(Path(skimage.data.__file__).parent / name).convert("RGB") for name in PHOTOS]
    photos = []
    for index in range(count):
        source = sources[index % len(sources)]
        width, height = source.size
        crop_w, crop_h = int(width * rng.uniform(0.7, 1.0)), int(height * rng.uniform(0.7, 1.0))
        left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
        picture = source.crop((left, top, left + crop_w, top + crop_h)).resize((480, 360))
        picture.putpixel((0, 0), (index % 256, index // 256 % 256, 7))
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


@dataclass(frozen=True)
class PhonePhoto:
    """One phone upload, and a JPEG of the same picture for the raw model, whose graph cannot decode HEIC."""

    filename: str
    content_type: str
    path: Path
    jpeg_path: Path


def phone_photos(count: int, *, seed: int = 17) -> list[PhonePhoto]:
    """Distinct 12-megapixel photos: real photographs cropped, enlarged and given camera-like noise."""
    from services.common.imaging import register_openers

    register_openers()
    PHONE_CACHE.mkdir(parents=True, exist_ok=True)
    photos = []
    for index in range(count):
        stem = PHONE_CACHE / f"{seed}-{index}"
        heic = index % HEIC_EVERY == HEIC_EVERY - 1
        photo = PhonePhoto(
            filename=f"IMG_{index:04d}.{'HEIC' if heic else 'JPG'}",
            content_type="image/heic" if heic else "image/jpeg",
            path=stem.with_suffix(".heic" if heic else ".jpg"),
            jpeg_path=stem.with_suffix(".jpg"),
        )
        if not photo.path.exists() or not photo.jpeg_path.exists():
            _make_phone_photo(photo, random.Random(seed * 1000 + index), sideways=index % 2 == 1)
        photos.append(photo)
    return photos


def _make_phone_photo(photo: PhonePhoto, rng: random.Random, *, sideways: bool) -> None:
    source = Image.open(Path(skimage.data.__file__).parent / PHOTOS[rng.randrange(len(PHOTOS))]).convert("RGB")
    width, height = source.size
    crop_w = int(min(width, height * 4 / 3) * rng.uniform(0.75, 1.0))
    crop_h = crop_w * 3 // 4
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    picture = source.crop((left, top, left + crop_w, top + crop_h)).resize(PHONE_SIZE, Image.Resampling.BICUBIC)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, PHONE_NOISE_SIGMA, (1024, 1024, 3))
    tiled = np.tile(noise.astype(np.int16), (PHONE_SIZE[1] // 1024 + 1, PHONE_SIZE[0] // 1024 + 1, 1))
    pixels = np.asarray(picture, dtype=np.int16) + tiled[: PHONE_SIZE[1], : PHONE_SIZE[0]]
    picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    if sideways:
        # Stored as the sensor saw it, with the tag that turns it upright, as phones do.
        picture = picture.transpose(Image.Transpose.ROTATE_90)
        exif[0x0112] = 6
    _save_atomically(photo.jpeg_path, _jpeg_of_phone_size(picture, exif))
    if photo.path != photo.jpeg_path:
        heic = io.BytesIO()
        # EXIF as bytes: pillow-heif turns its orientation into the container's rotation only then. A 320-pixel
        # thumbnail inside, as an iPhone stores.
        picture.save(
            heic,
            "HEIF",
            quality=50,
            exif=exif.tobytes(),
            thumbnails=[PHONE_HEIC_THUMBNAIL],
            enc_params={"preset": "ultrafast"},
        )
        _save_atomically(photo.path, heic.getvalue())


def _jpeg_of_phone_size(picture: Image.Image, exif: Image.Exif) -> bytes:
    """The picture as a JPEG of 2-3 MB, as phones write: quality raised for flat scenes, lowered for busy ones."""
    for quality in PHONE_JPEG_QUALITIES:
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=quality, exif=exif)
        if len(buffer.getvalue()) >= 2_000_000:
            break
    return buffer.getvalue()


def _save_atomically(path: Path, data: bytes) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


def raw_phone_model(model_dir: Path, photos: list[PhonePhoto]) -> dict[str, float]:
    """The raw model on the phone photos in a child Python: batches of 8, then the rest one image at a time."""
    paths = [str(photo.jpeg_path) for photo in photos]
    code = f"from bench.e2e import _raw_phone_in_process; print(_raw_phone_in_process({str(model_dir)!r}, {paths!r}))"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO / "gen"), str(REPO)]), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _raw_phone_in_process(model_dir: str, paths: list[str]) -> str:
    """Batches over the first PHONE_PHOTOS files, then the rest one at a time (the c=1 uploads' files)."""
    import tensorflow as tf

    everything = [Path(path).read_bytes() for path in paths]
    files, single_files = everything[:PHONE_PHOTOS], everything[PHONE_PHOTOS:]
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    serve(images=tf.constant(files[:PHONE_RAW_BATCH]))
    batches = [files[i : i + PHONE_RAW_BATCH] for i in range(0, len(files) - PHONE_RAW_BATCH + 1, PHONE_RAW_BATCH)]
    started, cpu_started = time.perf_counter(), time.process_time()
    for batch in batches:
        serve(images=tf.constant(batch))
    images = len(batches) * PHONE_RAW_BATCH
    per_second = images / (time.perf_counter() - started)
    cpu_ms = (time.process_time() - cpu_started) * 1000 / images
    singles = []
    for data in single_files:
        began = time.perf_counter()
        serve(images=tf.constant([data]))
        singles.append(time.perf_counter() - began)
    single_ms = _percentile(singles, 50) * 1000
    return json.dumps({"per_second": per_second, "cpu_ms_per_image": cpu_ms, "single_p50_ms": single_ms})


def raw_model_throughput(model_dir: Path, cpus: set[int] | None = None) -> dict[str, float]:
    """Images per second, and CPU ms per image, of the bare SavedModel called in process by a child Python,
    on `cpus` when given (TensorFlow sizes its thread pools to them).

    A child keeps TensorFlow's thread pools out of the process that then drives the load.
    """
    pin = f"import os; os.sched_setaffinity(0, {sorted(cpus)!r}); " if cpus else ""
    code = f"{pin}from bench.e2e import _raw_in_process; print(_raw_in_process({str(model_dir)!r}))"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO / "gen"), str(REPO)]), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _raw_in_process(model_dir: str) -> str:
    import tensorflow as tf

    photos = unique_photos(RAW_BATCH * 8, seed=11)
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    batches = [photos[i : i + RAW_BATCH] for i in range(0, len(photos) - RAW_BATCH + 1, RAW_BATCH)]
    serve(images=tf.constant(batches[0]))
    started, cpu_started = time.perf_counter(), time.process_time()
    for batch in batches:
        serve(images=tf.constant(batch))
    images = len(batches) * RAW_BATCH
    per_second = images / (time.perf_counter() - started)
    cpu_ms = (time.process_time() - cpu_started) * 1000 / images
    return json.dumps({"per_second": per_second, "cpu_ms_per_image": cpu_ms})


def upload_requests(base_url: str, headers: dict, photos: list[bytes]) -> list[bytes]:
    """One POST /v1/images per photo, encoded before the clock starts."""
    return [_upload_request(base_url, headers, f"{index}.jpg", "image/jpeg", data) for index, data in enumerate(photos)]


def phone_upload_requests(base_url: str, headers: dict, photos: list[PhonePhoto]) -> list[bytes]:
    return [
        _upload_request(base_url, headers, photo.filename, photo.content_type, photo.path.read_bytes())
        for photo in photos
    ]


def _upload_request(base_url: str, headers: dict, filename: str, file_type: str, data: bytes) -> bytes:
    body, content_type = form_file("image", filename, file_type, data)
    return request("POST", f"{base_url}/v1/images", headers=headers, body=body, content_type=content_type)


async def upload_round(base_url: str, prepared: list[bytes], concurrency: int) -> dict:
    """Sends every upload with `concurrency` in flight; rate counts only uploads stored and classified."""
    latencies, classified = [], 0
    queue = list(prepared)

    async def worker() -> None:
        nonlocal classified
        connection = Connection(base_url)
        try:
            while queue:
                began = time.perf_counter()
                reply = await connection.send(queue.pop())
                latencies.append(time.perf_counter() - began)
                if reply.status == 201 and reply.json()["status"] == "classified":
                    classified += 1
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "uploads": len(prepared),
        "classified": classified,
        "per_second": classified / elapsed,
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
    }


async def measured_round(stack: Stack, prepared: list[bytes], concurrency: int) -> dict:
    """upload_round, plus the CPU milliseconds each process spent per upload meanwhile."""
    before = cpu_seconds(stack)
    result = await upload_round(stack.gateway_url, prepared, concurrency)
    used = cpu_seconds(stack)
    result["cpu_ms_per_upload"] = {name: (used[name] - before[name]) * 1000 / len(prepared) for name in used}
    return result


async def query_round(base_url: str, headers: dict, path: str) -> float:
    """Requests per second for one GET at QUERY_CONCURRENCY."""
    prepared = request("GET", base_url + path, headers=headers)
    remaining = QUERY_REQUESTS

    async def worker() -> None:
        nonlocal remaining
        connection = Connection(base_url)
        try:
            while remaining > 0:
                remaining -= 1
                reply = await connection.send(prepared)
                if reply.status != 200:
                    raise RuntimeError(f"GET {path} answered {reply.status}: {reply.body[:200]!r}")
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(QUERY_CONCURRENCY)))
    return QUERY_REQUESTS / (time.perf_counter() - started)


async def database_round(dsn: str, owner: str) -> dict[str, float | None]:
    """The catalog's own list and search queries, straight against PostgreSQL, at the same concurrency."""
    from services.catalog.store import CatalogStore
    from services.common.db import open_pool

    pool = await open_pool(dsn, min_size=QUERY_CONCURRENCY, max_size=QUERY_CONCURRENCY, name="bench")
    store = CatalogStore(pool)
    queries = {
        "list": lambda: store.list_images(owner=owner, category="", tag="", min_score=0.0, after=None, limit=50),
        "search": lambda: store.search(owner=owner, query_terms=["cat"], min_score=0.0, after=None, limit=50),
    }
    try:
        await pool.wait()
        return {name: await _rate(query) for name, query in queries.items()}
    finally:
        await pool.close()


async def _rate(query) -> float | None:
    """Queries per second, or None (with the reason on stderr) when the catalog's query API fails."""
    try:
        await query()
    except Exception as exc:
        sys.stderr.write(f"direct query failed: {exc!r}\n")
        return None
    remaining = QUERY_REQUESTS

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await query()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(QUERY_CONCURRENCY)))
    return QUERY_REQUESTS / (time.perf_counter() - started)


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time used so far by each service process, PostgreSQL (when embedded) and this load generator."""
    used = {"client": sum(resource.getrusage(resource.RUSAGE_SELF)[:2])}
    for child in stack.children:
        times = psutil.Process(child.pid).cpu_times()
        used[child.name] = times.user + times.system
    if stack.postgres_pid is not None:
        used["postgres"] = _tree_cpu_seconds(stack.postgres_pid)
    return used


def _tree_cpu_seconds(pid: int) -> float:
    """A process and all its children, living or exited (PostgreSQL runs a process per connection)."""
    main = psutil.Process(pid)
    total = main.cpu_times().children_user + main.cpu_times().children_system
    for process in (main, *main.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _percentile(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))] if ordered else 0.0


def _sign_up(base_url: str) -> tuple[dict, str]:
    username, password = f"bench_{uuid.uuid4().hex[:8]}", "bench password 123"
    with httpx.Client(base_url=base_url, timeout=30) as client:
        client.post("/v1/auth/register", json={"username": username, "password": password}).raise_for_status()
        token = client.post("/v1/auth/login", json={"username": username, "password": password}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        return headers, client.get("/v1/me", headers=headers).json()["id"]


async def measure(stack: Stack, model_dir: Path) -> dict:
    photos = unique_photos(sum(UPLOADS.values()) + WARM_UP)
    raw_runs = [raw_model_throughput(model_dir)]
    headers, owner = _sign_up(stack.gateway_url)
    prepared = upload_requests(stack.gateway_url, headers, photos)
    await upload_round(stack.gateway_url, prepared[-WARM_UP:], 2)
    rounds, offset = [], 0
    for concurrency, count in UPLOADS.items():
        rounds.append(await measured_round(stack, prepared[offset : offset + count], concurrency))
        offset += count
    # Measured again after the uploads and the faster kept: on a shared machine one measurement can land in a
    # moment when other work starves it, which would flatter the ratio.
    raw_runs.append(raw_model_throughput(model_dir))
    raw = max(raw_runs, key=lambda run: run["per_second"])
    gateway = {
        "list": await query_round(stack.gateway_url, headers, "/v1/images?page_size=50"),
        "search": await query_round(stack.gateway_url, headers, "/v1/search?q=cat&page_size=50"),
    }
    database = await database_round(stack.dsn, owner)
    return {
        "raw_model_per_second": raw["per_second"],
        "raw_model_cpu_ms_per_image": raw["cpu_ms_per_image"],
        "uploads": rounds,
        "gateway_rps": gateway,
        "postgres_rps": database,
        "phone": await measure_phone(stack, model_dir),
    }


async def measure_phone(stack: Stack, model_dir: Path) -> dict:
    """Phone photos at concurrency 8 and one at a time, against the raw model on the same files, in the same run."""
    photos = phone_photos(PHONE_PHOTOS + PHONE_LATENCY_UPLOADS + 2)
    headers, _ = _sign_up(stack.gateway_url)
    prepared = phone_upload_requests(stack.gateway_url, headers, photos)
    await upload_round(stack.gateway_url, prepared[-2:], 2)
    uploads = await measured_round(stack, prepared[:PHONE_PHOTOS], PHONE_CONCURRENCY)
    single = await upload_round(stack.gateway_url, prepared[PHONE_PHOTOS:-2], 1)
    raw_runs = [raw_phone_model(model_dir, photos[:-2]) for _ in range(2)]
    raw = max(raw_runs, key=lambda run: run["per_second"])
    return {
        "uploads": uploads,
        "single": single,
        "heic_share": 1 / HEIC_EVERY,
        "raw_model_per_second": raw["per_second"],
        "raw_model_cpu_ms_per_image": raw["cpu_ms_per_image"],
        "raw_single_p50_ms": min(run["single_p50_ms"] for run in raw_runs),
    }


def split_cores() -> tuple[set[int], set[int]] | None:
    """(model cores, other cores): the upper half of this process's CPUs for the model server; None on one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return set(cpus[half:]), set(cpus[:half])


def pin_process(pid: int, cpus: set[int]) -> None:
    """Moves every thread of a running process (affinity is per thread on Linux) onto `cpus`."""
    for thread in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # the thread has exited meanwhile
            os.sched_setaffinity(int(thread), cpus)


async def measure_dedicated(stack: Stack, model_dir: Path, model_cpus: set[int]) -> dict:
    """Uploads at concurrency 32 with the model server on its own cores, against the raw model on those cores."""
    photos = unique_photos(UPLOADS[32] + WARM_UP, seed=13)
    headers, _ = _sign_up(stack.gateway_url)
    prepared = upload_requests(stack.gateway_url, headers, photos)
    await upload_round(stack.gateway_url, prepared[-WARM_UP:], 2)
    uploads = await measured_round(stack, prepared[:-WARM_UP], 32)
    raw = max((raw_model_throughput(model_dir, model_cpus) for _ in range(2)), key=lambda run: run["per_second"])
    return {"uploads": uploads, "raw_model_per_second": raw["per_second"], "model_cpus": len(model_cpus)}


def report(results: dict) -> str:
    raw = results["raw_model_per_second"]
    lines = [
        f"raw model, in process, batch {RAW_BATCH}, faster of before and after the uploads: {raw:.1f} images/s,"
        f" {results['raw_model_cpu_ms_per_image']:.1f} ms CPU per image",
        "",
        "concurrency  classified/s  ratio to raw  p50 ms  p99 ms",
    ]
    for entry in results["uploads"]:
        ratio = entry["per_second"] / raw
        entry["ratio_to_raw"] = ratio
        lines.append(
            f"{entry['concurrency']:>11}  {entry['per_second']:>12.1f}  {ratio:>12.2f}  "
            f"{entry['p50_ms']:>6.0f}  {entry['p99_ms']:>6.0f}"
        )
    lines += ["", *cpu_table(results)]
    final = results["uploads"][-1]["ratio_to_raw"]
    verdict = "meets" if final >= TARGET_RATIO else "misses"
    lines += ["", f"at concurrency 32 the system {verdict} the target of {TARGET_RATIO} x raw ({final:.2f})", ""]
    dedicated = results.get("dedicated_model_cores")
    if dedicated is not None:
        ratio = dedicated["ratio_to_raw"] = dedicated["uploads"]["per_second"] / dedicated["raw_model_per_second"]
        verdict = "meets" if ratio >= TARGET_RATIO else "misses"
        lines += [
            f"model server on {dedicated['model_cpus']} core(s) of its own, everything else on the others:",
            f"  c=32: {dedicated['uploads']['per_second']:.1f} classified/s, raw model on the same core(s)"
            f" {dedicated['raw_model_per_second']:.1f} images/s: ratio {ratio:.2f}, {verdict} the target;"
            f" p50 {dedicated['uploads']['p50_ms']:.0f} ms, p99 {dedicated['uploads']['p99_ms']:.0f} ms",
            "  CPU ms per upload: "
            + ", ".join(f"{name} {ms:.2f}" for name, ms in dedicated["uploads"]["cpu_ms_per_upload"].items()),
            "",
        ]
    if "phone" in results:
        lines += [*phone_report(results["phone"]), ""]
    lines.append(f"queries at concurrency {QUERY_CONCURRENCY}:  gateway req/s   PostgreSQL direct q/s")
    for name in ("list", "search"):
        direct = results["postgres_rps"][name]
        direct_text = f"{direct:>12.0f}" if direct is not None else "         n/a"
        lines.append(f"{name:>32}  {results['gateway_rps'][name]:>12.0f}   {direct_text}")
    return "\n".join(lines)


def phone_report(phone: dict) -> list[str]:
    uploads, raw = phone["uploads"], phone["raw_model_per_second"]
    ratio = phone["ratio_to_raw"] = uploads["per_second"] / raw
    latency = phone["latency_to_raw"] = phone["single"]["p50_ms"] / phone["raw_single_p50_ms"]
    return [
        f"phone photos (12 MP JPEG, 2-3 MB, half sideways with EXIF orientation, {phone['heic_share']:.0%} HEIC):",
        f"  c={uploads['concurrency']}: {uploads['per_second']:.2f} classified/s; raw model in process, batch"
        f" {PHONE_RAW_BATCH}, same files: {raw:.2f} images/s ({phone['raw_model_cpu_ms_per_image']:.0f} ms CPU"
        f" each): ratio {ratio:.2f}, {'meets' if ratio >= PHONE_TARGET_RATIO else 'misses'} the target of"
        f" {PHONE_TARGET_RATIO}; p50 {uploads['p50_ms']:.0f} ms, p99 {uploads['p99_ms']:.0f} ms",
        "  CPU ms per upload: " + ", ".join(f"{name} {ms:.1f}" for name, ms in uploads["cpu_ms_per_upload"].items()),
        f"  c=1: p50 {phone['single']['p50_ms']:.0f} ms per upload; raw model, one image:"
        f" {phone['raw_single_p50_ms']:.0f} ms: {latency:.2f}x,"
        f" {'meets' if latency <= PHONE_LATENCY_TARGET else 'misses'} the target of {PHONE_LATENCY_TARGET}x",
    ]


def cpu_table(results: dict) -> list[str]:
    """CPU ms per upload of every process at every concurrency, the system's total, and the ceiling it implies."""
    rounds = results["uploads"]
    names = sorted(rounds[-1]["cpu_ms_per_upload"], key=lambda name: -rounds[-1]["cpu_ms_per_upload"][name])
    services = [name for name in names if name != "client"]
    lines = [
        f"CPU ms per upload ({os.cpu_count()} cores shared by every process; client is this load generator)",
        "process      " + "".join(f"{'c=' + str(entry['concurrency']):>8}" for entry in rounds),
    ]
    for name in [*services, "client"]:
        lines.append(f"{name:<13}" + "".join(f"{entry['cpu_ms_per_upload'][name]:>8.2f}" for entry in rounds))
    totals = [sum(entry["cpu_ms_per_upload"][name] for name in services) for entry in rounds]
    lines.append("system total " + "".join(f"{total:>8.2f}" for total in totals))
    for entry, total in zip(rounds, totals, strict=True):
        entry["system_cpu_ms_per_upload"] = total
    cores = os.cpu_count() or 1
    ceiling = results["cpu_bound_ceiling_per_second"] = cores * 1000 / totals[-1]
    lines.append(
        f"CPU-bound ceiling at c={rounds[-1]['concurrency']}: {cores} cores / {totals[-1]:.1f} ms"
        f" = {ceiling:.0f} uploads/s, {ceiling / results['raw_model_per_second']:.2f} of raw"
        f" (the raw model spends {results['raw_model_cpu_ms_per_image']:.1f} ms CPU per image)"
    )
    return lines


def model_and_options() -> tuple[Path, StackOptions]:
    """The served classifier's newest version directory, and the options of a system serving it."""
    model_base = Path(os.environ.get("TAGSMITH_MODEL_BASE_PATH", REPO / "models"))
    model_dir = max((model_base / "efficientnet_lite0").iterdir(), key=lambda p: int(p.name))
    return model_dir, StackOptions(model_base_path=model_base, postgres_dsn=os.environ.get("TAGSMITH_POSTGRES_DSN", ""))


@contextlib.contextmanager
def running_system(options: StackOptions) -> Iterator[Stack]:
    """A fresh system on free ports, its data under var/ like `make run`'s rather than /tmp: on a machine where
    test suites churn /tmp, creating each upload's file there costs the catalog far more kernel CPU."""
    (REPO / "var").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-", dir=REPO / "var") as base, Stack(options) as stack:
        stack.start(Path(base))
        yield stack


def run() -> dict:
    """Starts the system on free ports in a temporary directory, measures, stops it, prints and returns the figures."""
    model_dir, options = model_and_options()
    with running_system(options) as stack:
        results = asyncio.run(measure(stack, model_dir))
    if (cores := split_cores()) is not None:
        results["dedicated_model_cores"] = run_dedicated(options, model_dir, *cores)
    results["summary"] = report(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "e2e.json").write_text(json.dumps(results, indent=2))
    sys.stdout.write(results["summary"] + "\n")
    return results


def run_dedicated(options: StackOptions, model_dir: Path, model_cpus: set[int], other_cpus: set[int]) -> dict:
    """A fresh system whose processes (PostgreSQL and this load generator too) inherit `other_cpus`; then the
    model server, which sized its thread pools to those, moves to `model_cpus`, the same number."""
    everything = os.sched_getaffinity(0)
    os.sched_setaffinity(0, other_cpus)
    try:
        with running_system(options) as stack:
            modelserver = next(child for child in stack.children if child.name == "modelserver")
            if modelserver.pid is None:
                raise RuntimeError("the model server did not start")
            pin_process(modelserver.pid, model_cpus)
            return asyncio.run(measure_dedicated(stack, model_dir, model_cpus))
    finally:
        os.sched_setaffinity(0, everything)


def run_phone() -> dict:
    """The phone-photo workload alone, on a fresh system (about a minute): for trying a change to that path."""
    model_dir, options = model_and_options()
    with running_system(options) as stack:
        phone = asyncio.run(measure_phone(stack, model_dir))
    sys.stdout.write("\n".join(phone_report(phone)) + "\n")
    return phone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--phone", action="store_true", help="run only the phone-photo workload")
    if parser.parse_args(argv).phone:
        run_phone()
    else:
        run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
