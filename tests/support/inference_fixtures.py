"""Pytest fixtures for the model server and the inference service, shared by every test tier.

- `modelserver_addr` (session): "127.0.0.1:PORT" of a `python -m services.modelserver` subprocess serving the real
  model from `model_base_path`; started once, killed at the end of the session.
- `inference_server` (function): async factory `await inference_server(verifier=..., **settings)` -> RunningServer,
  an in-process inference service talking to `modelserver_addr` (or to `tfserving_addr=` when given); every server
  it started is stopped after the test.
- Helpers: `MODEL_NAME`, `classify_requests(data, top_k=0)`, `start_modelserver(...)`,
  `stand_in_tfserving({tfserving.PREDICT: handler, ...})`.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tagsmith.inference.v1 import inference_pb2

from services.inference import tfserving
from tests.support.waiting import TimedOut, eventually_blocking

REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "efficientnet_lite0"
INFERENCE_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
MODELSERVER_START_SECONDS = 120
CHUNK_BYTES = 1024 * 1024


def classify_requests(data: bytes, *, top_k: int = 0, chunk_bytes: int = CHUNK_BYTES) -> list:
    """A Classify request stream: options first, then the image in chunks of at most 1 MiB."""
    requests = [inference_pb2.ClassifyRequest(options=inference_pb2.ClassifyOptions(top_k=top_k))]
    requests += [
        inference_pb2.ClassifyRequest(chunk=data[i : i + chunk_bytes]) for i in range(0, len(data), chunk_bytes)
    ]
    return requests


@contextlib.asynccontextmanager
async def stand_in_tfserving(
    handlers: Mapping[tfserving.Method, Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]],
) -> AsyncIterator[str]:
    """A stand-in TF Serving on port 0 that answers only `handlers` (e.g. {tfserving.PREDICT: never_answer}), for
    behaviour the real model server cannot be made to show; yields its address."""
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = defaultdict(dict)
    for method, handler in handlers.items():
        service, name = method.path.lstrip("/").split("/")
        by_service[service][name] = grpc.unary_unary_rpc_method_handler(
            handler,
            request_deserializer=method.request.FromString,
            response_serializer=method.response.SerializeToString,
        )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(s, m) for s, m in by_service.items()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def _parent_death_signal():
    """A pre-exec hook so the model server gets SIGTERM if the test process dies without cleaning up (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded here: the forked child must not dlopen
    except OSError:
        return None
    return lambda: libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _wait_serving(process: subprocess.Popen, port_file: Path, log_file: Path) -> str:
    def serving_address() -> str | None:
        if process.poll() is not None:
            raise RuntimeError(f"model server exited with {process.returncode}:\n{log_file.read_text()[-3000:]}")
        if not port_file.exists():
            return None
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return address if reply.status == health_pb2.HealthCheckResponse.SERVING else None

    try:
        return eventually_blocking(
            serving_address, awaiting="the model server SERVING", within=MODELSERVER_START_SECONDS
        )
    except TimedOut as exc:
        raise RuntimeError(f"{exc}\n{log_file.read_text()[-3000:]}") from None


@contextlib.contextmanager
def start_modelserver(model_base_path: Path, workdir: Path, *extra_args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Runs `python -m services.modelserver --port 0` until the block ends; yields (address, process)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port_file, log_file = workdir / "modelserver.port", workdir / "modelserver.log"
    port_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "services.modelserver", "--host", "127.0.0.1", "--port", "0"]
    command += ["--port_file", str(port_file), "--model_base_path", str(model_base_path), *extra_args]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "gen"), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "TAGSMITH_METRICS_PORT": "0",
        "TAGSMITH_LOG_LEVEL": "WARNING",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_parent_death_signal()
        )
    try:
        yield _wait_serving(process, port_file, log_file), process
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def modelserver_addr(model_base_path, tmp_path_factory) -> Iterator[str]:
    """Address of one model server subprocess for the whole session, serving the real EfficientNet-Lite0 and the
    BlazeFace face detector from one model config file, as TF Serving is run in production."""
    workdir = tmp_path_factory.mktemp("modelserver")
    config = write_model_config(model_base_path, workdir / "models.config")
    with start_modelserver(model_base_path, workdir, "--model_config_file", str(config)) as (address, _):
        yield address


def write_model_config(model_base_path: Path, path: Path) -> Path:
    """A model config file listing both served models under `model_base_path`."""
    from services.common.model_contract import SERVED_MODELS
    from services.modelserver.config import model_config_text

    path.write_text(model_config_text({name: model_base_path.resolve() / name for name in SERVED_MODELS}))
    return path


@pytest.fixture
async def inference_server(request, test_keys):
    """Factory: `running = await inference_server(verifier=None, **settings)`; stopped after the test.

    The verifier defaults to test_keys.verifier(); tfserving_addr defaults to the session's model server.
    """
    from services.inference.config import Settings
    from services.inference.server import create_server

    started = []

    async def start(verifier=None, **overrides):
        if "tfserving_addr" not in overrides:
            overrides["tfserving_addr"] = request.getfixturevalue("modelserver_addr")
        settings = Settings(host="127.0.0.1", port=0, metrics_port=None, **overrides)
        running = await create_server(settings, verifier=verifier or test_keys.verifier())
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop(0)
