"""Face detection beside classification: the detector's letterboxed input, its Predict calls, boxes mapped back."""

import asyncio
from dataclasses import dataclass

import grpc
import numpy as np

from services.common.errors import StatusError
from services.common.model_contract import (
    FACE_BOXES_OUTPUT,
    FACE_COUNT_OUTPUT,
    FACE_INPUT,
    FACE_INPUT_SIZE,
    FACE_SCORES_OUTPUT,
    FACE_SIGNATURE,
)
from services.inference.batcher import DEADLINE_MESSAGE, PredictBatcher
from services.inference.cache import ResultCache
from services.inference.model_client import ModelClient
from services.inference.pixels import Letterbox

_OUTPUTS = (FACE_BOXES_OUTPUT, FACE_SCORES_OUTPUT, FACE_COUNT_OUTPUT)


@dataclass(frozen=True)
class Face:
    """One detected face: its box in fractions (0-1) of the upright image, and the detector's score."""

    x: float
    y: float
    width: float
    height: float
    score: float

    @property
    def area(self) -> float:
        return self.width * self.height


@dataclass(frozen=True)
class FaceDetection:
    """The faces the detector found (best score first) and its model version."""

    faces: tuple[Face, ...]
    model_version: str


@dataclass(frozen=True)
class _Rows:
    """A Predict answer split per image, as PredictBatcher hands out rows: (boxes [count, 4], scores [count])."""

    values: list[tuple[np.ndarray, np.ndarray]]
    version: str
    # The detector describes no photo; PredictBatcher hands out an embedding only for the classifier.
    embeddings: None = None


def unletterbox(box: np.ndarray, score: float, placed: Letterbox, size: int = FACE_INPUT_SIZE) -> Face:
    """A detector box (xmin, ymin, xmax, ymax in fractions of the input) in fractions of the upright image."""
    xmin, xmax = (np.clip((box[[0, 2]] * size - placed.left) / placed.width, 0.0, 1.0)).tolist()
    ymin, ymax = (np.clip((box[[1, 3]] * size - placed.top) / placed.height, 0.0, 1.0)).tolist()
    return Face(x=xmin, y=ymin, width=xmax - xmin, height=ymax - ymin, score=float(score))


class FaceClient:
    """The face detector's signature on the model client, answering per-image rows for PredictBatcher."""

    def __init__(self, model: ModelClient) -> None:
        self._model = model

    @property
    def model_name(self) -> str:
        return self._model.model_name

    async def predict(self, images: list[bytes], *, timeout: float) -> _Rows:
        """Boxes and scores of the faces in a batch of letterboxed inputs, each uint8 RGB [192, 192, 3]."""
        prediction = await self._model.predict(
            images,
            signature=FACE_SIGNATURE,
            input_key=FACE_INPUT,
            side=FACE_INPUT_SIZE,
            outputs=_OUTPUTS,
            timeout=timeout,
        )
        boxes, scores, counts = (prediction.outputs[name] for name in _OUTPUTS)
        if boxes.shape[0] != len(images) or counts.shape != (len(images),):
            raise StatusError(grpc.StatusCode.INTERNAL, f"unexpected face detector shapes {boxes.shape}")
        rows = [(boxes[i, : int(n)], scores[i, : int(n)]) for i, n in enumerate(counts)]
        return _Rows(rows, prediction.version)

    async def version(self, *, timeout: float) -> str:
        """The version TF Serving serves now (what reclassification compares stored faces with)."""
        return (await self._model.metadata(timeout=timeout)).version


class FaceDetector:
    """Detects faces in letterboxed inputs through its own batcher, remembering results by image SHA-256."""

    def __init__(self, client: FaceClient, batcher: PredictBatcher, cache: ResultCache[FaceDetection]) -> None:
        self._client = client
        self._batcher = batcher
        self._cache = cache

    @property
    def model_name(self) -> str:
        return self._client.model_name

    async def version(self, *, timeout: float) -> str:
        return await self._client.version(timeout=timeout)

    @property
    def batcher(self) -> PredictBatcher:
        return self._batcher

    async def detect(self, digest: str, pixels: bytes, placed: Letterbox, *, timeout: float) -> FaceDetection:
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        try:
            (boxes, scores), version, _ = await asyncio.wait_for(
                self._batcher.predict(pixels, timeout=timeout), timeout
            )
        except TimeoutError:
            raise StatusError(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None
        faces = sorted(
            (unletterbox(box, score, placed) for box, score in zip(boxes, scores, strict=True)),
            key=lambda face: -face.score,
        )
        result = FaceDetection(tuple(faces), version)
        self._cache.put(digest, result, version=version)
        return result
