"""Embeddings stored before migration 0019 (the model's 1280 numbers) are projected into the stored form in the
background, without running the model again; a few batches at start-up, then the job ends."""

import asyncio
import logging

from services.catalog.store.similarity import SimilarityIndex

log = logging.getLogger(__name__)

# Embeddings projected per transaction.
_BATCH = 500
# Pause between batches, so a large upgrade leaves the database to the requests.
_PAUSE_SECONDS = 0.05
# How long the job waits before trying again after an error.
_RETRY_SECONDS = 30.0


async def project_stored_embeddings(index: SimilarityIndex, *, batch: int = _BATCH) -> int:
    """Projects every embedding left in the old table; returns how many."""
    total = 0
    while taken := await index.project_stored(limit=batch):
        total += taken
        await asyncio.sleep(_PAUSE_SECONDS)
    return total


async def run(index: SimilarityIndex) -> None:
    """The background job; retries after errors (the database away) until nothing is left."""
    while True:
        try:
            if done := await project_stored_embeddings(index):
                log.info("projected %d embeddings stored before the partitioned layout", done)
            return
        except Exception:
            log.exception("projecting stored embeddings failed; trying again in %.0f s", _RETRY_SECONDS)
            await asyncio.sleep(_RETRY_SECONDS)
