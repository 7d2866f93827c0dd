"""Model upgrades: re-label, in resumable batches, images labelled by a model other than the one served now."""

import asyncio
import logging
from collections.abc import Callable

from services.catalog.classify import Result, StoredImageClassifier
from services.catalog.inference_client import InferenceClient
from services.catalog.models import BatchResult, ModelId
from services.catalog.store import CatalogStore
from services.common.identity import TokenProvider

log = logging.getLogger(__name__)

_MODEL_TIMEOUT = 10.0
# While other processes hold every remaining image, wait this long before looking again.
_BUSY_WAIT_SECONDS = 5.0


class Reclassifier:
    """Each batch claims images (SKIP LOCKED), so several runs can share the work and a crash loses nothing."""

    def __init__(
        self,
        *,
        store: CatalogStore,
        classifier: StoredImageClassifier,
        inference: InferenceClient,
        lease_seconds: float = 300.0,
    ) -> None:
        self._store = store
        self._classifier = classifier
        self._inference = inference
        self._lease = lease_seconds

    async def run_batch(self, token: str, *, batch_size: int, after_id: int = 0) -> BatchResult:
        """One batch of images with ids above `after_id`; raises InferenceUnavailable (claims released) when
        inference cannot answer."""
        model = await self._inference.model(token=token, timeout=_MODEL_TIMEOUT)
        rows = await self._store.claim_outdated(model, limit=batch_size, lease_seconds=self._lease, after_id=after_id)
        results = await self._classifier.classify_all(rows, token)
        outcome = BatchResult(model_version=model.version, last_id=max((row.id for row in rows), default=after_id))
        problem = None
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, Result):
                await self._settle(result, model, outcome)
            else:
                await self._store.mark_reclassify_tried(row.id, model, release_only=True)
                problem = problem or result
        if problem is not None:
            raise problem
        outcome.remaining = await self._store.count_outdated(model)
        return outcome

    async def _settle(self, result: Result, model: ModelId, outcome: BatchResult) -> None:
        if result.classification is not None:
            saved = await self._store.save_classification(
                result.row.id, result.classification, statuses=("classified", "failed")
            )
            outcome.reclassified += int(saved is not None)
            if not result.classification.embedding:
                # A model without embeddings: the backfill must not claim this image again for it.
                await self._store.mark_reclassify_tried(result.row.id, model)
            return
        await self._store.mark_reclassify_tried(result.row.id, model)
        outcome.failed += 1
        outcome.errors.append(f"{result.row.uid}: {result.error}")

    async def run_all(
        self, tokens: TokenProvider, *, batch_size: int, report: Callable[[BatchResult], None] = lambda _: None
    ) -> BatchResult:
        """Batches until nothing outdated remains; safe to interrupt and run again."""
        total, after = BatchResult(), 0
        while True:
            batch = await self.run_batch(await tokens.token(), batch_size=batch_size, after_id=after)
            report(batch)
            total.reclassified += batch.reclassified
            total.failed += batch.failed
            total.remaining, total.model_version = batch.remaining, batch.model_version
            if batch.remaining == 0:
                return total
            if batch.last_id == after:
                # Nothing left past the cursor: what remains lies behind it, or other runs hold it for now.
                if after == 0:
                    await asyncio.sleep(_BUSY_WAIT_SECONDS)
                after = 0
            else:
                after = batch.last_id
