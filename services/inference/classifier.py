"""Classifies validated images: cache by SHA-256, one model call per distinct image in flight, ranked results."""

import asyncio
from dataclasses import dataclass

import grpc
import numpy as np

from services.inference.batcher import DEADLINE_MESSAGE, PredictBatcher
from services.inference.cache import ResultCache
from services.inference.model_client import ModelError
from services.inference.upload import MAX_TOP_K


@dataclass(frozen=True)
class Classification:
    """The best classes first, with their probabilities, and the model version that scored them."""

    class_ids: tuple[int, ...]
    scores: tuple[float, ...]
    model_version: str
    # What the photo looks like (float16), for similar photos; None when the model returns no embedding.
    embedding: np.ndarray | None = None

    def top(self, k: int) -> list[tuple[int, float]]:
        return list(zip(self.class_ids[:k], self.scores[:k], strict=True))


def ranked(
    scores: np.ndarray, version: str, k: int = MAX_TOP_K, *, embedding: np.ndarray | None = None
) -> Classification:
    k = min(k, scores.shape[-1])
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return Classification(tuple(int(i) for i in best), tuple(float(scores[i]) for i in best), version, embedding)


class Classifier:
    """Looks in the cache, joins an identical image already in flight, or asks the batcher."""

    def __init__(self, batcher: PredictBatcher, cache: ResultCache[Classification]) -> None:
        self._batcher = batcher
        self._cache = cache
        self._in_flight: dict[str, asyncio.Future] = {}

    @property
    def batcher(self) -> PredictBatcher:
        return self._batcher

    @property
    def cache(self) -> ResultCache[Classification]:
        return self._cache

    async def classify(self, digest: str, payload: bytes, *, timeout: float) -> Classification:
        """The image's classification; it is queued before this coroutine first yields."""
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        future = self._in_flight.get(digest)
        if future is None:
            future = self._batcher.submit(payload, timeout=timeout)
            self._in_flight[digest] = future
            future.add_done_callback(lambda done: self._finished(digest, done))
        try:
            # Shielded: one caller giving up must not cancel the others waiting for the same image.
            scores, version, embedding = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise ModelError(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None
        result = ranked(scores, version, embedding=embedding)
        self._cache.put(digest, result, version=version)
        return result

    def _finished(self, digest: str, future: asyncio.Future) -> None:
        self._in_flight.pop(digest, None)
        if not future.cancelled():
            future.exception()  # marks it retrieved when every waiter has already gone
