"""Calls TensorFlow Serving (or the local model server) over gRPC, with TF Serving's own messages."""

import json
import logging
from dataclasses import dataclass

import grpc
import numpy as np

from services.common import tfserving
from services.common.channels import grpc_target
from services.inference.images import MODEL_SIDE

log = logging.getLogger(__name__)

# TF Serving accepts requests up to 2 GiB; a batch of images can pass gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 2**31 - 1
_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": tfserving.PREDICTION_SERVICE}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


class ModelError(Exception):
    """TensorFlow Serving refused or failed a call; `code` is the status to answer our own caller with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


def open_tfserving_channel(address: str) -> grpc.aio.Channel:
    """A channel that reconnects within seconds after TF Serving restarts, and retries UNAVAILABLE briefly."""
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    return grpc.aio.insecure_channel(grpc_target(address), options=options)


def model_error(exc: grpc.aio.AioRpcError, address: str) -> ModelError:
    """What our caller should see for a failed TF Serving call."""
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ModelError(code, "TensorFlow Serving did not answer within the deadline; try again")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return ModelError(code, f"the model could not read the image: {details}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED):
        return ModelError(grpc.StatusCode.UNAVAILABLE, f"TensorFlow Serving at {address} is unavailable; try again")
    if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
        return ModelError(grpc.StatusCode.UNAVAILABLE, f"TensorFlow Serving does not serve the model: {details}")
    return ModelError(grpc.StatusCode.INTERNAL, f"TensorFlow Serving failed ({code.name})")


class ModelClient:
    """Predict (on pixels decoded by this service) and GetModelMetadata for one model signature."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        address: str,
        model_name: str,
        signature_name: str,
        input_key: str,
        scores_output: str,
        embedding_output: str = "",
    ) -> None:
        self._address = address
        self._model_name = model_name
        self._signature_name = signature_name
        self._input_key = input_key
        self._scores_output = scores_output
        self._embedding_output = embedding_output
        self._predict = tfserving.PREDICT.callable(channel)
        self._metadata = tfserving.GET_MODEL_METADATA.callable(channel)

    @property
    def model_name(self) -> str:
        return self._model_name

    async def predict(self, images: list[bytes], *, timeout: float) -> Scores:
        """Scores for a batch of model inputs, each uint8 RGB [224, 224, 3] row-major."""
        wanted = [self._scores_output, self._embedding_output] if self._embedding_output else [self._scores_output]
        request = tfserving.PredictRequest(output_filter=wanted)
        request.model_spec.name = self._model_name
        request.model_spec.signature_name = self._signature_name
        shape = (len(images), MODEL_SIDE, MODEL_SIDE, 3)
        request.inputs[self._input_key].CopyFrom(tfserving.uint8_tensor(b"".join(images), shape))
        try:
            response = await self._predict(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if not self._lacks_embedding(exc):
                raise model_error(exc, self._address) from None
            # A model built before embeddings (or another model): classify on without similar photos.
            log.warning("model %s has no %r output; similar photos need one", self._model_name, wanted[1])
            self._embedding_output = ""
            return await self.predict(images, timeout=timeout)
        if self._scores_output not in response.outputs:
            raise ModelError(grpc.StatusCode.INTERNAL, f"TensorFlow Serving returned no '{self._scores_output}'")
        values = tfserving.to_numpy(response.outputs[self._scores_output])
        if values.ndim != 2 or values.shape[0] != len(images):
            raise ModelError(grpc.StatusCode.INTERNAL, f"unexpected scores shape {values.shape}")
        return Scores(values, str(response.model_spec.version.value), self._embeddings(response, len(images)))

    def _lacks_embedding(self, exc: grpc.aio.AioRpcError) -> bool:
        """TF Serving's answer when an output filter names an output the signature does not have."""
        return (
            bool(self._embedding_output)
            and exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            and f"alias not found in signature: {self._embedding_output}" in (exc.details() or "")
        )

    def _embeddings(self, response, count: int) -> np.ndarray | None:
        if not self._embedding_output or self._embedding_output not in response.outputs:
            return None
        values = tfserving.to_numpy(response.outputs[self._embedding_output])
        if values.ndim != 2 or values.shape[0] != count:
            raise ModelError(grpc.StatusCode.INTERNAL, f"unexpected embedding shape {values.shape}")
        # Half precision, as the catalog stores them: the result cache holds thousands.
        return values.astype(np.float16)

    async def metadata(self, *, timeout: float) -> ModelMetadata:
        request = tfserving.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = self._model_name
        try:
            response = await self._metadata(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise model_error(exc, self._address) from None
        signatures = tfserving.SignatureDefMap.FromString(response.metadata["signature_def"].value)
        if self._signature_name not in signatures.signature_def:
            raise ModelError(grpc.StatusCode.INTERNAL, f"the model has no signature '{self._signature_name}'")
        outputs = signatures.signature_def[self._signature_name].outputs
        dims = (
            [dim.size for dim in outputs[self._scores_output].tensor_shape.dim]
            if self._scores_output in outputs
            else []
        )
        return ModelMetadata(
            version=str(response.model_spec.version.value),
            num_classes=dims[-1] if dims else 0,
            input_key=self._input_key,
        )
