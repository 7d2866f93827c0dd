"""The local-directory driver: one file per key, written through a temporary file, fsync and rename."""

import asyncio
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from services.catalog.blobstore.base import (
    CHUNK_BYTES,
    BlobInfo,
    BlobNotFound,
    BlobReader,
    BlobStore,
    check_key,
    check_prefix,
)

_TMP_DIR = ".tmp"
# Temporary files older than this come from a crashed write and are removed at start-up.
_STALE_TMP_SECONDS = 3600


class _FileReader(BlobReader):
    def __init__(self, handle: IO[bytes], size: int) -> None:
        self._handle = handle
        self.size = size

    async def read(self, n: int = CHUNK_BYTES) -> bytes:
        return await asyncio.to_thread(self._handle.read, n)

    async def close(self) -> None:
        await asyncio.to_thread(self._handle.close)


class LocalBlobStore(BlobStore):
    """Keys map to files under `root`; nothing outside `root` can be named by a valid key."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self._root / check_key(key)

    async def ensure_ready(self) -> None:
        await asyncio.to_thread(self._prepare)

    def _prepare(self) -> None:
        tmp = self._root / _TMP_DIR
        tmp.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - _STALE_TMP_SECONDS
        for leftover in tmp.iterdir():
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink(missing_ok=True)

    async def put(self, key: str, source: IO[bytes], size: int, *, content_type: str) -> None:
        await asyncio.to_thread(self._write, self._path(key), source, size)

    async def put_new(self, key: str, source: IO[bytes], size: int, *, content_type: str) -> bool:
        # One worker-thread hop for the check and the write, instead of one each.
        return await asyncio.to_thread(self._write_new, self._path(key), source, size)

    def _write_new(self, target: Path, source: IO[bytes], size: int) -> bool:
        if target.is_file():
            # A concurrent writer may have renamed it into place without having synced the directory yet.
            _fsync_dir(target.parent)
            return False
        self._write(target, source, size)
        return True

    def _write(self, target: Path, source: IO[bytes], size: int) -> None:
        tmp = self._root / _TMP_DIR / f"{secrets.token_hex(8)}.part"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as out:
                copied = _copy(source, out, size)
                out.flush()
                os.fsync(out.fileno())
            if copied != size:
                raise ValueError(f"expected {size} bytes, read {copied}")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        finally:
            tmp.unlink(missing_ok=True)

    async def open(self, key: str) -> BlobReader:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFound(key) from None
        return _FileReader(handle, os.fstat(handle.fileno()).st_size)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def list(self, prefix: str) -> AsyncIterator[BlobInfo]:
        folder = self._root / check_prefix(prefix)
        entries = await asyncio.to_thread(_scan, folder)
        for name, size, mtime in entries:
            yield BlobInfo(key=prefix + name, size=size, modified=datetime.fromtimestamp(mtime, UTC))

    async def remove_all(self) -> None:
        """Deletes every object; for tests and local resets only."""
        await asyncio.to_thread(shutil.rmtree, self._root, True)


def _copy(source: IO[bytes], out: IO[bytes], size: int) -> int:
    copied = 0
    while copied < size and (chunk := source.read(min(CHUNK_BYTES, size - copied))):
        out.write(chunk)
        copied += len(chunk)
    return copied


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scan(folder: Path) -> list[tuple[str, int, float]]:
    if not folder.is_dir():
        return []
    entries = []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.is_file(follow_symlinks=False):
                stat = entry.stat(follow_symlinks=False)
                entries.append((entry.name, stat.st_size, stat.st_mtime))
    return sorted(entries)
