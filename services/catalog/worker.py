"""The pending-classification worker: claims due images (SKIP LOCKED, shared by replicas) and classifies them."""

import asyncio
import logging
from dataclasses import dataclass

from services.catalog.classify import Result, StoredImageClassifier
from services.catalog.inference_client import InferenceTokenRefused, InferenceUnavailable
from services.catalog.store import CatalogStore
from services.common.db import UNREACHABLE as DATABASE_UNREACHABLE
from services.common.identity import LoginFailed, TokenProvider

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerPolicy:
    batch_size: int = 8
    poll_seconds: float = 2.0
    max_backoff_seconds: float = 60.0
    lease_seconds: float = 120.0
    max_attempts: int = 5
    # Base of the per-image exponential backoff after a failed attempt.
    retry_seconds: float = 30.0


class PendingWorker:
    """Runs until cancelled; backs off (doubling up to a cap) while inference or auth is unavailable."""

    def __init__(
        self, *, store: CatalogStore, classifier: StoredImageClassifier, tokens: TokenProvider, policy: WorkerPolicy
    ) -> None:
        self._store = store
        self._classifier = classifier
        self._tokens = tokens
        self._policy = policy

    async def run(self) -> None:
        delay = self._policy.poll_seconds
        while True:
            try:
                handled = await self.run_once()
                delay = 0 if handled else self._policy.poll_seconds
            except (InferenceUnavailable, LoginFailed, *DATABASE_UNREACHABLE) as exc:
                delay = min(max(delay, self._policy.poll_seconds) * 2, self._policy.max_backoff_seconds)
                log.warning("classification paused for %.1fs: %s", delay, exc)
            except Exception:
                delay = self._policy.max_backoff_seconds
                log.exception("pending worker failed; retrying in %.1fs", delay)
            await asyncio.sleep(delay)

    async def run_once(self) -> int:
        """Classifies one batch of due pending images; returns how many it settled."""
        rows = await self._store.claim_pending(limit=self._policy.batch_size, lease_seconds=self._policy.lease_seconds)
        if not rows:
            return 0
        try:
            token = await self._tokens.token()
        except LoginFailed:
            await asyncio.gather(*(self._store.release_claim(row.id) for row in rows))
            raise
        results = await self._classifier.classify_all(rows, token)
        settled, unavailable = 0, None
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, Result):
                settled += await self._settle(result)
                continue
            await self._store.release_claim(row.id)
            unavailable = unavailable or result
        if unavailable is not None:
            if isinstance(unavailable, InferenceTokenRefused):
                self._tokens.invalidate()
            raise unavailable
        return settled

    async def _settle(self, result: Result) -> int:
        if result.classification is not None:
            saved = await self._store.save_classification(result.row.id, result.classification, statuses=("pending",))
            return int(saved is not None)
        status = await self._store.record_failure(
            result.row.id,
            reason=result.error,
            permanent=result.permanent,
            max_attempts=self._policy.max_attempts,
            backoff_seconds=self._policy.retry_seconds,
        )
        log.warning("classification of %s failed (%s): %s", result.row.uid, status, result.error)
        return 1
