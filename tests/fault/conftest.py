"""Fault-tier fixtures: one real system and one upload load per module, the trials run on them, and their figures."""

import json
import os
from pathlib import Path

import httpx
import pytest

from tests.fault.load import Load
from tests.fault.system import BACKEND_TIMEOUT_SECONDS, TRANSFER_TIMEOUT_SECONDS, FaultSystem
from tests.fault.trials import TrialRunner

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "test-artifacts" / "fault-trials.json"
# A client gives up a little after the deadline the system was configured with; an answer later than that is a hang.
SLACK_SECONDS = 2.0
LIMITS = {
    "upload": TRANSFER_TIMEOUT_SECONDS + SLACK_SECONDS,
    "download": TRANSFER_TIMEOUT_SECONDS + SLACK_SECONDS,
    "list": BACKEND_TIMEOUT_SECONDS + SLACK_SECONDS,
}
FIGURES = pytest.StashKey[list]()
COLUMNS = (
    ("trial", "trial", 24),
    ("acknowledged", "acked", 6),
    ("lost", "lost", 5),
    ("pending_while_down", "pending", 8),
    ("unclassified_after", "unclass.", 9),
    ("answers_503", "503s", 5),
    ("bad_answers", "bad", 5),
    ("exit_s", "exit s", 7),
    ("restart_to_ready_s", "ready s", 8),
    ("kill_to_serving_s", "serving s", 10),
    ("slowest_answer_s", "slowest s", 10),
    ("trial_s", "trial s", 8),
)


@pytest.fixture(scope="module")
def fault_system(tmp_path_factory, model_base_path):
    system = FaultSystem(tmp_path_factory.mktemp("fault"), model_base_path)
    system.start()
    yield system
    system.stop()


@pytest.fixture(scope="module")
def load(fault_system):
    running = Load(fault_system.gateway_url, limits=LIMITS).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(fault_system):
    with httpx.Client(base_url=fault_system.gateway_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def trials(fault_system, load, api):
    return TrialRunner(fault_system, load, api)


@pytest.fixture(scope="module")
def figures(request) -> list[dict]:
    """Rows of the figures table, printed at the end of the run and written to test-artifacts/fault-trials.json."""
    rows = request.config.stash.setdefault(FIGURES, [])
    yield rows
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(rows, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    rows = config.stash.get(FIGURES, [])
    if not rows:
        return
    terminalreporter.write_sep("-", f"fault trials (also in {ARTIFACT.relative_to(REPO)})")
    terminalreporter.write_line(
        "".join(f"{title:>{width}}" if width < 20 else f"{title:<{width}}" for _, title, width in COLUMNS)
    )
    for row in rows:
        if row["trial"] == "all trials":
            terminalreporter.write_line(_totals_line(row))
            continue
        cells = []
        for key, _, width in COLUMNS:
            value = row.get(key, "")
            value = "-" if value is None else value
            cells.append(f"{value!s:<{width}}" if width >= 20 else f"{value!s:>{width}}")
        terminalreporter.write_line("".join(cells))


def _totals_line(row: dict) -> str:
    return (
        f"all trials: {row.get('acknowledged', '-')} uploads acknowledged, {row.get('lost', '-')} lost, "
        f"{row.get('answers_503', '-')} answers 503; left for the sweeper: {row.get('unfinished_uploads', '-')} "
        f"unfinished uploads, {row.get('bytes_without_row', '-')} files without a row "
        f"(and {row.get('unfinished_writes', '-')} temporary files of unfinished writes); "
        f"load average {row.get('load_average', 0):.1f} on {os.cpu_count()} cores"
    )
