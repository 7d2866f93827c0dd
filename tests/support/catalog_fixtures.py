"""Pytest fixtures for the catalog service, shared by every test tier."""

import asyncio
import hashlib
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from tagsmith.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tagsmith.inference.v1 import inference_pb2, inference_pb2_grpc

from services.catalog.blobstore import BlobStore, LocalBlobStore
from services.catalog.blobstore.s3 import S3BlobStore
from services.catalog.config import Settings
from services.catalog.server import MIGRATIONS, SCHEMA, create_server
from services.common.channels import bearer, open_channel
from services.common.identity import StaticTokenProvider
from services.common.server import RunningServer, start_server
from tests.support.ports import free_port
from tests.support.postgres import RestartablePostgres, create_migrated_database

CHUNK = 1024 * 1024


def upload_messages(data: bytes, filename: str = "photo.jpg", *, chunk: int = CHUNK):
    yield catalog_pb2.UploadImageRequest(header=catalog_pb2.UploadHeader(filename=filename, content_type="image/jpeg"))
    for start in range(0, len(data), chunk):
        yield catalog_pb2.UploadImageRequest(chunk=data[start : start + chunk])


class CatalogClient:
    """A catalog stub that sends one user's token on every call."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        self.metadata = bearer(token)

    async def upload(self, data: bytes, filename: str = "photo.jpg") -> catalog_pb2.Image:
        return await self.stub.UploadImage(upload_messages(data, filename), metadata=self.metadata)

    async def download(
        self, uid: str, *, thumbnail: bool = False, size: int = catalog_pb2.THUMBNAIL_SIZE_UNSPECIFIED
    ) -> tuple[catalog_pb2.Image, bytes]:
        """The original, or with `thumbnail` the thumbnail of this size: metadata and bytes."""
        method = self.stub.GetThumbnail if thumbnail else self.stub.DownloadImage
        if thumbnail:
            request = catalog_pb2.GetThumbnailRequest(uid=uid, size=size)
        else:
            request = catalog_pb2.DownloadImageRequest(uid=uid)
        image: catalog_pb2.Image | None = None
        body = b""
        async for reply in method(request, metadata=self.metadata):
            if reply.WhichOneof("part") == "image":
                image = reply.image
            else:
                body += reply.chunk
        assert image is not None, "the stream carried no image metadata"
        return image, body

    def __getattr__(self, name: str) -> Callable:
        """Any other RPC, e.g. client.GetImage(request), with the token attached."""
        method = getattr(self.stub, name)
        return lambda request, **kwargs: method(request, metadata=self.metadata, **kwargs)


@dataclass
class CatalogUnderTest:
    running: RunningServer
    settings: Settings
    blobs: BlobStore
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def client(self, token: str) -> CatalogClient:
        channel = open_channel(self.address, default_timeout=30.0)
        self.channels.append(channel)
        return CatalogClient(channel, token)


@pytest.fixture
def catalog_dsn(postgres_admin_dsn) -> str:
    """A fresh database with the catalog's migrations applied."""
    return catalog_database(postgres_admin_dsn)


def catalog_database(admin_dsn: str) -> str:
    """A new database on the cluster at `admin_dsn` with the catalog's migrations applied."""
    return create_migrated_database(admin_dsn, schema=SCHEMA, directory=MIGRATIONS)


def catalog_settings(*, dsn: str, blob_dir: Path, **overrides) -> Settings:
    """Catalog settings for tests: port 0, no metrics endpoint, inference on a closed port, no background tasks."""
    defaults = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": None,
        "postgres_dsn": dsn,
        "postgres_pool_size": 4,
        "blob_dir": blob_dir,
        "inference_addr": f"127.0.0.1:{free_port()}",
        "inference_timeout_seconds": 2.0,
        "worker_enabled": False,
        "sweeper_enabled": False,
        "retag_enabled": False,
    }
    return Settings(**{**defaults, **overrides})


@pytest.fixture
async def catalog_server(catalog_dsn, test_keys, tmp_path):
    """Starts catalog servers on port 0: `await catalog_server(**settings)`; inference defaults to a closed port.

    The worker and sweeper are off unless enabled. Tokens are checked against `test_keys` and the worker uses a test
    service token, unless `identity_from_settings=True` (then TAGSMITH_AUTH_ADDR and the service account settings).
    """
    started: list[CatalogUnderTest] = []

    async def start(
        *, blob_store: BlobStore | None = None, identity_from_settings: bool = False, **overrides
    ) -> CatalogUnderTest:
        overrides.setdefault("blob_dir", tmp_path / "blobs")
        settings = catalog_settings(dsn=catalog_dsn, **overrides)
        blobs = blob_store or LocalBlobStore(settings.blob_dir)
        if identity_from_settings:
            # Tokens verified with the auth service's published keys; the worker logs in with its account.
            running = await create_server(settings, blob_store=blobs)
        else:
            service_token = test_keys.token("catalog-worker", roles=("service",), ttl=3600)
            running = await create_server(
                settings,
                verifier=test_keys.verifier(),
                token_provider=StaticTokenProvider(service_token),
                blob_store=blobs,
            )
        started.append(CatalogUnderTest(running, settings, blobs))
        return started[-1]

    yield start
    for handle in started:
        for channel in handle.channels:
            await channel.close()
        await handle.running.stop(0)


@pytest.fixture
def restartable_postgres():
    cluster = RestartablePostgres()
    yield cluster
    cluster.cleanup()


@pytest.fixture(scope="session")
def s3_endpoint():
    """(endpoint, access key, secret key) of a real S3 API: MINIO_ENDPOINT when set, else moto's S3 server."""
    if os.environ.get("MINIO_ENDPOINT"):
        yield os.environ["MINIO_ENDPOINT"], os.environ["MINIO_ACCESS_KEY"], os.environ["MINIO_SECRET_KEY"]
        return
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}", "tagsmith-test", "tagsmith-test-secret"
    server.stop()


@pytest.fixture
def s3_blob_store(s3_endpoint) -> S3BlobStore:
    """An S3 driver on a bucket of its own (created by ensure_ready)."""
    endpoint, access_key, secret_key = s3_endpoint
    return S3BlobStore.connect(
        endpoint=endpoint,
        access_key=access_key,
        secret_key=secret_key,
        bucket=f"tagsmith-test-{uuid.uuid4().hex[:12]}",
        secure=False,
        region="us-east-1",
    )


@dataclass
class Script:
    """What the scripted classifier answers for one image (by SHA-256), or the error it returns."""

    labels: list[tuple[str, float]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    error: grpc.StatusCode | None = None
    # Seconds to wait before answering, to play a slow classifier.
    delay: float = 0.0


class ScriptedInference(inference_pb2_grpc.InferenceServiceServicer):
    """A stand-in classifier with chosen labels and failures, for catalog behaviour the real model cannot be
    made to show on demand (exact scores, INTERNAL errors, a second model version)."""

    def __init__(self, *, model_version: str = "1") -> None:
        self.model_version = model_version
        self.scripts: dict[str, Script] = {}
        self.default = Script(labels=[("tabby", 0.7), ("tiger cat", 0.2)], tags=["tabby", "cat"])
        self.calls = 0

    def script(self, data: bytes, labels: Iterable[tuple[str, float]] = (), tags: Iterable[str] = (), **kwargs):
        self.scripts[hashlib.sha256(data).hexdigest()] = Script(list(labels), list(tags), **kwargs)

    async def Classify(self, request_iterator, context):
        self.calls += 1
        data = b"".join([message.chunk async for message in request_iterator])
        script = self.scripts.get(hashlib.sha256(data).hexdigest(), self.default)
        await asyncio.sleep(script.delay)
        if script.error is not None:
            await context.abort(script.error, "scripted failure")
        labels = [inference_pb2.Prediction(label=n, class_id=i, score=s) for i, (n, s) in enumerate(script.labels)]
        return inference_pb2.ClassifyResponse(
            labels=labels,
            category=script.labels[0][0] if script.labels else "",
            tags=script.tags,
            model_name="scripted",
            model_version=self.model_version,
        )

    async def GetModel(self, request, context):
        return inference_pb2.ModelInfo(name="scripted", version=self.model_version)


@pytest.fixture
async def scripted_inference():
    """Starts a ScriptedInference server: `servicer, address = await scripted_inference(port=0)`."""
    servers: list[RunningServer] = []

    async def start(*, port: int = 0, servicer: ScriptedInference | None = None):
        servicer = servicer or ScriptedInference()
        settings = Settings(host="127.0.0.1", port=port, metrics_port=None)
        running = await start_server(
            settings,
            register=lambda s: inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, s),
            service_names=[inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name],
        )
        servers.append(running)
        return servicer, f"127.0.0.1:{running.port}"

    yield start
    for running in servers:
        await running.stop(0)
