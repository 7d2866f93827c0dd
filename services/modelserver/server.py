"""Builds the model server: loads every model, then serves TF Serving's gRPC API with health and metrics."""

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import grpc
from prometheus_client import CollectorRegistry, Gauge, Histogram
from tensorflow_serving.apis import (
    model_service_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

from services.common.server import RunningServer, check_ports_free, start_server
from services.modelserver.config import Settings
from services.modelserver.models import ModelRepository, configured_sources
from services.modelserver.servicer import ModelServicer, PredictionServicer, Runner

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
)
# TF Serving accepts requests of any size up to 2 GiB; a batch of encoded images easily passes 4 MiB.
MAX_MESSAGE_BYTES = 2**31 - 1


def configure_tensorflow_threads(settings: Settings) -> None:
    """Thread pools must be sized before TensorFlow runs its first op; 0 keeps TensorFlow's choice."""
    import tensorflow as tf

    if settings.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads)
    if settings.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)


def batching_options(settings: Settings) -> dict | None:
    if not settings.enable_batching:
        return None
    return {
        "max_batch_size": settings.max_batch_size,
        "timeout_s": settings.batch_timeout_micros / 1e6,
        "num_threads": settings.num_batch_threads,
        "max_enqueued_batches": settings.max_enqueued_batches,
    }


def model_metrics(registry: CollectorRegistry, repository: ModelRepository) -> Histogram:
    """The per-model metrics: warm-up requests run at load (set now) and the batch size histogram (returned)."""
    warmed = Gauge(
        "modelserver_warmup_requests",
        "Requests of the SavedModel's warm-up file run when the version loaded, by model and version.",
        ["model", "version"],
        registry=registry,
    )
    for servable in repository.servables():
        warmed.labels(servable.name, str(servable.version)).set(servable.warmup_requests)
    return Histogram(
        "modelserver_batch_size",
        "Examples per model call, by model and version.",
        ["model", "version"],
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        registry=registry,
    )


async def create_server(settings: Settings, *, repository: ModelRepository | None = None) -> RunningServer:
    """Loads the models (unless given), then binds and starts; health turns SERVING only once every model is ready."""
    if repository is None:
        check_ports_free(settings)
        configure_tensorflow_threads(settings)
        repository = ModelRepository.load(configured_sources(settings), run_warmup=settings.enable_model_warmup)
    registry = CollectorRegistry()
    batch_sizes = model_metrics(registry, repository)
    executor = ThreadPoolExecutor(max_workers=max(2, settings.num_batch_threads), thread_name_prefix="model")
    runner = Runner(executor, batching=batching_options(settings), batch_sizes=batch_sizes)

    def register(server: grpc.aio.Server) -> None:
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(repository, runner), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(repository), server)

    running = await start_server(
        settings,
        register=register,
        service_names=SERVICE_NAMES,
        registry=registry,
        max_message_bytes=MAX_MESSAGE_BYTES,
    )

    async def close() -> None:
        await runner.close()
        executor.shutdown(wait=False, cancel_futures=True)

    running.on_stop(close)
    if settings.port_file is not None:
        write_port_file(settings.port_file, running.port)
    served = ", ".join(f"{s.name}/{s.version}" for s in repository.servables())
    log.info("models ready: %s", served, extra={"pid": os.getpid()})
    return running


def write_port_file(path, port: int) -> None:
    """Written atomically, so a reader polling for the file never sees it half-written."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(str(port))
    temporary.replace(path)
