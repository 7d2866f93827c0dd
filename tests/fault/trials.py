"""One trial: under upload load, kill components, keep them down briefly, start them again, and record what happened."""

import math
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from tests.fault.holdings import listed, lost_uploads
from tests.fault.load import Ack, Answer, Load
from tests.fault.system import POSTGRES, FaultSystem
from tests.support.waiting import TimedOut, eventually_blocking

# Answers a trial waits for while a component is down, and the shortest and longest outage.
OUTAGE_ANSWERS = 4
OUTAGE_MIN_SECONDS = 1.5
OUTAGE_MAX_SECONDS = 6.0
READY_LIMIT_SECONDS = 90.0
SERVING_LIMIT_SECONDS = 60.0
CLASSIFIED_LIMIT_SECONDS = 45.0


@dataclass(frozen=True)
class Spec:
    """Which components go down, in this order, and how; they come back in the reverse order."""

    components: tuple[str, ...]
    how: str

    @property
    def id(self) -> str:
        return f"{'+'.join(self.components)}-{self.how}"

    @property
    def signal(self) -> signal.Signals:
        return signal.Signals[self.how]


def graceful(component: str) -> str:
    """The signal an orchestrator stops the component with: PostgreSQL's official image stops it with SIGINT
    (fast shutdown), since SIGTERM (smart shutdown) waits for every pooled connection to close."""
    return "SIGINT" if component == POSTGRES else "SIGTERM"


@dataclass
class Trial:
    spec: Spec
    started: float = 0.0
    killed: float = 0.0
    restarted: float = 0.0
    ready_seconds: float | None = None
    serving: float | None = None
    ended: float = 0.0
    wall_started: datetime = field(default_factory=lambda: datetime.now(UTC))
    wall_ended: datetime | None = None
    exit_seconds: float = 0.0
    acks: list[Ack] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    # Uploads answered "pending" during the trial, and those still not classified once it was over.
    pending_acks: list[Ack] = field(default_factory=list)
    still_pending: dict[str, str] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)

    @property
    def serving_again_seconds(self) -> float | None:
        return None if self.serving is None else self.serving - self.killed

    def figures(self, bad: list[str]) -> dict:
        slowest = max((a.seconds for a in self.answers), default=0.0)
        return {
            "trial": self.spec.id,
            "killed": "+".join(self.spec.components),
            "how": self.spec.how,
            "acknowledged": len(self.acks),
            "lost": len(self.lost),
            "pending_while_down": len(self.pending_acks),
            "unclassified_after": len(self.still_pending),
            "answers_503": sum(1 for a in self.answers if a.status == 503),
            "bad_answers": len(bad),
            "exit_s": round(self.exit_seconds, 2),
            "restart_to_ready_s": _round(self.ready_seconds),
            "kill_to_serving_s": _round(self.serving_again_seconds),
            "slowest_answer_s": round(slowest, 2),
            "trial_s": round(self.ended - self.started, 1),
            "answers": dict(Counter(str(a.status or a.failure) for a in self.answers)),
            "bad_examples": bad[:5],
            "lost_examples": self.lost[:5],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def wait_for(check: Callable[[], bool], limit: float, *, interval: float = 0.1) -> float | None:
    """Seconds until `check()` held, or None when it did not within `limit`."""
    started = time.monotonic()
    try:
        eventually_blocking(check, awaiting="a trial's condition", within=limit, interval=interval)
    except TimedOut:
        return None
    return time.monotonic() - started


class TrialRunner:
    """Runs each trial once, on first request, on the one system and load of the suite."""

    def __init__(self, system: FaultSystem, load: Load, client: httpx.Client) -> None:
        self.system = system
        self.load = load
        self.client = client
        self.done: dict[str, Trial] = {}

    def result(self, spec: Spec) -> Trial:
        if spec.id not in self.done:
            self.done[spec.id] = self._run(spec)
        return self.done[spec.id]

    def _run(self, spec: Spec) -> Trial:
        trial = Trial(spec)
        self._healthy_before(trial)
        trial.killed = time.monotonic()
        for component in spec.components:
            trial.exit_seconds += self.system.kill(component, spec.signal).exit_seconds
        self._ride_out()
        for component in reversed(spec.components):
            self._bring_back(trial, component, last=component == spec.components[0])
        trial.serving = self._first_classified_upload_after(trial.restarted)
        self._settle(trial)
        return trial

    def _healthy_before(self, trial: Trial) -> None:
        assert wait_for(self.system.all_ready, READY_LIMIT_SECONDS) is not None, "the system is not ready"
        trial.started = time.monotonic()
        trial.wall_started = datetime.now(UTC)
        classified = self._first_classified_upload_after(trial.started)
        assert classified is not None, "no upload was classified before the trial"

    def _ride_out(self) -> None:
        """Keeps the components down until the clients have had a few answers (or the longest outage passed)."""
        down_since = time.monotonic()

        def enough() -> bool:
            elapsed = time.monotonic() - down_since
            answered = len(self.load.record.answers_between(down_since, math.inf))
            return elapsed >= OUTAGE_MIN_SECONDS and answered >= OUTAGE_ANSWERS

        wait_for(enough, OUTAGE_MAX_SECONDS)

    def _bring_back(self, trial: Trial, component: str, *, last: bool) -> None:
        trial.restarted = time.monotonic()
        self.system.restart(component)
        ready = wait_for(lambda: self.system.ready(component), READY_LIMIT_SECONDS)
        assert ready is not None, f"{component} did not come back:\n{self.system.logs(component)}"
        trial.ready_seconds = ready
        if not last:
            self._exercise(component)

    def _exercise(self, component: str) -> None:
        """With the other components still down, lets requests reach the one just restarted: once the gateway
        reaches it again, until a few requests sent after that have been answered."""
        wait_for(lambda: self.system.gateway_reaches(component), OUTAGE_MAX_SECONDS)
        since = time.monotonic()
        wait_for(lambda: len(self.load.record.answers_started_after(since)) >= OUTAGE_ANSWERS, OUTAGE_MAX_SECONDS)

    def _first_classified_upload_after(self, since: float) -> float | None:
        """When an upload that started after `since` was first acknowledged already classified."""

        def found() -> bool:
            return any(a.status == "classified" for a in self.load.record.acks_started_between(since, math.inf))

        if wait_for(found, SERVING_LIMIT_SECONDS) is None:
            return None
        acks = self.load.record.acks_started_between(since, math.inf)
        return min(a.answered for a in acks if a.status == "classified")

    def _settle(self, trial: Trial) -> None:
        """Waits until what was stored pending is classified, then checks every upload acknowledged in the trial."""
        trial.pending_acks = [
            a for a in self.load.record.acks_started_between(trial.started, math.inf) if a.status == "pending"
        ]
        wait_for(lambda: not self._unclassified(trial.pending_acks), CLASSIFIED_LIMIT_SECONDS, interval=0.5)
        trial.still_pending = self._unclassified(trial.pending_acks)
        trial.ended = time.monotonic()
        trial.wall_ended = datetime.now(UTC)
        trial.acks = self.load.record.acks_started_between(trial.started, trial.ended)
        trial.answers = self.load.record.answers_between(trial.killed, trial.ended)
        trial.lost = lost_uploads(self.client, self.load.users, trial.acks)

    def _unclassified(self, acks: list[Ack]) -> dict[str, str]:
        """uid -> status (or "not listed") of the uploads among `acks` that are not classified now."""
        shown = {username: listed(self.client, self.load.user(username)) for username in {a.user for a in acks}}
        now = {a.uid: shown[a.user].get(a.uid, "not listed") for a in acks}
        return {uid: status for uid, status in now.items() if status != "classified"}


def bad_answers(trial: Trial, *, limits: dict[str, float]) -> list[str]:
    """Answers the outage must not produce: anything but success or 503 with Retry-After, and any hang.

    With the gateway itself down nothing can answer, so only then may a connection fail.
    """
    gateway_down = "gateway" in trial.spec.components
    bad = []
    for answer in trial.answers:
        if answer.seconds > limits[answer.kind]:
            bad.append(f"no answer within {limits[answer.kind]:.0f}s: {answer.describe()}")
        elif answer.status in (200, 201):
            continue
        elif answer.status == 503 and not answer.retry_after:
            bad.append(f"503 without Retry-After: {answer.describe()}")
        elif answer.status != 503 and not (answer.failure == "connection" and gateway_down):
            bad.append(answer.describe())
    return bad
