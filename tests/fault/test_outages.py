"""Every component killed under upload load, one at a time (SIGKILL, and the graceful signal), then started again.

The trials run in the order below, each on first use, on one system kept for the module; the tests after the
trials check what the whole run left in the database and the blob directory.
"""

import os

import pytest

from local.children import run_command
from tests.fault import holdings
from tests.fault.conftest import LIMITS
from tests.fault.system import SERVICES
from tests.fault.trials import Spec, bad_answers, graceful, wait_for

MODEL = ("modelserver", "inference")
SETTLE_SECONDS = 10.0
# How long before a graceful stop a request must have been sent to count as in flight at the service: a request
# sent at the very moment may reach it after it stopped taking new calls.
IN_FLIGHT_SECONDS = 0.5
SPECS = [Spec((component,), how) for component in SERVICES for how in ("SIGKILL", graceful(component))]
# Auth stays down while the catalog restarts: the catalog must come back without fetching auth's keys.
SPECS.append(Spec(("auth", "catalog"), "SIGKILL"))


def trial_params(specs=SPECS) -> list:
    return [pytest.param(spec, id=spec.id) for spec in specs]


@pytest.fixture(scope="module")
def run(trials, figures):
    """`run(spec)` -> the Trial, run on first use; its figures go into the table."""

    def result(spec: Spec):
        fresh = spec.id not in trials.done
        trial = trials.result(spec)
        if fresh:
            figures.append(trial.figures(bad_answers(trial, limits=LIMITS)))
        return trial

    return result


@pytest.mark.parametrize("spec", trial_params())
def test_every_acknowledged_upload_is_listed_and_downloads_byte_identical(run, spec):
    trial = run(spec)
    assert trial.acks, "no upload was acknowledged during the trial"
    assert trial.lost == []


@pytest.mark.parametrize("spec", trial_params())
def test_outage_answers_are_503_with_retry_after_or_success_never_a_hang(run, spec):
    trial = run(spec)
    assert trial.answers, "no request was in flight during the outage"
    assert bad_answers(trial, limits=LIMITS) == []


@pytest.mark.parametrize("spec", trial_params())
def test_uploads_are_classified_again_after_the_restart(run, spec):
    trial = run(spec)
    assert trial.serving is not None, "no upload was acknowledged classified after the restart"


@pytest.mark.parametrize("spec", trial_params())
def test_uploads_stored_pending_are_classified_after_the_outage(run, spec):
    trial = run(spec)
    if set(spec.components) & set(MODEL):
        assert trial.pending_acks, "no upload was stored pending while the model was down"
    assert trial.still_pending == {}


GRACEFUL = [spec for spec in SPECS if spec.how == "SIGTERM"]


@pytest.mark.parametrize("spec", trial_params(GRACEFUL))
def test_a_graceful_stop_lets_requests_in_flight_finish(run, spec):
    """Requests sent a moment before the signal have reached the service: they are answered, not cut off."""
    trial = run(spec)
    in_flight = [a for a in trial.answers if a.started < trial.killed - IN_FLIGHT_SECONDS]
    cut_off = [a for a in in_flight if a.status not in (200, 201)]
    assert [f"sent {trial.killed - a.started:.2f}s before: {a.describe()}" for a in cut_off] == []


# ---- after every trial ----


def test_answers_outside_outages_all_succeed(run, load):
    outages = [(trial.killed, trial.ended) for trial in (run(spec) for spec in SPECS)]
    calm = [
        answer
        for answer in load.record.answers
        if not any(answer.finished >= start and answer.started <= end for start, end in outages)
    ]
    assert calm, "no request was answered outside the outages"
    assert [a.describe() for a in calm if a.status not in (200, 201)] == []


def totals(figures: list[dict]) -> dict:
    """The last row of the table: the whole run."""
    if not figures or figures[-1]["trial"] != "all trials":
        figures.append({"trial": "all trials"})
    return figures[-1]


def test_every_acknowledged_upload_survives_every_trial(run, load, api, fault_system, figures):
    for spec in SPECS:
        run(spec)
    load.stop()
    acks = load.record.acks
    lost = holdings.lost_uploads(api, load.users, acks)
    stored = holdings.StoredBytes.scan(fault_system.blob_dir)
    by_uid = {row.uid: row for row in holdings.rows(fault_system.dsn)}
    for ack in acks:
        row = by_uid.get(ack.uid)
        if row is None or row.status == "uploading" or row.sha256 != ack.photo.sha256:
            lost.append(f"{ack.uid}: row {row}")
        elif stored.originals.get(row.sha256) is None or stored.originals[row.sha256].read_bytes() != ack.photo.data:
            lost.append(f"{ack.uid}: stored bytes differ from the upload")
    totals(figures).update(
        acknowledged=len(acks), lost=len(lost), answers_503=_count_503(load), load_average=os.getloadavg()[0]
    )
    assert lost == []


def _count_503(load) -> int:
    return sum(1 for answer in load.record.answers if answer.status == 503)


def test_no_row_without_bytes(run, load, fault_system):
    load.stop()
    found = holdings.rows(fault_system.dsn)
    assert found
    assert holdings.rows_without_bytes(found, holdings.StoredBytes.scan(fault_system.blob_dir)) == []


def test_no_unfinished_upload_or_bytes_without_a_row_unless_the_catalog_was_killed(run, load, fault_system, figures):
    """Only a catalog killed mid-upload may leave an unfinished row or bytes behind, for the sweeper to remove."""
    load.stop()
    killed = [run(s) for s in SPECS if "catalog" in s.components and s.how == "SIGKILL"]
    excused = [(t.wall_started, t.wall_ended) for t in killed]

    def unexcused() -> list[str]:
        found = holdings.rows(fault_system.dsn)
        unfinished = {row.uid: row.created_at for row in found if row.status == "uploading"}
        stored = holdings.StoredBytes.scan(fault_system.blob_dir)
        orphans = holdings.bytes_without_rows(found, stored)
        totals(figures).update(
            unfinished_uploads=len(unfinished),
            bytes_without_row=len(orphans),
            unfinished_writes=len(stored.unfinished_writes),
        )
        leftovers = {f"row {uid}": at for uid, at in unfinished.items()}
        leftovers |= {f"file {path.name}": holdings.written_at(path) for path in orphans}
        return sorted(what for what, at in leftovers.items() if not any(a <= at <= b for a, b in excused))

    # An upload cut short by the end of the load is undone a moment after its client saw the answer.
    wait_for(lambda: not unexcused(), SETTLE_SECONDS, interval=0.5)
    assert unexcused() == []


def test_after_a_sweep_every_row_has_bytes_and_all_bytes_a_row(run, load, fault_system):
    load.stop()
    env = {
        "TAGSMITH_POSTGRES_DSN": fault_system.dsn,
        "TAGSMITH_BLOB_DIR": str(fault_system.blob_dir),
        "TAGSMITH_SWEEP_GRACE_SECONDS": "0",
        "TAGSMITH_LOG_FORMAT": "text",
    }
    run_command("sweep", ["-m", "services.catalog", "sweep"], env=env, log_dir=fault_system.base_dir, sink=None)
    found = holdings.rows(fault_system.dsn)
    stored = holdings.StoredBytes.scan(fault_system.blob_dir)
    assert [row.uid for row in found if row.status == "uploading"] == []
    assert holdings.rows_without_bytes(found, stored) == []
    assert holdings.bytes_without_rows(found, stored) == []
