"""Service subprocesses: started with their own environment, logs prefixed with their name, stopped gracefully."""

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

REPO = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1
# TensorFlow's C++ start-up lines, logged before its logging reads TF_CPP_MIN_LOG_LEVEL, so that setting cannot
# hide them (nor can CUDA_VISIBLE_DEVICES): information, and "failed call to cuInit", which only says this machine
# has no GPU. They stay in the service's log file; the terminal gets the lines a person needs.
_TENSORFLOW_START_UP = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*"
    r"|E\d{4} [\d:.]+ +\d+ cuda_[\w.]+:\d+\] failed call to cuInit: .*"
)


def for_terminal(line: str) -> bool:
    """Whether a service's output line is shown in the terminal (every line goes to its log file)."""
    return not _TENSORFLOW_START_UP.fullmatch(line)


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM if the launcher dies without cleaning up."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """The launcher's environment without its TAGSMITH_* settings, plus the child's own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TAGSMITH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "gen"), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env | extra


class Child:
    """One service process; its output goes to its own log file and, when there is a sink, prefixed to the sink.

    Without a sink the process writes straight into the file, so no launcher thread spends CPU copying its logs
    (which would count against the system in a benchmark).
    """

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], log_dir: Path, sink: TextIO | None):
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self._sink = sink
        self._process: subprocess.Popen | None = None
        self._pump: threading.Thread | None = None

    def start(self) -> "Child":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._sink is None:
            with self.log_path.open("ab") as log_file:
                self._process = self._spawn(log_file)
            return self
        self._process = self._spawn(subprocess.PIPE)
        self._pump = threading.Thread(target=self._copy_output, name=f"log-{self.name}", daemon=True)
        self._pump.start()
        return self

    def _spawn(self, output) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, *self.args],
            cwd=REPO,
            env=child_environment(self.env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def _copy_output(self) -> None:
        prefix = f"{self.name:<15} | "
        output = self._process.stdout if self._process is not None else None
        if output is None:
            raise RuntimeError(f"{self.name} was started without a pipe for its output")
        with self.log_path.open("a", encoding="utf-8") as log_file:
            for raw in iter(output.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log_file.write(line + "\n")
                log_file.flush()
                if self._sink is not None and for_terminal(line):
                    self._sink.write(prefix + line + "\n")
                    self._sink.flush()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def terminate(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        """Waits until `deadline` (time.monotonic), then kills the process if it is still running."""
        if self._process is None:
            return
        try:
            self._process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._pump is not None:
            self._pump.join(timeout=2)

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def run_command(name: str, args: list[str], *, env: dict[str, str], log_dir: Path, sink: TextIO | None) -> None:
    """Runs a one-shot command (a migration, an account) to completion; raises with its output if it fails."""
    child = Child(name, args, env=env, log_dir=log_dir, sink=sink).start()
    child.wait(time.monotonic() + 300)
    if child.exit_code() != 0:
        raise RuntimeError(f"{name} failed with exit code {child.exit_code()}:\n{child.tail()}")
