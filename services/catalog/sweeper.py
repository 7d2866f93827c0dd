"""The sweeper: purges expired trash, and removes unfinished uploads and unreferenced bytes after a grace period."""

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.catalog.content import ORIGINALS, THUMBNAILS, ContentBytes, hash_of
from services.catalog.store import CatalogStore

log = logging.getLogger(__name__)

_LOCK_NAME = "catalog-sweeper"
_BATCH = 500
THIRTY_DAYS = 30 * 86400.0


@dataclass(frozen=True)
class SweepReport:
    uploads: int = 0
    contents: int = 0
    trash: int = 0
    # False when another replica was sweeping at the same time.
    ran: bool = True


class Sweeper:
    """One replica at a time sweeps (a PostgreSQL try-lock); each removal rechecks under the content lock."""

    def __init__(
        self,
        *,
        store: CatalogStore,
        contents: ContentBytes,
        grace_seconds: float,
        trash_retention_seconds: float = THIRTY_DAYS,
    ) -> None:
        self._store = store
        self._contents = contents
        self._grace = grace_seconds
        self._trash_retention = trash_retention_seconds

    async def run(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                report = await self.sweep_once()
            except Exception:
                log.exception("sweep failed; trying again next interval")
                continue
            if report.uploads or report.contents or report.trash:
                log.info(
                    "swept %d expired trashed images, %d unfinished uploads and %d orphaned contents",
                    report.trash,
                    report.uploads,
                    report.contents,
                )

    async def sweep_once(self) -> SweepReport:
        async with self._store.exclusive(_LOCK_NAME) as mine:
            if not mine:
                return SweepReport(ran=False)
            trash = await self._expired_trash()
            return SweepReport(uploads=await self._unfinished_uploads(), contents=await self._orphans(), trash=trash)

    async def _expired_trash(self) -> int:
        removed = 0
        for image_id, sha256 in await self._store.expired_trash(older_than_seconds=self._trash_retention):
            removed += await self._store.purge_trashed(
                image_id, sha256, older_than_seconds=self._trash_retention, remove_bytes=self._contents.remove
            )
        return removed

    async def _unfinished_uploads(self) -> int:
        removed = 0
        for image_id, sha256 in await self._store.stale_uploads(older_than_seconds=self._grace):
            removed += await self._store.remove_stale_upload(
                image_id, sha256, older_than_seconds=self._grace, remove_bytes=self._contents.remove
            )
        return removed

    async def _orphans(self) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=self._grace)
        removed, batch, seen = 0, set(), set()
        for prefix in (ORIGINALS, THUMBNAILS):
            async for blob in self._contents.blobs.list(prefix):
                sha256 = hash_of(blob.key)
                if sha256 is None or blob.modified > cutoff or sha256 in seen:
                    continue
                batch.add(sha256)
                seen.add(sha256)
                if len(batch) >= _BATCH:
                    removed += await self._release(batch)
                    batch = set()
        return removed + await self._release(batch)

    async def _release(self, hashes: set[str]) -> int:
        if not hashes:
            return 0
        unreferenced = hashes - await self._store.referenced_hashes(sorted(hashes))
        removed = 0
        for sha256 in sorted(unreferenced):
            removed += await self._store.release_content(sha256, self._contents.remove)
        return removed
