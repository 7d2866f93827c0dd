"""Builds the inference server: labels, TF Serving channel, batcher and cache, behind token verification."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
from tagsmith.inference.v1 import inference_pb2_grpc

from services.common.interceptors import AuthInterceptor
from services.common.server import RunningServer, start_server, token_verification
from services.common.tokens import TokenVerifier
from services.inference.batcher import PredictBatcher
from services.inference.cache import ResultCache
from services.inference.classifier import Classifier
from services.inference.config import MIB, Settings
from services.inference.faces import FaceClient, FaceDetector
from services.inference.images import ImageDecoder
from services.inference.labels import read_labels
from services.inference.model_client import ModelClient, ModelError, open_tfserving_channel
from services.inference.servicer import InferenceServicer

log = logging.getLogger(__name__)

SERVICE_NAME = "tagsmith.inference.v1.InferenceService"
STARTUP_CHECK_TIMEOUT = 5.0


def build_batcher(settings: Settings, client: ModelClient | FaceClient) -> PredictBatcher:
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
    client = FaceClient(channel, address=settings.tfserving_addr, model_name=settings.face_model_name)
    return FaceDetector(client, build_batcher(settings, client), ResultCache(settings.cache_size))


def build_servicer(
    settings: Settings, channel: grpc.aio.Channel, executor: ThreadPoolExecutor
) -> tuple[InferenceServicer, list[PredictBatcher]]:
    """The servicer and its parts: model clients, batchers, caches, image decoder, labels."""
    labels = read_labels(settings.labels_file)
    client = ModelClient(
        channel,
        address=settings.tfserving_addr,
        model_name=settings.model_name,
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
OPEN_METHODS = frozenset({"/tagsmith.inference.v1.InferenceService/GetModel"})


def _auth(settings: Settings, verifier: TokenVerifier | None) -> tuple[AuthInterceptor, grpc.aio.Channel | None]:
    if verifier is not None:
        return AuthInterceptor(verifier, open_methods=OPEN_METHODS), None
    return token_verification(settings, open_methods=OPEN_METHODS)


async def check_model(client: ModelClient, num_labels: int) -> None:
    """Warns early when TF Serving is unreachable or its model does not match the labels file."""
    try:
        metadata = await client.metadata(timeout=STARTUP_CHECK_TIMEOUT)
    except ModelError as exc:
        log.warning("model check failed: %s", exc.message)
        return
    if metadata.num_classes and metadata.num_classes != num_labels:
        log.error(
            "model %s scores %d classes but the labels file has %d", client.model_name, metadata.num_classes, num_labels
        )
    else:
        log.info("model %s version %s is served", client.model_name, metadata.version)
