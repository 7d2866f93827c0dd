"""Import progress: a redrawn bar on a terminal, a plain line every few seconds anywhere else."""

import threading
import time
from typing import TextIO

BAR_WIDTH = 24
TERMINAL_REFRESH_SECONDS = 0.2
PLAIN_INTERVAL_SECONDS = 5.0


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def human_seconds(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counters updated by the upload threads; a ticker thread renders them on `stream`."""

    def __init__(self, stream: TextIO | None, *, terminal: bool, interval: float = PLAIN_INTERVAL_SECONDS) -> None:
        """`stream` None counts without showing anything."""
        self._stream, self._terminal = stream, terminal
        self._interval = TERMINAL_REFRESH_SECONDS if terminal else interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.files_total = self.files_done = 0
        self.bytes_total = self.bytes_sent = 0
        self._started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def start(self) -> None:
        self._started = time.monotonic()
        if self._stream is None:
            return
        self._ticker = threading.Thread(target=self._run, name="tagsmith-progress", daemon=True)
        self._ticker.start()

    def add_files(self, count: int, size: int) -> None:
        with self._lock:
            self.files_total += count
            self.bytes_total += size

    def skip_bytes(self, size: int) -> None:
        """Bytes that turned out not to need sending (the server already has the file)."""
        with self._lock:
            self.bytes_total -= size

    def sent(self, size: int) -> None:
        with self._lock:
            self.bytes_sent += size

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1

    def note(self, text: str) -> None:
        """A message line that must not be drawn over by the bar."""
        if self._stream is None:
            return
        with self._lock:
            if self._terminal:
                self._stream.write("\r\x1b[K")
            self._stream.write(text + "\n")
            self._stream.flush()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self._render(final=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._render()

    def _render(self, *, final: bool = False) -> None:
        if self._stream is None:
            return
        with self._lock:
            line = self._line()
            if self._terminal:
                self._stream.write("\r\x1b[K" + line + ("\n" if final else ""))
            else:
                self._stream.write(line + "\n")
            self._stream.flush()

    def _line(self) -> str:
        elapsed = max(self.elapsed, 1e-6)
        rate = self.bytes_sent / elapsed
        remaining = max(self.bytes_total - self.bytes_sent, 0)
        left = human_seconds(remaining / rate) if rate > 0 and remaining else ("0:00" if not remaining else "?")
        sent, total = human_bytes(self.bytes_sent), human_bytes(self.bytes_total)
        text = f"{self.files_done}/{self.files_total} files  {sent}/{total}  {human_bytes(rate)}/s  {left} left"
        if not self._terminal:
            return "progress: " + text
        done = self.files_done / self.files_total if self.files_total else 1.0
        filled = int(done * BAR_WIDTH)
        return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {text}"
