"""Builds the inference server: labels, TF Serving channel, batcher and cache, behind token verification."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
from tagsmith.inference.v1 import inference_pb2, inference_pb2_grpc

from services.common.errors import StatusError
from services.common.interceptors import AuthInterceptor
from services.common.rpc_names import method_path
from services.common.server import RunningServer, start_server, token_verification
from services.common.tokens import TokenVerifier
from services.inference.batcher import BatchModel, PredictBatcher
from services.inference.cache import ResultCache
from services.inference.classifier import Classifier, ClassifierClient
from services.inference.config import MIB, Settings
from services.inference.faces import FaceClient, FaceDetector
from services.inference.images import ImageDecoder
from services.inference.labels import read_labels
from services.inference.model_client import ModelClient, open_tfserving_channel
from services.inference.servicer import InferenceServicer

log = logging.getLogger(__name__)

SERVICE = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"]
SERVICE_NAME = SERVICE.full_name
STARTUP_CHECK_TIMEOUT = 5.0
# TF Serving (or the local model server) may start beside this service and load its models for a while: until this
# grace has passed, its absence is no news, and the check waits quietly.
STARTUP_GRACE_SECONDS = 60.0
STARTUP_RETRY_SECONDS = 1.0


def build_batcher(settings: Settings, client: BatchModel) -> PredictBatcher:
    return PredictBatcher(
        client,
        max_size=settings.batch_max_size,
        max_wait_s=settings.batch_max_wait_ms / 1000,
        max_linger_s=settings.batch_max_linger_ms / 1000,
        max_in_flight=settings.batch_max_in_flight,
        max_bytes=settings.batch_max_bytes,
    )


def build_face_detector(settings: Settings, channel: grpc.aio.Channel) -> FaceDetector | None:
    """The face detector's own batcher beside the classifier's, on the same channel; None when switched off."""
    if not settings.face_model_name:
        return None
    client = FaceClient(ModelClient(channel, address=settings.tfserving_addr, model_name=settings.face_model_name))
    return FaceDetector(client, build_batcher(settings, client), ResultCache(settings.cache_size))


def build_servicer(
    settings: Settings, channel: grpc.aio.Channel, executor: ThreadPoolExecutor
) -> tuple[InferenceServicer, list[PredictBatcher]]:
    """The servicer and its parts: model clients, batchers, caches, image decoder, labels."""
    labels = read_labels(settings.labels_file)
    client = ClassifierClient(
        ModelClient(channel, address=settings.tfserving_addr, model_name=settings.model_name),
        signature_name=settings.signature_name,
        input_key=settings.input_key,
        scores_output=settings.scores_output,
        embedding_output=settings.embedding_output,
    )
    batcher = build_batcher(settings, client)
    detector = build_face_detector(settings, channel)
    servicer = InferenceServicer(
        settings,
        labels=labels,
        decoder=ImageDecoder(
            max_pixels=settings.max_pixels,
            large_decode_bytes=settings.large_decode_mib * MIB,
            max_large_decodes=settings.max_large_decodes,
        ),
        classifier=Classifier(batcher, ResultCache(settings.cache_size)),
        client=client,
        executor=executor,
        face_detector=detector,
    )
    return servicer, [batcher] + ([detector.batcher] if detector else [])


async def create_server(settings: Settings, *, verifier: TokenVerifier | None = None) -> RunningServer:
    """Starts serving at once; TF Serving may come up later, calls then answer UNAVAILABLE until it does."""
    channel = open_tfserving_channel(settings.tfserving_addr)
    executor = ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="decode")
    servicer, batchers = build_servicer(settings, channel, executor)
    interceptor, auth_channel = _auth(settings, verifier)
    running = await start_server(
        settings,
        register=lambda server: inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME],
        interceptors=[interceptor],
        servicer=servicer,
    )
    check = asyncio.create_task(check_model(servicer.client, len(servicer.labels)))

    async def close() -> None:
        check.cancel()
        for batcher in batchers:
            await batcher.close()
        await channel.close()
        if auth_channel is not None:
            await auth_channel.close()
        executor.shutdown(wait=False, cancel_futures=True)

    running.on_stop(close)
    return running


# Which model is served is public (the REST API's /v1/model is open); classifying needs a token.
OPEN_METHODS = frozenset({method_path(SERVICE, "GetModel")})


def _auth(settings: Settings, verifier: TokenVerifier | None) -> tuple[AuthInterceptor, grpc.aio.Channel | None]:
    if verifier is not None:
        return AuthInterceptor(verifier, open_methods=OPEN_METHODS), None
    return token_verification(settings, open_methods=OPEN_METHODS)


async def check_model(client: ClassifierClient, num_labels: int, *, grace: float = STARTUP_GRACE_SECONDS) -> None:
    """Says once TF Serving serves a model that matches the labels file, or warns when it does not. An unreachable
    TF Serving is waited for, and reported only once it has stayed away for `grace` seconds."""
    loop = asyncio.get_running_loop()
    warn_at: float | None = loop.time() + grace
    while True:
        try:
            metadata = await client.metadata(timeout=STARTUP_CHECK_TIMEOUT)
            break
        except StatusError as exc:
            if exc.code != grpc.StatusCode.UNAVAILABLE:
                log.warning("model check failed: %s", exc.message)
                return
            if warn_at is not None and loop.time() >= warn_at:
                problem = exc.message.removesuffix("; try again")
                log.warning("%s %g s after start; classifications fail until it answers", problem, grace)
                warn_at = None
        await asyncio.sleep(STARTUP_RETRY_SECONDS)
    if metadata.num_classes and metadata.num_classes != num_labels:
        log.error(
            "model %s scores %d classes but the labels file has %d", client.model_name, metadata.num_classes, num_labels
        )
    else:
        log.info("model %s version %s is served by %s", client.model_name, metadata.version, metadata.server)
