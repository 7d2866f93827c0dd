"""Classification throughput: inference service -> model server, against the same SavedModel called in-process.

Starts the model server and the inference service as subprocesses (as deployed), with a stand-in key endpoint
so the bench can mint tokens, then streams distinct JPEG photos through Classify at concurrency 1, 8 and 32.
The in-process figure is the SavedModel's signature called directly at its best batch size, in the same run.
Run: `python -m bench inference`; figures are also written to bench/results/inference.json.
"""

import asyncio
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from PIL import Image
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc
from tagsmith.inference.v1 import inference_pb2_grpc

from services.common.channels import open_channel
from tests.support.inference_fixtures import MODEL_NAME, classify_requests, start_modelserver, stop_process
from tests.support.keys import TestKeys

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 8, 32)
IN_PROCESS_BATCHES = (1, 8, 16, 32, 64)
DISTINCT_IMAGES = 512
SECONDS_PER_LEVEL = 8.0
WARMUP_SECONDS = 1.5


def photos(count: int = DISTINCT_IMAGES) -> list[bytes]:
    """Distinct JPEGs (so neither the cache nor in-flight sharing helps) cut from scikit-image's sample photos."""
    from skimage import data

    sources = [Image.fromarray(getattr(data, name)()) for name in ("chelsea", "coffee", "astronaut", "rocket")]
    rng = np.random.default_rng(7)
    result = []
    for index in range(count):
        source = sources[index % len(sources)]
        width, height = source.size
        left, top = int(rng.integers(0, width // 8)), int(rng.integers(0, height // 8))
        crop = source.crop((left, top, width - int(rng.integers(0, width // 8)), height - int(rng.integers(0, 8))))
        buffer = io.BytesIO()
        crop.convert("RGB").save(buffer, "JPEG", quality=int(rng.integers(80, 95)))
        result.append(buffer.getvalue())
    return result


def in_process(model_dir: Path, images: list[bytes]) -> dict[int, dict]:
    """Images per second, and CPU per image, of the SavedModel's own signature at each batch size."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    figures = {}
    for size in IN_PROCESS_BATCHES:
        batches = [tf.constant(images[i : i + size]) for i in range(0, len(images) - size + 1, size)]
        serve(images=batches[0])
        done, index = 0, 0
        started, cpu_started = time.perf_counter(), time.process_time()
        while time.perf_counter() - started < SECONDS_PER_LEVEL / 4:
            serve(images=batches[index % len(batches)])
            done, index = done + size, index + 1
        figures[size] = {
            "images_per_second": done / (time.perf_counter() - started),
            "cpu_ms_per_image": 1000 * (time.process_time() - cpu_started) / done,
        }
    return figures


def averaged(before: dict[int, dict], after: dict[int, dict]) -> dict[int, dict]:
    """In-process figures measured before and after the service, averaged so load drift hits both sides alike."""
    return {size: {key: (before[size][key] + after[size][key]) / 2 for key in before[size]} for size in before}


class _Keys(auth_pb2_grpc.AuthServiceServicer):
    """Publishes the bench's signing key, like the auth service does, so inference accepts its tokens."""

    def __init__(self, keys: TestKeys) -> None:
        self._keys = keys

    async def GetPublicKeys(self, request, context):
        return auth_pb2.PublicKeys(jwks_json=json.dumps(self._keys.jwks()))


@contextlib.asynccontextmanager
async def key_server(keys: TestKeys):
    server = grpc.aio.server()
    auth_pb2_grpc.add_AuthServiceServicer_to_server(_Keys(keys), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_inference(tfserving_addr: str, auth_addr: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "gen"), str(REPO)]),
        "TAGSMITH_PORT": str(port),
        "TAGSMITH_METRICS_PORT": "0",
        "TAGSMITH_TFSERVING_ADDR": tfserving_addr,
        "TAGSMITH_AUTH_ADDR": auth_addr,
        "TAGSMITH_CACHE_SIZE": "0",
        "TAGSMITH_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "services.inference"], cwd=REPO, env=env)


async def _worker(stub, metadata, images: list[bytes], offset: int, step: int, until: float, latencies: list) -> int:
    done, index = 0, offset
    while time.perf_counter() < until:
        started = time.perf_counter()
        await stub.Classify(iter(classify_requests(images[index % len(images)])), metadata=metadata, timeout=60)
        latencies.append(time.perf_counter() - started)
        done, index = done + 1, index + step
    return done


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def through_service(address: str, token: str, images: list[bytes], concurrency: int, pids: dict) -> dict:
    metadata = (("authorization", f"Bearer {token}"),)
    async with open_channel(address, default_timeout=60) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        warm_until = time.perf_counter() + WARMUP_SECONDS
        await asyncio.gather(
            *(_worker(stub, metadata, images, i, concurrency, warm_until, []) for i in range(concurrency))
        )
        latencies: list[float] = []
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        until = started + SECONDS_PER_LEVEL
        counts = await asyncio.gather(
            *(_worker(stub, metadata, images, i, concurrency, until, latencies) for i in range(concurrency))
        )
        elapsed = time.perf_counter() - started
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "images_per_second": sum(counts) / elapsed,
        "cpu_ms_per_image": {name: 1000 * seconds / sum(counts) for name, seconds in cpu.items()},
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
    }


async def _wait_ready(address: str, token: str, images: list[bytes], process: subprocess.Popen) -> None:
    metadata = (("authorization", f"Bearer {token}"),)
    for _ in range(100):
        if process.poll() is not None:
            raise RuntimeError("the inference service exited during start-up")
        with contextlib.suppress(grpc.aio.AioRpcError):
            async with open_channel(address, default_timeout=10) as channel:
                stub = inference_pb2_grpc.InferenceServiceStub(channel)
                await stub.Classify(iter(classify_requests(images[0])), metadata=metadata)
                return
        await asyncio.sleep(0.2)
    raise RuntimeError("the inference service did not answer")


async def measure_service(modelserver_addr: str, modelserver_pid: int, images: list[bytes]) -> dict[int, dict]:
    keys = TestKeys()
    async with key_server(keys) as auth_addr:
        port = free_port()
        process = start_inference(modelserver_addr, auth_addr, port)
        try:
            address = f"127.0.0.1:{port}"
            await _wait_ready(address, keys.token(ttl=3600), images, process)
            pids = {"modelserver": modelserver_pid, "inference": process.pid, "client": os.getpid()}
            return {c: await through_service(address, keys.token(ttl=3600), images, c, pids) for c in CONCURRENCY}
        finally:
            stop_process(process)


def report(service: dict[int, dict], local: dict[int, dict]) -> dict:
    best_batch = max(local, key=lambda size: local[size]["images_per_second"])
    best, best_cpu = local[best_batch]["images_per_second"], local[best_batch]["cpu_ms_per_image"]
    print("in-process SavedModel: " + ", ".join(f"batch {b}: {f['images_per_second']:.0f}/s" for b, f in local.items()))
    print(f"best in-process: {best:.1f} images/s at batch {best_batch}, {best_cpu:.1f} CPU ms/image")
    print(f"{'concurrency':>11} {'images/s':>9} {'vs in-process':>13} {'p50 ms':>8} {'p99 ms':>8}  CPU ms/image")
    for level, figures in service.items():
        ratio = figures["images_per_second"] / best
        cpu = ", ".join(f"{name} {ms:.1f}" for name, ms in figures["cpu_ms_per_image"].items())
        print(
            f"{level:>11} {figures['images_per_second']:9.1f} {ratio:13.2f} {figures['p50_ms']:8.1f} "
            f"{figures['p99_ms']:8.1f}  {cpu}"
        )
    service_cpu = sum(service[32]["cpu_ms_per_image"].values())
    print(f"CPU per image at concurrency 32: {service_cpu:.1f} ms through the services vs {best_cpu:.1f} in-process")
    return {
        "in_process": local,
        "best_in_process": {"batch": best_batch, "images_per_second": best, "cpu_ms_per_image": best_cpu},
        "service": service,
        "throughput_ratio_at_32": service[32]["images_per_second"] / best,
        "cpu_ratio_at_32": best_cpu / service_cpu,
        "cpus": os.cpu_count(),
    }


def run() -> dict:
    images = photos()
    with tempfile.TemporaryDirectory(prefix="tagsmith-bench-") as workdir:
        base = model_base_path(Path(workdir))
        before = in_process(base / MODEL_NAME / "1", images)
        with start_modelserver(base, Path(workdir) / "modelserver") as (address, modelserver):
            service = asyncio.run(measure_service(address, modelserver.pid, images))
        local = averaged(before, in_process(base / MODEL_NAME / "1", images))
    figures = report(service, local)
    out = REPO / "bench" / "results" / "inference.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    return figures


def model_base_path(workdir: Path) -> Path:
    """./models when `make model` built it, else a fresh build in workdir."""
    for candidate in (os.environ.get("TAGSMITH_MODEL_BASE_PATH"), REPO / "models"):
        if candidate and (Path(candidate) / MODEL_NAME / "1" / "saved_model.pb").exists():
            return Path(candidate)
    subprocess.run(
        [sys.executable, "-m", "model.build", "--output", str(workdir / "models" / MODEL_NAME / "1")],
        check=True,
        cwd=REPO,
    )
    return workdir / "models"


def main() -> None:
    run()


if __name__ == "__main__":
    main()
