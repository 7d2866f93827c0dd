"""`python -m services.inference` starts fast, stays light, never imports TensorFlow, and stops on SIGTERM."""

import subprocess
import sys

from tests.support.auth_fixtures import measure_service_process, service_env
from tests.support.inference_fixtures import INFERENCE_SERVICE, REPO
from tests.support.ports import free_port

START_LIMIT_SECONDS = 5
IDLE_RSS_LIMIT_MB = 150


async def test_starts_serving_quickly_and_stays_light():
    port = free_port()
    env = service_env(
        TAGSMITH_PORT=str(port),
        TAGSMITH_METRICS_PORT="0",
        TAGSMITH_TFSERVING_ADDR=f"127.0.0.1:{free_port()}",
        TAGSMITH_LOG_LEVEL="WARNING",
    )
    figures = await measure_service_process("services.inference", INFERENCE_SERVICE, port=port, env=env)
    assert figures.start_seconds < START_LIMIT_SECONDS, f"SERVING after {figures.start_seconds:.2f}s"
    assert figures.rss_mb < IDLE_RSS_LIMIT_MB, f"idle RSS {figures.rss_mb:.0f} MB"
    assert "libtensorflow" not in figures.maps


def test_bad_settings_fail_fast_with_a_readable_message(tmp_path):
    env = service_env(TAGSMITH_LABELS_FILE=str(tmp_path / "missing.txt"))
    result = subprocess.run(
        [sys.executable, "-m", "services.inference"], cwd=REPO, env=env, capture_output=True, timeout=30
    )
    assert result.returncode != 0
    assert b"missing.txt" in result.stderr
    assert b"Traceback" not in result.stderr
