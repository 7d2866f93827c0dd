"""Face detection beside classification: the detector's letterboxed input, its Predict calls, boxes mapped back."""

import asyncio
from dataclasses import dataclass

import grpc
import numpy as np

from services.common import tfserving
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
from services.inference.model_client import ModelError, model_error
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
    """Predict on the face detector's signature, answering per-image rows for PredictBatcher."""

    def __init__(self, channel: grpc.aio.Channel, *, address: str, model_name: str) -> None:
        self._address = address
        self._model_name = model_name
        self._predict = tfserving.PREDICT.callable(channel)
        self._metadata = tfserving.GET_MODEL_METADATA.callable(channel)

    @property
    def model_name(self) -> str:
        return self._model_name

    async def predict(self, images: list[bytes], *, timeout: float) -> _Rows:
        """Boxes and scores of the faces in a batch of letterboxed inputs, each uint8 RGB [192, 192, 3]."""
        request = tfserving.PredictRequest(output_filter=list(_OUTPUTS))
        request.model_spec.name = self._model_name
        request.model_spec.signature_name = FACE_SIGNATURE
        shape = (len(images), FACE_INPUT_SIZE, FACE_INPUT_SIZE, 3)
        request.inputs[FACE_INPUT].CopyFrom(tfserving.uint8_tensor(b"".join(images), shape))
        try:
            response = await self._predict(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise model_error(exc, self._address) from None
        missing = [name for name in _OUTPUTS if name not in response.outputs]
        if missing:
            raise ModelError(grpc.StatusCode.INTERNAL, f"the face detector returned no {', '.join(missing)}")
        boxes, scores, counts = (tfserving.to_numpy(response.outputs[name]) for name in _OUTPUTS)
        if boxes.shape[0] != len(images) or counts.shape != (len(images),):
            raise ModelError(grpc.StatusCode.INTERNAL, f"unexpected face detector shapes {boxes.shape}")
        rows = [(boxes[i, : int(n)], scores[i, : int(n)]) for i, n in enumerate(counts)]
        return _Rows(rows, str(response.model_spec.version.value))

    async def version(self, *, timeout: float) -> str:
        """The version TF Serving serves now (what reclassification compares stored faces with)."""
        request = tfserving.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = self._model_name
        try:
            response = await self._metadata(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise model_error(exc, self._address) from None
        return str(response.model_spec.version.value)


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
            raise ModelError(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None
        faces = sorted(
            (unletterbox(box, score, placed) for box, score in zip(boxes, scores, strict=True)),
            key=lambda face: -face.score,
        )
        result = FaceDetection(tuple(faces), version)
        self._cache.put(digest, result, version=version)
        return result
