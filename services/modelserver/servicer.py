"""TensorFlow Serving's PredictionService and ModelService over the loaded models."""

from concurrent.futures import Executor

import grpc
import tensorflow as tf
from prometheus_client import Histogram
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from services.common.errors import StatusError
from services.common.model_contract import MODEL_SERVER_HEADER
from services.modelserver import tensors
from services.modelserver.batching import BatchScheduler, run_unbatched
from services.modelserver.models import ModelRepository, Servable, Signature

SIGNATURE_DEF_FIELD = "signature_def"
# What GetModelMetadata's callers learn of this server, in the MODEL_SERVER_HEADER response header.
SERVER_NAME = f"the Tagsmith model server (services.modelserver on TensorFlow {tf.__version__})"


class Runner:
    """Runs signatures, through one batch scheduler per model version and signature when batching is on."""

    def __init__(self, executor: Executor, *, batching: dict | None, batch_sizes: Histogram | None = None) -> None:
        self._executor = executor
        self._batching = batching
        self._batch_sizes = batch_sizes
        self._schedulers: dict[tuple[str, int, str], BatchScheduler] = {}

    async def run(self, servable: Servable, signature: Signature, inputs: dict) -> dict:
        size = tensors.batch_size(inputs)
        if self._batching is None or size is None:
            return await run_unbatched(signature.run, inputs, self._executor)
        return await self.scheduler(servable, signature).submit(inputs, size)

    def scheduler(self, servable: Servable, signature: Signature) -> BatchScheduler:
        if self._batching is None:
            raise RuntimeError("batching is off: signatures run unbatched, without a scheduler")
        key = (servable.name, servable.version, signature.name)
        if key not in self._schedulers:
            observe = None
            if self._batch_sizes is not None:
                observe = self._batch_sizes.labels(servable.name, str(servable.version)).observe
            self._schedulers[key] = BatchScheduler(
                signature.run, executor=self._executor, observe=observe, **self._batching
            )
        return self._schedulers[key]

    async def close(self) -> None:
        for scheduler in self._schedulers.values():
            await scheduler.close()


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference stay UNIMPLEMENTED."""

    def __init__(self, repository: ModelRepository, runner: Runner) -> None:
        self._repository = repository
        self._runner = runner

    async def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        servable = self._repository.resolve(request.model_spec)
        signature = servable.signature(request.model_spec.signature_name)
        inputs = tensors.decode_inputs(dict(request.inputs), signature)
        keys = tensors.output_keys(list(request.output_filter), signature)
        outputs = await self._runner.run(servable, signature, inputs)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature.name
        for key in keys:
            response.outputs[key].CopyFrom(tensors.encode(outputs[key]))
        return response

    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.metadata_field:
            raise StatusError(
                grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field} is not supported")
        servable = self._repository.resolve(request.model_spec)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in servable.signature_defs.items():
            signatures.signature_def[key].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signatures)
        await context.send_initial_metadata([(MODEL_SERVER_HEADER, SERVER_NAME)])
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED (models load once at start)."""

    def __init__(self, repository: ModelRepository) -> None:
        self._repository = repository

    async def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        try:
            versions = self._repository.versions(spec.name)
        except StatusError:
            raise StatusError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}") from None
        if spec.WhichOneof("version_choice"):
            try:
                chosen = [self._repository.resolve(spec).version]
            except StatusError as exc:
                raise StatusError(exc.code, f"Could not find version of model {spec.name}: {exc.message}") from None
        else:
            chosen = sorted(versions)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in chosen:
            status = response.model_version_status.add(version=version)
            status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            status.status.error_message = ""  # error_code stays OK (0), as TF Serving reports a healthy version.
        return response
