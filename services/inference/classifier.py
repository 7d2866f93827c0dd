"""Classifies validated images: cache by SHA-256, one model call per distinct image in flight, ranked results."""

import asyncio
from dataclasses import dataclass

import grpc
import numpy as np

from services.common.errors import StatusError
from services.inference.batcher import DEADLINE_MESSAGE, PredictBatcher
from services.inference.cache import ResultCache
from services.inference.images import MODEL_SIDE
from services.inference.model_client import ModelClient
from services.inference.upload import MAX_TOP_K


@dataclass(frozen=True)
class Scores:
    """A Predict answer: [N, classes] probabilities, the model version that produced them, and the [N, dims]
    embeddings when the model returns them."""

    values: np.ndarray
    version: str
    embeddings: np.ndarray | None = None


@dataclass(frozen=True)
class ModelMetadata:
    version: str
    num_classes: int
    input_key: str
    server: str  # which server answered (see ServedModel.server)


class ClassifierClient:
    """The classifier's signature on the model client: scores (and embeddings) per image, and the model's shape."""

    def __init__(
        self,
        model: ModelClient,
        *,
        signature_name: str,
        input_key: str,
        scores_output: str,
        embedding_output: str = "",
    ) -> None:
        self._model = model
        self._signature_name = signature_name
        self._input_key = input_key
        self._scores_output = scores_output
        self._embedding_output = embedding_output

    @property
    def model_name(self) -> str:
        return self._model.model_name

    async def predict(self, images: list[bytes], *, timeout: float) -> Scores:
        """Scores for a batch of model inputs, each uint8 RGB [224, 224, 3] row-major."""
        prediction = await self._model.predict(
            images,
            signature=self._signature_name,
            input_key=self._input_key,
            side=MODEL_SIDE,
            outputs=[self._scores_output],
            # A model without embeddings still classifies; similar photos then wait for one that has them.
            optional=[self._embedding_output] if self._embedding_output else [],
            timeout=timeout,
        )
        values = prediction.outputs[self._scores_output]
        if values.ndim != 2 or values.shape[0] != len(images):
            raise StatusError(grpc.StatusCode.INTERNAL, f"unexpected scores shape {values.shape}")
        return Scores(values, prediction.version, self._embeddings(prediction.outputs, len(images)))

    def _embeddings(self, outputs: dict[str, np.ndarray], count: int) -> np.ndarray | None:
        values = outputs.get(self._embedding_output)
        if values is None:
            return None
        if values.ndim != 2 or values.shape[0] != count:
            raise StatusError(grpc.StatusCode.INTERNAL, f"unexpected embedding shape {values.shape}")
        # Half precision, as the catalog stores them: the result cache holds thousands.
        return values.astype(np.float16)

    async def metadata(self, *, timeout: float) -> ModelMetadata:
        served = await self._model.metadata(timeout=timeout)
        if self._signature_name not in served.signatures:
            raise StatusError(grpc.StatusCode.INTERNAL, f"the model has no signature '{self._signature_name}'")
        outputs = served.signatures[self._signature_name].outputs
        dims = (
            [dim.size for dim in outputs[self._scores_output].tensor_shape.dim]
            if self._scores_output in outputs
            else []
        )
        num_classes = dims[-1] if dims else 0
        return ModelMetadata(served.version, num_classes, self._input_key, served.server)


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
            raise StatusError(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None
        result = ranked(scores, version, embedding=embedding)
        self._cache.put(digest, result, version=version)
        return result

    def _finished(self, digest: str, future: asyncio.Future) -> None:
        self._in_flight.pop(digest, None)
        if not future.cancelled():
            future.exception()  # marks it retrieved when every waiter has already gone
