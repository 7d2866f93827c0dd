"""Client of the inference service: streams an image to Classify and sorts failures by what to do next."""

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import grpc
from tagsmith.inference.v1 import inference_pb2, inference_pb2_grpc

from services.catalog.models import Classification, ModelId
from services.catalog.terms import LabelScore
from services.common.channels import bearer, stream_answer

TOP_K = 5
CHUNK_BYTES = 1024 * 1024

# Not the image's fault: try again later without counting an attempt.
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
}
_TOKEN_REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


class InferenceUnavailable(Exception):
    """Inference could not answer now (down, slow, overloaded, or our token was refused)."""


class InferenceTokenRefused(InferenceUnavailable):
    """Inference refused our token (expired or revoked); a fresh token may fix it."""


class InferenceRejected(Exception):
    """The model refused this image for good (INVALID_ARGUMENT); retrying will not help."""


class InferenceFailed(Exception):
    """Inference failed in a way that may or may not recur; counts as one attempt."""


def _raise_for(error: grpc.aio.AioRpcError) -> None:
    code, details = error.code(), error.details() or ""
    if code in _TOKEN_REFUSED:
        raise InferenceTokenRefused(f"inference refused the token: {details}") from None
    if code in _TRANSIENT:
        raise InferenceUnavailable(f"inference {code.name.lower()}: {details}") from None
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        raise InferenceRejected(details or "the model rejected the image") from None
    raise InferenceFailed(f"inference {code.name.lower()}: {details}") from None


async def _requests(chunks: AsyncIterable[bytes]) -> AsyncIterator[inference_pb2.ClassifyRequest]:
    yield inference_pb2.ClassifyRequest(options=inference_pb2.ClassifyOptions(top_k=TOP_K))
    async for chunk in chunks:
        for start in range(0, len(chunk), CHUNK_BYTES):
            yield inference_pb2.ClassifyRequest(chunk=chunk[start : start + CHUNK_BYTES])


class InferenceClient:
    """Classify and GetModel over one long-lived channel; every call carries a token and a timeout."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = inference_pb2_grpc.InferenceServiceStub(channel)

    async def classify(self, chunks: AsyncIterable[bytes], *, token: str, timeout: float) -> Classification:
        try:
            call = self._stub.Classify(_requests(chunks), metadata=bearer(token), timeout=timeout)
            reply = await stream_answer(call, peer="inference")
        except grpc.aio.AioRpcError as error:
            _raise_for(error)
        return Classification(
            labels=[LabelScore(p.label, p.class_id, p.score) for p in reply.labels],
            category=reply.category,
            tags=list(reply.tags),
            model_name=reply.model_name,
            model_version=reply.model_version,
            thumbnail=reply.thumbnail,
            thumbnail_format=reply.thumbnail_format,
            embedding=tuple(reply.embedding),
            faces=[_face(face) for face in reply.faces] if reply.faces_analysed else None,
            face_model_version=reply.face_model_version if reply.faces_analysed else "",
        )

    async def model(self, *, token: str, timeout: float) -> ModelId:
        try:
            reply = await self._stub.GetModel(inference_pb2.GetModelRequest(), metadata=bearer(token), timeout=timeout)
        except grpc.aio.AioRpcError as error:
            _raise_for(error)
        return ModelId(reply.name, reply.version, reply.face_model_version)


def _face(face: inference_pb2.Face) -> dict[str, Any]:
    box = face.box
    return {"box": {"x": box.x, "y": box.y, "width": box.width, "height": box.height}, "score": face.score}
