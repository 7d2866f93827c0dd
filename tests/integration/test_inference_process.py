"""`python -m services.inference` starts fast, stays light, never imports TensorFlow, and stops on SIGTERM."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.inference_fixtures import INFERENCE_SERVICE, REPO

START_LIMIT_SECONDS = 5
IDLE_RSS_LIMIT_MB = 150


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def wait_serving(address: str, process: subprocess.Popen, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        try:
            with grpc.insecure_channel(address) as channel:
                request = health_pb2.HealthCheckRequest(service=INFERENCE_SERVICE)
                if health_pb2_grpc.HealthStub(channel).Check(request, timeout=0.5).status == 1:
                    return time.monotonic() - started
        except grpc.RpcError:
            time.sleep(0.05)
    raise AssertionError(f"not SERVING within {limit}s")


def test_starts_serving_quickly_and_stays_light():
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "gen"), str(REPO)]),
        "TAGSMITH_PORT": str(port),
        "TAGSMITH_METRICS_PORT": "0",
        "TAGSMITH_TFSERVING_ADDR": f"127.0.0.1:{free_port()}",
        "TAGSMITH_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.inference"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        elapsed = wait_serving(f"127.0.0.1:{port}", process, START_LIMIT_SECONDS)
        time.sleep(0.3)
        memory = rss_mb(process.pid)
        modules = Path(f"/proc/{process.pid}/maps").read_text()
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert elapsed < START_LIMIT_SECONDS
    assert memory < IDLE_RSS_LIMIT_MB, f"idle RSS {memory:.0f} MB"
    assert "libtensorflow" not in modules


def test_bad_settings_fail_fast_with_a_readable_message(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "gen"), str(REPO)]),
        "TAGSMITH_LABELS_FILE": str(tmp_path / "missing.txt"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "services.inference"], cwd=REPO, env=env, capture_output=True, timeout=30
    )
    assert result.returncode != 0
    assert b"missing.txt" in result.stderr
    assert b"Traceback" not in result.stderr
