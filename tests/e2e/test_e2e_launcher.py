"""`make run` (`python -m local`) beside another running system: its own ports and data, and a quiet start."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from local.config import LocalSettings

REPO = Path(__file__).resolve().parents[2]
RUNNING = re.compile(r"Tagsmith is running at (http://\S+)")
# What a start must not show: TensorFlow's C++ start-up lines and a model server still loading taken for an outage.
NOISE = ("absl::InitializeLog", "cudart_stub", "cuInit", "oneDNN", "is unavailable")


@pytest.fixture
def second_copy(stack, model_base_path, tmp_path):
    """`python -m local` with every port chosen freely and its own data directory, beside the session's stack."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TAGSMITH_")}
    env |= {f"TAGSMITH_{name.upper()}": "0" for name in LocalSettings.model_fields if name.endswith("_port")}
    env |= {"TAGSMITH_DATA_DIR": str(tmp_path / "var"), "TAGSMITH_MODEL_BASE_PATH": str(model_base_path)}
    output = tmp_path / "output.txt"
    with output.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "local"], cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        yield process, output
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def wait_for_url(process: subprocess.Popen, output: Path, *, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if found := RUNNING.search(output.read_text()):
            return found.group(1)
        time.sleep(0.5)
    raise AssertionError(f"make run did not start:\n{output.read_text()}")


def test_a_second_copy_starts_beside_the_first_and_quietly(stack, second_copy):
    process, output = second_copy
    url = wait_for_url(process, output)
    assert url != stack.gateway_url
    for base in (url, stack.gateway_url):
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200, output.read_text()
    started = output.read_text().splitlines()
    noisy = [line for line in started if any(word in line for word in NOISE) or " ERROR " in line]
    assert noisy == [], "\n".join(started)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, output.read_text()
