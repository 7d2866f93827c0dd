"""Builds the catalog: pool, object storage, inference client, servicer, and the worker and sweeper tasks."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagsmith.catalog.v1 import catalog_pb2, catalog_pb2_grpc

from services.catalog import embedding_upgrade
from services.catalog.blobstore import BlobStore, open_blob_store
from services.catalog.classify import StoredImageClassifier
from services.catalog.config import Settings
from services.catalog.content import ContentBytes, original_key
from services.catalog.inference_client import InferenceClient
from services.catalog.reclassify import Reclassifier
from services.catalog.retag import Retagger
from services.catalog.servicer import CatalogServicer
from services.catalog.store import CatalogStore
from services.catalog.store.similarity import SimilarityIndex
from services.catalog.sweeper import Sweeper
from services.catalog.uploads import Uploader
from services.catalog.worker import PendingWorker, WorkerPolicy
from services.common.channels import open_channel
from services.common.db import DatabaseProbe, check_schema, open_service_pool
from services.common.identity import LoginTokenProvider, TokenProvider
from services.common.interceptors import AuthInterceptor
from services.common.server import RunningServer, start_server, token_verification
from services.common.tokens import TokenVerifier

log = logging.getLogger(__name__)

SERVICE_NAME = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name
MIGRATIONS = Path(__file__).with_name("migrations")
SCHEMA = "catalog"
# A background loop, started as a task beside the server.
Job = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class Runtime:
    """The catalog's long-lived parts, shared by the server and the commands; close() releases them."""

    settings: Settings
    store: CatalogStore
    contents: ContentBytes
    inference: InferenceClient
    classifier: StoredImageClassifier
    reclassifier: Reclassifier
    similarity: SimilarityIndex
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(closer)

    async def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception:
                log.warning("error while shutting down", exc_info=True)


async def open_runtime(settings: Settings, *, blob_store: BlobStore | None = None) -> Runtime:
    blobs = blob_store or open_blob_store(settings)
    await blobs.ensure_ready()
    pool = await open_service_pool(settings, name="catalog")
    channel = open_channel(settings.inference_addr, default_timeout=settings.inference_timeout_seconds)
    inference = InferenceClient(channel)
    store = CatalogStore(pool, quota=settings.quota)
    classifier = StoredImageClassifier(
        blobs=blobs,
        inference=inference,
        timeout=max(settings.inference_timeout_seconds, 30.0),
        concurrency=settings.reclassify_concurrency,
    )
    runtime = Runtime(
        settings=settings,
        store=store,
        contents=ContentBytes(blobs),
        inference=inference,
        classifier=classifier,
        reclassifier=Reclassifier(store=store, classifier=classifier, inference=inference),
        similarity=SimilarityIndex(pool),
    )
    runtime.on_close(pool.close)
    runtime.on_close(blobs.close)
    runtime.on_close(channel.close)
    return runtime


def service_identity(settings: Settings, runtime: Runtime) -> TokenProvider | None:
    """Logs in as the configured service account, or None when none is configured."""
    if not settings.service_username:
        return None
    channel = open_channel(settings.auth_addr, default_timeout=5.0)
    runtime.on_close(channel.close)
    return LoginTokenProvider(
        channel, username=settings.service_username, password=settings.service_password.get_secret_value()
    )


def _background(runtime: Runtime, tokens: TokenProvider | None) -> list[Job]:
    settings, jobs = runtime.settings, list[Job]()
    if settings.worker_enabled:
        if tokens is None:
            raise ValueError(
                "the pending worker needs a service account: set TAGSMITH_SERVICE_USERNAME and "
                "TAGSMITH_SERVICE_PASSWORD, or TAGSMITH_WORKER_ENABLED=false"
            )
        policy = WorkerPolicy(
            batch_size=settings.worker_batch_size,
            poll_seconds=settings.worker_poll_seconds,
            max_backoff_seconds=settings.worker_max_backoff_seconds,
            lease_seconds=settings.worker_lease_seconds,
            max_attempts=settings.worker_max_attempts,
            retry_seconds=settings.worker_retry_seconds,
        )
        worker = PendingWorker(store=runtime.store, classifier=runtime.classifier, tokens=tokens, policy=policy)
        jobs.append(worker.run)
    if settings.retag_enabled:
        jobs.append(Retagger(runtime.store, batch_size=settings.retag_batch_size).run)
    jobs.append(lambda: embedding_upgrade.run(runtime.similarity))
    if settings.sweeper_enabled:
        sweeper = Sweeper(
            store=runtime.store,
            contents=runtime.contents,
            grace_seconds=settings.sweep_grace_seconds,
            trash_retention_seconds=settings.trash_retention_seconds,
        )
        jobs.append(lambda: sweeper.run(settings.sweep_interval_seconds))
    return jobs


def _storage_check(blobs: BlobStore) -> Callable[[], Awaitable[None]]:
    """Asks the object store about a key that never exists: any answer means it is reachable."""
    probe = original_key("0" * 64)

    async def check() -> None:
        await blobs.exists(probe)

    return check


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def create_server(
    settings: Settings,
    *,
    verifier: TokenVerifier | None = None,
    token_provider: TokenProvider | None = None,
    blob_store: BlobStore | None = None,
) -> RunningServer:
    """Starts the gRPC server and, when enabled, the pending worker and the sweeper in this process."""
    runtime = await open_runtime(settings, blob_store=blob_store)
    try:
        await check_schema(runtime.store.pool, schema=SCHEMA, directory=MIGRATIONS)
        running = await _start(settings, runtime, verifier, token_provider or service_identity(settings, runtime))
    except BaseException:
        await runtime.close()
        raise
    return running


async def _start(
    settings: Settings, runtime: Runtime, verifier: TokenVerifier | None, tokens: TokenProvider | None
) -> RunningServer:
    jobs = _background(runtime, tokens)
    if verifier is None:
        interceptor, auth_channel = token_verification(settings)
        runtime.on_close(auth_channel.close)
    else:
        interceptor = AuthInterceptor(verifier)
    uploader = Uploader(
        store=runtime.store,
        contents=runtime.contents,
        inference=runtime.inference,
        similarity=runtime.similarity,
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
        inference_timeout=settings.inference_timeout_seconds,
    )
    servicer = CatalogServicer(
        store=runtime.store,
        contents=runtime.contents,
        uploader=uploader,
        reclassifier=runtime.reclassifier,
        similarity=runtime.similarity,
        reclassify_batch_size=settings.reclassify_batch_size,
        trash_retention_days=settings.trash_retention_days,
    )
    database = DatabaseProbe(settings.postgres_dsn)
    runtime.on_close(database.close)
    running = await start_server(
        settings,
        register=lambda server: catalog_pb2_grpc.add_CatalogServiceServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME],
        interceptors=[interceptor],
        dependencies={"database": database, "object_storage": _storage_check(runtime.contents.blobs)},
    )
    tasks = [asyncio.create_task(job()) for job in jobs]
    # Cleanups run last-registered first: stop the background tasks, then close what they use.
    running.on_stop(runtime.close)
    running.on_stop(uploader.cleanups.wait)
    running.on_stop(lambda: _cancel(tasks))
    return running
