"""Pytest fixtures for the gateway: in-process fake backends for unit tests, and the app wired to them."""

import hashlib
import json
import uuid
from dataclasses import dataclass, field

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc
from tagsmith.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tagsmith.inference.v1 import inference_pb2, inference_pb2_grpc

from services.common.context import current_principal
from services.common.interceptors import AuthInterceptor
from services.common.rpc_names import method_path
from services.common.server import start_server
from services.common.settings import ServiceSettings
from services.gateway.app import create_app
from services.gateway.clients import Backends
from services.gateway.config import Settings

FAKE_MAX_BYTES = 64 * 1024
FAKE_CHUNK_BYTES = 4096
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG")


@dataclass
class Recorded:
    """What the fake backends saw, for tests to assert on."""

    metadata: list[dict] = field(default_factory=list)
    # Register and Login requests as the fake auth received them.
    auth_requests: list = field(default_factory=list)
    upload_chunks: list[int] = field(default_factory=list)
    # The fake catalog's size limit; tests of multi-chunk streaming raise it.
    max_bytes: int = FAKE_MAX_BYTES
    images: dict[str, catalog_pb2.Image] = field(default_factory=dict)
    # The fake catalog's storage quota, reported by GetUsage and enforced on upload; 0 means none.
    quota_bytes: int = 0
    quota_images: int = 0
    blobs: dict[str, bytes] = field(default_factory=dict)
    trash: dict[str, catalog_pb2.Image] = field(default_factory=dict)
    logouts: list[str] = field(default_factory=list)
    tag_requests: list[catalog_pb2.ListTagsRequest] = field(default_factory=list)
    min_score: float = 0.12
    # Images whose download stream breaks after its metadata, as when the catalog dies mid-answer.
    broken_downloads: set[str] = field(default_factory=set)

    def note(self, context: grpc.aio.ServicerContext) -> None:
        self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})


class FakeAuth(auth_pb2_grpc.AuthServiceServicer):
    """Accepts password 'password123' for any registered user and mints tokens with the test keys."""

    def __init__(self, keys, recorded: Recorded) -> None:
        self.keys, self.recorded, self.users = keys, recorded, {}

    async def Register(self, request, context):
        self.recorded.auth_requests.append(request)
        if request.username in self.users:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "that username is taken")
        self.users[request.username] = request.password
        return auth_pb2.User(id=f"id-{request.username}", username=request.username, roles=["user"])

    async def Login(self, request, context):
        self.recorded.note(context)
        self.recorded.auth_requests.append(request)
        if request.username == "locked":
            context.set_trailing_metadata((("retry-after", "42"),))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many failed logins; wait")
        if self.users.get(request.username) != request.password:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong username or password")
        token = self.keys.token(f"id-{request.username}", name=request.username)
        return auth_pb2.TokenPair(
            access_token=token, token_type="Bearer", expires_in=300, refresh_token="r-1", refresh_expires_in=3600
        )

    async def Refresh(self, request, context):
        if request.refresh_token != "r-1":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown refresh token")
        return auth_pb2.TokenPair(
            access_token=self.keys.token("id-ada"), token_type="Bearer", refresh_token="r-2", refresh_expires_in=3600
        )

    async def Logout(self, request, context):
        self.recorded.logouts.append(request.refresh_token)
        return auth_pb2.LogoutResponse()

    async def GetMe(self, request, context):
        principal = current_principal()
        return auth_pb2.User(id=principal.subject, username=principal.username, roles=sorted(principal.roles))

    async def GetPublicKeys(self, request, context):
        return auth_pb2.PublicKeys(jwks_json=json.dumps(self.keys.jwks()))


class FakeInference(inference_pb2_grpc.InferenceServiceServicer):
    async def GetModel(self, request, context):
        return inference_pb2.ModelInfo(name="efficientnet_lite0", version="1", description="fake model")

    async def GetLimits(self, request, context):
        return inference_pb2.Limits(max_bytes=FAKE_MAX_BYTES, max_pixels=1000, content_types=["image/jpeg"])


class FakeCatalog(catalog_pb2_grpc.CatalogServiceServicer):
    """Keeps images in memory per owner; every stored image is a 'tabby' with tags 'cat' and 'tabby'."""

    def __init__(self, recorded: Recorded) -> None:
        self.recorded = recorded

    async def UploadImage(self, request_iterator, context):
        self.recorded.note(context)
        header, data = None, bytearray()
        async for message in request_iterator:
            if header is None:
                header = message.header if message.HasField("header") else None
                if header is None:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the stream must start with a header")
                continue
            self.recorded.upload_chunks.append(len(message.chunk))
            data += message.chunk
            if len(data) > self.recorded.max_bytes:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the image is over the size limit")
        if not data.startswith(_IMAGE_MAGIC):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a supported image")
        if self.recorded.quota_images and len(self._mine()) >= self.recorded.quota_images:
            reason = (("error-reason", "STORAGE_QUOTA_EXCEEDED"),)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "storage quota exceeded", trailing_metadata=reason)
        return self._store(header, bytes(data))

    def _store(self, header, data: bytes) -> catalog_pb2.Image:
        uid = uuid.uuid4().hex[:16]
        created = Timestamp()
        created.GetCurrentTime()
        labels = [catalog_pb2.Label(label="tabby", class_id=281, score=0.9, rank=1, source=1)]
        image = catalog_pb2.Image(
            uid=uid,
            owner_id=current_principal().subject,
            filename=header.filename,
            content_type="image/png",
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            width=2,
            height=1,
            status=catalog_pb2.IMAGE_STATUS_CLASSIFIED,
            category="tabby",
            labels=labels,
            tags=["tabby", "cat"],
            created_at=created,
        )
        self.recorded.images[uid], self.recorded.blobs[uid] = image, data
        return image

    async def _own(self, uid: str, context) -> catalog_pb2.Image:
        image = self.recorded.images.get(uid)
        if image is None or image.owner_id != current_principal().subject:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no image {uid}")
        return image

    async def GetImage(self, request, context):
        return await self._own(request.uid, context)

    async def DownloadImage(self, request, context):
        image = await self._own(request.uid, context)
        yield catalog_pb2.DownloadImageResponse(image=image)
        if request.uid in self.recorded.broken_downloads:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the catalog went away")
        data = self.recorded.blobs[request.uid]
        for start in range(0, len(data), FAKE_CHUNK_BYTES):
            yield catalog_pb2.DownloadImageResponse(chunk=data[start : start + FAKE_CHUNK_BYTES])

    async def GetThumbnail(self, request, context):
        image = catalog_pb2.Image()
        image.CopyFrom(await self._own(request.uid, context))
        data = b"display" if request.size == catalog_pb2.THUMBNAIL_SIZE_DISPLAY else b"thumb"
        image.size_bytes, image.content_type = len(data), "image/jpeg"
        yield catalog_pb2.DownloadImageResponse(image=image)
        yield catalog_pb2.DownloadImageResponse(chunk=data)

    async def DeleteImage(self, request, context):
        await self._own(request.uid, context)
        del self.recorded.images[request.uid]
        return catalog_pb2.DeleteImageResponse()

    def _mine(self) -> list[catalog_pb2.Image]:
        owner = current_principal().subject
        return [image for image in reversed(self.recorded.images.values()) if image.owner_id == owner]

    async def ListImages(self, request, context):
        self.recorded.note(context)
        images = [i for i in self._mine() if not request.category or i.category == request.category]
        start = int(request.page_token or 0)
        end = start + (request.page_size or 50)
        return catalog_pb2.ListImagesResponse(
            images=images[start:end], next_page_token=str(end) if end < len(images) else ""
        )

    async def SearchImages(self, request, context):
        if not request.query:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the query is empty")
        found = [i for i in self._mine() if any(t.startswith(request.query.lower()) for t in i.tags)]
        return catalog_pb2.SearchImagesResponse(images=found)

    async def ListCategories(self, request, context):
        counts = {}
        for image in self._mine():
            counts[image.category] = counts.get(image.category, 0) + 1
        return catalog_pb2.ListCategoriesResponse(
            categories=[catalog_pb2.CategoryCount(category=c, count=n) for c, n in counts.items()]
        )

    async def ListTags(self, request, context):
        self.recorded.tag_requests.append(request)
        tags = [catalog_pb2.TagCount(tag="cat", count=len(self._mine()))]
        return catalog_pb2.ListTagsResponse(tags=[t for t in tags if t.tag.startswith(request.prefix)])

    async def GetSettings(self, request, context):
        return catalog_pb2.UserSettings(min_score=self.recorded.min_score)

    async def UpdateSettings(self, request, context):
        if request.HasField("min_score"):
            self.recorded.min_score = request.min_score
        return catalog_pb2.UserSettings(min_score=self.recorded.min_score)

    async def GetUsage(self, request, context):
        mine = self._mine()
        return catalog_pb2.Usage(
            bytes_used=sum(image.size_bytes for image in mine),
            bytes_limit=self.recorded.quota_bytes,
            images_used=len(mine),
            images_limit=self.recorded.quota_images,
        )

    async def UpdateTags(self, request, context):
        image = await self._own(request.uid, context)
        del image.manual_tags[:]
        image.manual_tags.extend(request.add)
        return image

    async def TrashImage(self, request, context):
        image = await self._own(request.uid, context)
        self.recorded.trash[request.uid] = self.recorded.images.pop(request.uid)
        image.deleted_at.GetCurrentTime()
        return image

    async def RestoreImage(self, request, context):
        image = self.recorded.trash.get(request.uid)
        if image is None or image.owner_id != current_principal().subject:
            await context.abort(grpc.StatusCode.NOT_FOUND, "the image is not in the trash")
        image.ClearField("deleted_at")
        self.recorded.images[request.uid] = self.recorded.trash.pop(request.uid)
        return image

    async def ListTrash(self, request, context):
        owner = current_principal().subject
        images = [image for image in self.recorded.trash.values() if image.owner_id == owner]
        return catalog_pb2.ListTrashResponse(images=images, retention_days=30)


@pytest.fixture
async def fake_backends(test_keys):
    """All three fake services on one real gRPC server on a free port; yields (address, Recorded)."""
    recorded = Recorded()

    def register(server):
        auth_pb2_grpc.add_AuthServiceServicer_to_server(FakeAuth(test_keys, recorded), server)
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server(FakeCatalog(recorded), server)
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(FakeInference(), server)

    auth = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]
    catalog = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"]
    inference = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"]
    open_methods = {method_path(auth, m) for m in ("Register", "Login", "Refresh", "GetPublicKeys")}
    open_methods.add(method_path(inference, "GetModel"))
    running = await start_server(
        ServiceSettings(port=0),
        register=register,
        service_names=[service.full_name for service in (auth, catalog, inference)],
        interceptors=[AuthInterceptor(test_keys.verifier(), open_methods=open_methods)],
    )
    yield f"127.0.0.1:{running.port}", recorded
    await running.stop(0)


def gateway_settings(address: str, **overrides) -> Settings:
    values = {"auth_addr": address, "catalog_addr": address, "inference_addr": address}
    return Settings(**(values | {"max_upload_bytes": FAKE_MAX_BYTES} | overrides))


@pytest.fixture
async def gateway_factory(fake_backends):
    """Builds an httpx client talking to a gateway app (in process) wired to the fake backends."""
    address, _ = fake_backends
    opened = []

    async def build(**overrides) -> httpx.AsyncClient:
        settings = gateway_settings(address, **overrides)
        backends = Backends.open(settings)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, backends=backends), client=("203.0.113.7", 5000)),
            base_url="http://gateway.test",
        )
        opened.append((client, backends))
        return client

    yield build
    for client, backends in opened:
        await client.aclose()
        await backends.close()


@pytest.fixture
async def gateway(gateway_factory) -> httpx.AsyncClient:
    return await gateway_factory()
