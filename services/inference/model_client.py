"""The one client of TensorFlow Serving (or the local model server): gRPC with TF Serving's own messages."""

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from services.common.channels import grpc_target
from services.common.errors import StatusError
from services.common.model_contract import MODEL_SERVER_HEADER, TF_SERVING
from services.inference import tfserving

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


@dataclass(frozen=True)
class Prediction:
    """A Predict answer: each output asked for, as numpy, and the model version that produced them."""

    outputs: dict[str, np.ndarray]
    version: str


@dataclass(frozen=True)
class ServedModel:
    """What GetModelMetadata says of a model: the version served now and its signatures (SignatureDef by key)."""

    version: str
    signatures: Mapping
    # Which server answered: the bundled model server names itself in a response header, TF Serving does not.
    server: str = TF_SERVING


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


def model_error(exc: grpc.aio.AioRpcError, address: str) -> StatusError:
    """What our caller should see for a failed TF Serving call."""
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return StatusError(code, "TensorFlow Serving did not answer within the deadline; try again")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return StatusError(code, f"the model could not read the image: {details}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED):
        return StatusError(grpc.StatusCode.UNAVAILABLE, f"TensorFlow Serving at {address} is unavailable; try again")
    if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
        return StatusError(grpc.StatusCode.UNAVAILABLE, f"TensorFlow Serving does not serve the model: {details}")
    return StatusError(grpc.StatusCode.INTERNAL, f"TensorFlow Serving failed ({code.name})")


class ModelClient:
    """Predict and GetModelMetadata for one model: every call of inference to TF Serving goes through here, so each
    has the caller's deadline, the channel's retries of UNAVAILABLE, and its failures mapped by model_error."""

    def __init__(self, channel: grpc.aio.Channel, *, address: str, model_name: str) -> None:
        self._address = address
        self._model_name = model_name
        self._predict = tfserving.PREDICT.callable(channel)
        self._metadata = tfserving.GET_MODEL_METADATA.callable(channel)
        self._lacking: set[str] = set()

    @property
    def model_name(self) -> str:
        return self._model_name

    async def predict(
        self,
        pixels: list[bytes],
        *,
        signature: str,
        input_key: str,
        side: int,
        outputs: Sequence[str],
        optional: Sequence[str] = (),
        timeout: float,
    ) -> Prediction:
        """Runs `signature` on a batch of uint8 RGB [side, side, 3] row-major images. An `optional` output the
        model does not have is left out of the answer, and not asked for again."""
        request = tfserving.PredictRequest()
        request.model_spec.name = self._model_name
        request.model_spec.signature_name = signature
        request.inputs[input_key].CopyFrom(tfserving.uint8_tensor(b"".join(pixels), (len(pixels), side, side, 3)))
        while True:
            wanted = [*outputs, *(name for name in optional if name not in self._lacking)]
            request.output_filter[:] = wanted
            try:
                response = await self._predict(request, timeout=timeout)
                break
            except grpc.aio.AioRpcError as exc:
                self._note_lacking(exc, wanted[len(outputs) :])
        missing = [name for name in outputs if name not in response.outputs]
        if missing:
            raise StatusError(grpc.StatusCode.INTERNAL, f"model {self._model_name} returned no {', '.join(missing)}")
        arrays = {name: tfserving.to_numpy(response.outputs[name]) for name in wanted if name in response.outputs}
        return Prediction(arrays, str(response.model_spec.version.value))

    def _note_lacking(self, exc: grpc.aio.AioRpcError, optional: Sequence[str]) -> None:
        """Remembers an optional output the model turned out not to have (a model built before it, or another
        model), so that the call is made again without it; any other failure is raised as our caller sees it."""
        details = (exc.details() or "") if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else ""
        lacking = next((name for name in optional if f"alias not found in signature: {name}" in details), None)
        if lacking is None:
            raise model_error(exc, self._address) from None
        log.warning("model %s has no %r output; going on without it", self._model_name, lacking)
        self._lacking.add(lacking)

    async def metadata(self, *, timeout: float) -> ServedModel:
        request = tfserving.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = self._model_name
        try:
            call = self._metadata(request, timeout=timeout)
            response = await call
            headers = dict(await call.initial_metadata() or ())
        except grpc.aio.AioRpcError as exc:
            raise model_error(exc, self._address) from None
        signatures = tfserving.SignatureDefMap.FromString(response.metadata["signature_def"].value)
        named = headers.get(MODEL_SERVER_HEADER)
        server = named if isinstance(named, str) else TF_SERVING
        return ServedModel(str(response.model_spec.version.value), signatures.signature_def, server)
