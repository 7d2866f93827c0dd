"""Bulk import: find the files, skip those the server already has (by SHA-256), upload the rest several at once.

Nothing is remembered locally: the server's answer to "which of these digests do I have" is the record of what a
previous, interrupted run already sent, so a re-run carries on where that one stopped.
"""

import hashlib
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagsmith_client.client import DIGESTS_PER_REQUEST, Client
from tagsmith_client.errors import ApiError, TagsmithError
from tagsmith_client.progress import Progress, human_bytes

NEW, DUPLICATE, REFUSED, FAILED = "new", "duplicate", "refused", "failed"
# What a folder walk picks up: the formats the server accepts (services/common/imageformats.py; a test keeps the
# two in step). Files named on the command line are always sent.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".heic", ".heif", ".hif", ".avif"}
)
# Answers about the file itself: sending it again would be refused again.
_REFUSING_STATUSES = frozenset({400, 413, 415})
_HASH_CHUNK = 1024 * 1024


@dataclass
class FileResult:
    path: str
    status: str
    uid: str = ""
    category: str = ""
    error: str = ""
    code: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "uid": self.uid,
            "category": self.category,
            "error": self.error,
            "code": self.code,
        }


@dataclass
class Summary:
    new: int = 0
    duplicate: int = 0
    refused: int = 0
    failed: int = 0
    not_started: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    problems: list[FileResult] = field(default_factory=list)

    def add(self, result: FileResult) -> None:
        setattr(self, result.status, getattr(self, result.status) + 1)
        if result.status in (REFUSED, FAILED):
            self.problems.append(result)

    @property
    def ok(self) -> bool:
        return not (self.refused or self.failed or self.interrupted)

    def as_json(self) -> dict[str, Any]:
        keys = ("new", "duplicate", "refused", "failed", "not_started", "bytes_sent", "seconds", "interrupted")
        return {"summary": {key: getattr(self, key) for key in keys}}

    def describe(self) -> list[str]:
        done = self.new + self.duplicate + self.refused + self.failed
        lines = [
            f"{done} files: {self.new} new, {self.duplicate} already there, {self.refused} refused,"
            f" {self.failed} failed ({human_bytes(self.bytes_sent)} sent in {self.seconds:.1f} s)"
        ]
        lines += [f"  {p.status}: {p.path}: {p.error}" for p in self.problems]
        if self.interrupted:
            lines.append(f"interrupted: {self.not_started} files not sent; run the same command again to carry on")
        return lines


def find_files(paths: Iterable[str], *, recursive: bool) -> tuple[list[Path], list[FileResult]]:
    """(files to import, in a stable order; paths refused before anything is sent)."""
    files: list[Path] = []
    problems: list[FileResult] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            if not recursive:
                problems.append(FileResult(given, REFUSED, error="is a folder; pass -r to import folders"))
                continue
            files += sorted(p for p in path.rglob("*") if _importable(p, path))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(FileResult(given, FAILED, error="no such file or folder"))
    return list(dict.fromkeys(files)), problems


def _importable(path: Path, root: Path) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
    return not hidden and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Importer:
    """Imports files with `concurrency` uploads in flight; `report` receives each file's result as it ends."""

    def __init__(
        self, client: Client, *, progress: Progress, report: Callable[[FileResult], None], concurrency: int = 4
    ) -> None:
        self._client = client
        self._progress = progress
        self._report = report
        self._concurrency = concurrency
        self._pending: dict[Future, Path] = {}
        self._lock = threading.Lock()

    def run(self, paths: Iterable[str], *, recursive: bool) -> Summary:
        summary = Summary()
        files, problems = find_files(paths, recursive=recursive)
        self._progress.add_files(len(problems) + len(files), 0)
        for problem in problems:
            self._finish(problem, summary)
        sizes = self._sizes(files, summary)
        self._progress.add_files(0, sum(sizes.values()))
        self._progress.start()
        pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="tagsmith-upload")
        remaining = list(sizes)
        try:
            # Asked (logging in on the way) while the first files are hashed.
            limits = pool.submit(self._client.limits) if remaining else None
            while remaining:
                batch, remaining = remaining[:DIGESTS_PER_REQUEST], remaining[DIGESTS_PER_REQUEST:]
                self._import_batch(pool, batch, sizes, summary, limits)
        except KeyboardInterrupt:
            summary.interrupted = True
            pool.shutdown(wait=True, cancel_futures=True)
            self._collect_finished(summary)
            summary.not_started = self._progress.files_total - self._progress.files_done
        finally:
            pool.shutdown(wait=True)
            self._progress.close()
        summary.bytes_sent = self._progress.bytes_sent
        summary.seconds = round(self._progress.elapsed, 3)
        return summary

    def _sizes(self, files: list[Path], summary: Summary) -> dict[Path, int]:
        sizes = {}
        for path in files:
            try:
                sizes[path] = path.stat().st_size
            except OSError as exc:
                self._finish(FileResult(str(path), FAILED, error=exc.strerror or str(exc)), summary)
        return sizes

    def _import_batch(
        self, pool: ThreadPoolExecutor, batch: list[Path], sizes: dict[Path, int], summary: Summary, limits: Future
    ) -> None:
        digests = dict(zip(batch, pool.map(_digest_or_error, batch), strict=True))
        max_bytes = limits.result().max_bytes
        known = self._client.find_digests(d for d in digests.values() if not isinstance(d, OSError))
        for path in batch:
            digest = digests[path]
            result = None
            if isinstance(digest, OSError):
                result = FileResult(str(path), FAILED, error=f"cannot read it: {digest.strerror or digest}")
            elif digest in known:
                entry = known[digest]
                result = FileResult(str(path), DUPLICATE, uid=entry.uid, category=entry.category)
            elif max_bytes and sizes[path] > max_bytes:
                limit = human_bytes(max_bytes)
                result = FileResult(str(path), REFUSED, error=f"larger than the server's limit of {limit}")
            if result is not None:
                self._progress.skip_bytes(sizes[path])
                self._finish(result, summary)
            else:
                self._pending[pool.submit(self._upload, path)] = path
        for future in as_completed(list(self._pending)):
            self._finish(future.result(), summary)
            del self._pending[future]

    def _collect_finished(self, summary: Summary) -> None:
        for future in [f for f in self._pending if f.done() and not f.cancelled()]:
            self._finish(future.result(), summary)
            del self._pending[future]

    def _upload(self, path: Path) -> FileResult:
        try:
            image = self._client.upload(path, progress=self._progress.sent)
        except ApiError as exc:
            status = REFUSED if exc.status in _REFUSING_STATUSES else FAILED
            return FileResult(str(path), status, error=exc.message, code=exc.code)
        except (TagsmithError, OSError) as exc:
            return FileResult(str(path), FAILED, error=str(exc))
        return FileResult(str(path), DUPLICATE if image.duplicate else NEW, uid=image.uid, category=image.category)

    def _finish(self, result: FileResult, summary: Summary) -> None:
        summary.add(result)
        self._progress.file_done()
        self._report(result)


def _digest_or_error(path: Path) -> str | OSError:
    try:
        return sha256_of(path)
    except OSError as exc:
        return exc
