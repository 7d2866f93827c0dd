"""The InferenceService RPCs: Classify, GetModel and GetLimits."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Executor

import grpc
from tagsmith.inference.v1 import inference_pb2, inference_pb2_grpc

from services.common.context import time_remaining
from services.common.errors import StatusError
from services.common.imageformats import CONTENT_TYPES, DESCRIPTION
from services.inference.classifier import Classification, Classifier, ClassifierClient
from services.inference.config import Settings
from services.inference.faces import FaceDetection, FaceDetector
from services.inference.images import MODEL_SIDE, DecodedImage, ImageDecoder, InvalidImage
from services.inference.taxonomy import Tagger, face_tags
from services.inference.upload import read_upload

log = logging.getLogger(__name__)

# Images decoding into fewer bytes than this are decoded on the event loop: a thread hop costs more.
INLINE_DECODE_BYTES = 512 * 1024
# Answer with our own DEADLINE_EXCEEDED a little before the caller's deadline fires.
DEADLINE_MARGIN_SECONDS = 0.05


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self,
        settings: Settings,
        *,
        labels: tuple[str, ...],
        decoder: ImageDecoder,
        classifier: Classifier,
        client: ClassifierClient,
        executor: Executor,
        face_detector: FaceDetector | None = None,
    ) -> None:
        self._settings = settings
        self._labels = labels
        self._tagger = Tagger(labels)
        self._decoder = decoder
        self._classifier = classifier
        self._client = client
        self._executor = executor
        self._face_detector = face_detector

    @property
    def classifier(self) -> Classifier:
        return self._classifier

    @property
    def client(self) -> ClassifierClient:
        return self._client

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    async def Classify(
        self, request_iterator: AsyncIterator[inference_pb2.ClassifyRequest], context: grpc.aio.ServicerContext
    ) -> inference_pb2.ClassifyResponse:
        try:
            with self._incoming():
                upload = await read_upload(request_iterator, max_bytes=self._settings.max_bytes)
                image = await self._decode(upload.data)
            timeout = self._timeout()
            # Both models at once: the detector's answer never waits for the classifier's.
            result, faces = await asyncio.gather(
                self._classifier.classify(upload.sha256, image.pixels, timeout=timeout),
                self._detect_faces(upload.sha256, image, timeout=timeout),
            )
            return self._response(result, faces, image, upload.top_k)
        except InvalidImage as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def GetModel(
        self, request: inference_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ModelInfo:
        metadata = await self._client.metadata(timeout=self._timeout())
        description = (
            f"ImageNet classifier '{self._client.model_name}' served by {metadata.server}: "
            f"{metadata.num_classes or len(self._labels)} classes, input '{metadata.input_key}' takes uint8 RGB "
            f"[N, {MODEL_SIDE}, {MODEL_SIDE}, 3] decoded here from {DESCRIPTION} files"
        )
        info = inference_pb2.ModelInfo(
            name=self._client.model_name,
            version=metadata.version,
            description=description,
            num_labels=len(self._labels),
        )
        if self._face_detector is not None:
            try:
                info.face_model_version = await self._face_detector.version(timeout=self._timeout())
                info.face_model_name = self._face_detector.model_name
            except StatusError as exc:
                log.warning("face detector version unknown: %s", exc.message)
        return info

    async def GetLimits(
        self, request: inference_pb2.GetLimitsRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.Limits:
        return inference_pb2.Limits(
            max_bytes=self._settings.max_bytes, max_pixels=self._settings.max_pixels, content_types=CONTENT_TYPES
        )

    @contextlib.contextmanager
    def _incoming(self):
        """Marks an image on its way for each model's batcher, so forming batches wait for it."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._classifier.batcher.incoming())
            if self._face_detector is not None:
                stack.enter_context(self._face_detector.batcher.incoming())
            yield

    async def _detect_faces(self, digest: str, image: DecodedImage, *, timeout: float) -> FaceDetection | None:
        """The faces, or None when detection is off or the detector failed: classification goes on without it."""
        if self._face_detector is None:
            return None
        try:
            return await self._face_detector.detect(digest, image.face_pixels, image.letterbox, timeout=timeout)
        except StatusError as exc:
            log.warning("faces not analysed: %s", exc.message)
            return None

    async def _decode(self, data: bytes) -> DecodedImage:
        plan = self._decoder.plan(data)
        if plan.decode_bytes <= INLINE_DECODE_BYTES:
            return self._decoder.decode(plan)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._decoder.decode, plan)

    def _timeout(self) -> float:
        limit = self._settings.predict_timeout_seconds
        remaining = time_remaining()
        if remaining is None:
            return limit
        return max(0.001, min(limit, remaining - min(DEADLINE_MARGIN_SECONDS, remaining / 10)))

    def _response(
        self, result: Classification, detection: FaceDetection | None, image: DecodedImage, top_k: int
    ) -> inference_pb2.ClassifyResponse:
        if max(result.class_ids) >= len(self._labels):
            raise StatusError(grpc.StatusCode.INTERNAL, "the model scored more classes than the labels file names")
        ranked = result.top(top_k)
        response = inference_pb2.ClassifyResponse(
            labels=[
                inference_pb2.Prediction(label=self._labels[class_id], class_id=class_id, score=score)
                for class_id, score in ranked
            ],
            category=self._labels[result.class_ids[0]],
            tags=self._tagger.tags(result.top(len(result.class_ids)), self._settings.tag_threshold),
            model_name=self._client.model_name,
            model_version=result.model_version,
            format=image.format,
            width=image.width,
            height=image.height,
            orientation=image.orientation,
            thumbnail=image.thumbnail,
            thumbnail_format=image.thumbnail_format,
            embedding=() if result.embedding is None else result.embedding.tolist(),
        )
        if detection is not None and self._face_detector is not None:
            self._add_faces(response, detection, model_name=self._face_detector.model_name)
        return response

    def _add_faces(
        self, response: inference_pb2.ClassifyResponse, detection: FaceDetection, *, model_name: str
    ) -> None:
        faces = [face for face in detection.faces if face.score >= self._settings.face_score_threshold]
        response.faces_analysed = True
        response.face_model_name = model_name
        response.face_model_version = detection.model_version
        for face in faces:
            box = inference_pb2.Box(x=face.x, y=face.y, width=face.width, height=face.height)
            response.faces.append(inference_pb2.Face(box=box, score=face.score))
        response.tags.extend(tag for tag in face_tags(faces) if tag not in response.tags)
