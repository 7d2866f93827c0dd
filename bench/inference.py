"""Classification throughput: inference service -> model server, against the same SavedModel called in-process.

Starts the model server and the inference service as subprocesses (as deployed), with a stand-in key endpoint
so the bench can mint tokens, then streams distinct JPEG photos through Classify at concurrency 1, 8 and 32.

The baseline is the same SavedModel's signature called directly in a loop, in a process of its own, at its best
batch size, in two setups: TensorFlow's default threads with one caller, and the model server's own (its
intra/inter-op threads, as many callers as it runs batches at once). Each setup's best batch size is found
first; then both setups and concurrency 32 take turns in short rounds, so load from other processes on the
machine hits all alike, and the faster setup over all rounds is the baseline. CPU time per image, summed over
the model server, inference and this client, hardly depends on that load.
Run: `python -m bench inference`; figures are also written to bench/results/inference.json.
"""

import argparse
import asyncio
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
import numpy as np
from PIL import Image
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc
from tagsmith.inference.v1 import inference_pb2_grpc

from tests.support.inference_fixtures import MODEL_NAME, classify_requests, start_modelserver, stop_process
from tests.support.keys import TestKeys
from tests.support.ports import free_port
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 8, 32)
TARGET_CONCURRENCY = 32
ROUNDS = 6
SECONDS_PER_ROUND = 3.0
IN_PROCESS_BATCHES = (1, 8, 16, 32, 64)
DISTINCT_IMAGES = 512
SECONDS_PER_LEVEL = 8.0
SECONDS_PER_BATCH_SIZE = 2.0
WARMUP_SECONDS = 1.5

Figures = dict[str, float]


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


@dataclass(frozen=True)
class Setup:
    """How the in-process baseline calls the signature: TensorFlow's thread pools (0: its choice) and callers."""

    name: str
    intra: int
    inter: int
    callers: int


def in_process_setups() -> list[Setup]:
    from services.modelserver.config import Settings as ModelServerSettings

    server = ModelServerSettings()
    intra, inter, callers = server.intra_op_threads, server.inter_op_threads, server.num_batch_threads
    return [
        Setup("TensorFlow's default threads, 1 caller", 0, 0, 1),
        Setup(f"as the model server: intra {intra}, inter {inter}, {callers} callers", intra, inter, callers),
    ]


class InProcess:
    """A process calling the SavedModel's signature directly with one setup; measures a batch size on request."""

    def __init__(self, model_dir: Path, setup: Setup) -> None:
        command = [sys.executable, "-m", "bench.inference", "--in-process", str(model_dir)]
        command += ["--intra", str(setup.intra), "--inter", str(setup.inter), "--callers", str(setup.callers)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "gen"), str(REPO)])}
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        self._process = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        if self._process.stdin is None or self._process.stdout is None:
            raise RuntimeError("the in-process worker started without its pipes")
        self._commands: IO[str] = self._process.stdin
        self._answers: IO[str] = self._process.stdout
        self._answer()  # the model is loaded

    def measure(self, size: int, seconds: float) -> Figures:
        self._commands.write(f"{size} {seconds}\n")
        self._commands.flush()
        return json.loads(self._answer())

    def _answer(self) -> str:
        line = self._answers.readline()
        if not line:
            raise RuntimeError(f"the in-process worker exited with {self._process.wait()}")
        return line

    def __enter__(self) -> "InProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self._commands.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def call_in_loop(serve, batches: list, *, size: int, callers: int, seconds: float) -> Figures:
    """`callers` threads each calling the signature back to back for `seconds`."""
    serve(images=batches[0])
    done = [0] * callers
    until = time.perf_counter() + seconds

    def repeat(caller: int) -> None:
        index = caller
        while time.perf_counter() < until:
            serve(images=batches[index % len(batches)])
            done[caller] += size
            index += callers

    threads = [threading.Thread(target=repeat, args=(caller,)) for caller in range(callers)]
    started, cpu_started = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "images_per_second": sum(done) / (time.perf_counter() - started),
        "cpu_ms_per_image": 1000 * (time.process_time() - cpu_started) / sum(done),
    }


def in_process_main(argv: list[str]) -> None:
    """The worker side of InProcess: prints "ready", then a JSON line of figures per "SIZE SECONDS" line read."""
    parser = argparse.ArgumentParser(prog="python -m bench.inference --in-process")
    parser.add_argument("model_dir")
    for flag in ("--intra", "--inter", "--callers"):
        parser.add_argument(flag, type=int, required=True)
    args = parser.parse_args(argv)
    import tensorflow as tf

    if args.intra:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    images = photos()
    serve = tf.saved_model.load(args.model_dir).signatures["serving_default"]
    print("ready", flush=True)
    for line in sys.stdin:
        size, seconds = int(line.split()[0]), float(line.split()[1])
        batches = [tf.constant(images[i : i + size]) for i in range(0, len(images) - size + 1, size)]
        print(json.dumps(call_in_loop(serve, batches, size=size, callers=args.callers, seconds=seconds)), flush=True)


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


@dataclass
class Client:
    """The bench's side of Classify: one request stream per photo, built once so the client stays cheap."""

    classify: grpc.aio.StreamUnaryMultiCallable
    metadata: tuple
    streams: list[list]
    pids: dict[str, int]

    async def worker(self, offset: int, step: int, until: float, latencies: list[float]) -> int:
        done, index = 0, offset
        while time.perf_counter() < until:
            started = time.perf_counter()
            await self.classify(iter(self.streams[index % len(self.streams)]), metadata=self.metadata, timeout=60)
            latencies.append(time.perf_counter() - started)
            done, index = done + 1, index + step
        return done

    async def run(self, concurrency: int, seconds: float, latencies: list[float]) -> int:
        until = time.perf_counter() + seconds
        counts = await asyncio.gather(*(self.worker(i, concurrency, until, latencies) for i in range(concurrency)))
        return sum(counts)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """Calls completed through the services over some time, with their latencies and each process's CPU time."""

    count: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    def add(self, other: "Sample") -> None:
        self.count += other.count
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.cpu = {name: self.cpu.get(name, 0.0) + seconds for name, seconds in other.cpu.items()}

    def figures(self) -> dict:
        quantiles = statistics.quantiles(self.latencies, n=100)
        return {
            "images_per_second": self.count / self.seconds,
            "cpu_ms_per_image": {name: 1000 * seconds / self.count for name, seconds in self.cpu.items()},
            "p50_ms": quantiles[49] * 1000,
            "p99_ms": quantiles[98] * 1000,
        }


async def through_service(client: Client, concurrency: int, seconds: float) -> Sample:
    sample = Sample()
    cpu_before = {name: cpu_seconds(pid) for name, pid in client.pids.items()}
    started = time.perf_counter()
    sample.count = await client.run(concurrency, seconds, sample.latencies)
    sample.seconds = time.perf_counter() - started
    sample.cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in client.pids.items()}
    return sample


async def _wait_ready(client: Client, process: subprocess.Popen) -> None:
    async def answered() -> bool:
        if process.poll() is not None:
            raise RuntimeError("the inference service exited during start-up")
        await client.classify(iter(client.streams[0]), metadata=client.metadata, timeout=10)
        return True

    await eventually(
        answered, awaiting="the inference service to answer", within=120, interval=0.2, ignoring=(grpc.aio.AioRpcError,)
    )


@contextlib.asynccontextmanager
async def inference_client(modelserver_addr: str, modelserver_pid: int, images: list[bytes]) -> AsyncIterator[Client]:
    """A Client of a fresh `python -m services.inference` subprocess in front of the model server."""
    keys = TestKeys()
    async with key_server(keys) as auth_addr:
        port = free_port()
        process = start_inference(modelserver_addr, auth_addr, port)
        try:
            # A plain channel, without the project's retries and call interceptors: this client's CPU time
            # competes with the services' on the same machine, so it stays as light as it can.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                client = Client(
                    classify=inference_pb2_grpc.InferenceServiceStub(channel).Classify,
                    metadata=(("authorization", f"Bearer {keys.token(ttl=3600)}"),),
                    streams=[classify_requests(image) for image in images],
                    pids={"modelserver": modelserver_pid, "inference": process.pid, "client": os.getpid()},
                )
                await _wait_ready(client, process)
                yield client
        finally:
            stop_process(process)


async def measure_service(
    client: Client, workers: dict[str, InProcess], batches: dict[str, int]
) -> tuple[dict, list[dict]]:
    """Every concurrency level; the target level in ROUNDS rounds, each right after every in-process setup."""
    service = {}
    for level in CONCURRENCY:
        await client.run(level, WARMUP_SECONDS, [])
        if level != TARGET_CONCURRENCY:
            service[level] = (await through_service(client, level, SECONDS_PER_LEVEL)).figures()
    total, rounds = Sample(), []
    for _ in range(ROUNDS):
        local = {}
        for name, worker in workers.items():
            local[name] = await asyncio.to_thread(worker.measure, batches[name], SECONDS_PER_ROUND)
        sample = await through_service(client, TARGET_CONCURRENCY, SECONDS_PER_ROUND)
        total.add(sample)
        rounds.append({"in_process": local, "service_images_per_second": sample.count / sample.seconds})
    service[TARGET_CONCURRENCY] = total.figures()
    return service, rounds


async def measure(model_dir: Path, modelserver_addr: str, modelserver_pid: int, images: list[bytes]) -> dict:
    with contextlib.ExitStack() as stack:
        workers = {setup.name: stack.enter_context(InProcess(model_dir, setup)) for setup in in_process_setups()}
        scan = {
            name: {size: worker.measure(size, SECONDS_PER_BATCH_SIZE) for size in IN_PROCESS_BATCHES}
            for name, worker in workers.items()
        }
        batches = {name: max(sizes, key=lambda size: sizes[size]["images_per_second"]) for name, sizes in scan.items()}
        async with inference_client(modelserver_addr, modelserver_pid, images) as client:
            service, rounds = await measure_service(client, workers, batches)
    return {"scan": scan, "best_batches": batches, "service": service, "rounds": rounds}


def in_process_over_rounds(rounds: list[dict]) -> dict[str, Figures]:
    """Each setup's throughput and CPU per image, averaged over the rounds."""
    return {
        name: {
            key: statistics.fmean(r["in_process"][name][key] for r in rounds) for key in rounds[0]["in_process"][name]
        }
        for name in rounds[0]["in_process"]
    }


def report(figures: dict) -> dict:
    for name, sizes in figures["scan"].items():
        rates = ", ".join(
            f"{n}: {f['images_per_second']:.0f}/s {f['cpu_ms_per_image']:.2f} ms" for n, f in sizes.items()
        )
        print(f"in-process, {name}, by batch size: {rates}")
    rounds, setups = figures["rounds"], in_process_over_rounds(figures["rounds"])
    target_rate = figures["service"][TARGET_CONCURRENCY]["images_per_second"]
    for name, setup in setups.items():
        rate, batch = setup["images_per_second"], figures["best_batches"][name]
        print(f"in-process over the rounds, {name}, batch {batch}: {rate:.1f}/s (service: {target_rate / rate:.2f})")
    best = max(setups, key=lambda name: setups[name]["images_per_second"])
    local_rate, local_cpu = setups[best]["images_per_second"], setups[best]["cpu_ms_per_image"]
    print(f"{'concurrency':>11} {'images/s':>9} {'vs in-process':>13} {'p50 ms':>8} {'p99 ms':>8}  CPU ms/image")
    for level, level_figures in figures["service"].items():
        ratio = level_figures["images_per_second"] / local_rate
        cpu = ", ".join(f"{name} {ms:.2f}" for name, ms in level_figures["cpu_ms_per_image"].items())
        print(
            f"{level:>11} {level_figures['images_per_second']:9.1f} {ratio:13.2f} {level_figures['p50_ms']:8.1f} "
            f"{level_figures['p99_ms']:8.1f}  {cpu}"
        )
    ratios = [r["service_images_per_second"] / r["in_process"][best]["images_per_second"] for r in rounds]
    print(f"concurrency {TARGET_CONCURRENCY} vs in-process, round by round: {min(ratios):.2f} to {max(ratios):.2f}")
    service_cpu = sum(figures["service"][TARGET_CONCURRENCY]["cpu_ms_per_image"].values())
    print(
        f"CPU per image at concurrency {TARGET_CONCURRENCY}: {service_cpu:.2f} ms through the services "
        f"vs {local_cpu:.2f} in-process"
    )
    return {
        **figures,
        "in_process": setups,
        "best_in_process": best,
        "throughput_ratio_at_32": figures["service"][TARGET_CONCURRENCY]["images_per_second"] / local_rate,
        "cpu_ratio_at_32": local_cpu / service_cpu,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def run() -> dict:
    images = photos()
    with tempfile.TemporaryDirectory(prefix="tagsmith-bench-") as workdir:
        base = model_base_path(Path(workdir))
        with start_modelserver(base, Path(workdir) / "modelserver") as (address, modelserver):
            measured = asyncio.run(measure(base / MODEL_NAME / "1", address, modelserver.pid, images))
    figures = report(measured)
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


def main(argv: list[str]) -> None:
    if argv[:1] == ["--in-process"]:
        in_process_main(argv[1:])
    else:
        run()


if __name__ == "__main__":
    main(sys.argv[1:])
