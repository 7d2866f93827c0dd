"""Vocabulary changes: derive every image's model tags again from its stored labels, without the model."""

import asyncio
import logging

from services.catalog.store import CatalogStore

log = logging.getLogger(__name__)

# Pause between background batches, so re-tagging a large catalog leaves the database to the requests.
_PAUSE_SECONDS = 0.05
# How long the background job waits before looking again after an error.
_RETRY_SECONDS = 30.0


class Retagger:
    """Re-tags images whose vocabulary version differs from this process's, in batches; resumable, since each
    image records the version it was tagged with, and shareable, since batches skip rows others hold."""

    def __init__(self, store: CatalogStore, *, batch_size: int) -> None:
        self._store = store
        self._batch = batch_size

    async def run_all(self) -> int:
        """Re-tags until no image is left on another version; returns how many were re-tagged."""
        total, after = 0, 0
        while True:
            count, last = await self._store.retag_batch(after_id=after, limit=self._batch)
            total += count
            if count == 0:
                if after == 0 or await self._store.count_untagged() == 0:
                    return total
                after = 0  # rows held by another run behind the cursor: go round once more
                continue
            after = last
            await asyncio.sleep(_PAUSE_SECONDS)

    async def run(self) -> None:
        """The background job: re-tags at start-up when the vocabulary version changed, retrying after errors."""
        while True:
            try:
                async with self._store.exclusive("catalog-retag") as mine:
                    if mine and (done := await self.run_all()):
                        log.info("re-tagged %d images with vocabulary %s", done, self._store.vocabulary.version)
                return
            except Exception:
                log.exception("re-tagging failed; trying again in %.0f s", _RETRY_SECONDS)
                await asyncio.sleep(_RETRY_SECONDS)
