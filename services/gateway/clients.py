"""One small client per backend, each holding a channel opened once at start-up."""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tagsmith.auth.v1 import auth_pb2, auth_pb2_grpc
from tagsmith.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tagsmith.inference.v1 import inference_pb2, inference_pb2_grpc

from services.common.channels import bearer, open_channel, stream_answer
from services.gateway.config import Settings
from services.gateway.errors import ApiError

HEALTH_TIMEOUT_SECONDS = 2.0


class AuthClient:
    """Users and tokens; registrations and public logins carry the client address, so auth limits per address."""

    service_name = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
    # What the service watches itself, each reported under its own health service name.
    dependencies = ("database",)

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def register(self, username: str, password: str, *, client_address: str | None) -> auth_pb2.User:
        """A registration from the public API, limited per client address."""
        request = auth_pb2.RegisterRequest(
            username=username, password=password, client_address=client_address or "", public_api=True
        )
        return await self._stub.Register(request)

    async def login(self, username: str, password: str, *, client_address: str | None) -> auth_pb2.TokenPair:
        """A login from the public API, limited per client address."""
        request = auth_pb2.LoginRequest(
            username=username, password=password, client_address=client_address or "", public_api=True
        )
        return await self._stub.Login(request)

    async def refresh(self, refresh_token: str) -> auth_pb2.TokenPair:
        return await self._stub.Refresh(auth_pb2.RefreshRequest(refresh_token=refresh_token))

    async def logout(self, token: str, refresh_token: str) -> None:
        await self._stub.Logout(auth_pb2.LogoutRequest(refresh_token=refresh_token), metadata=bearer(token))

    async def me(self, token: str) -> auth_pb2.User:
        return await self._stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(token))

    async def jwks(self) -> dict:
        reply = await self._stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest())
        return json.loads(reply.jwks_json)


class InferenceClient:
    """What model is served and what it accepts."""

    service_name = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
    dependencies = ()

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self._stub = inference_pb2_grpc.InferenceServiceStub(channel)

    async def model(self, token: str | None = None) -> inference_pb2.ModelInfo:
        return await self._stub.GetModel(inference_pb2.GetModelRequest(), metadata=bearer(token) if token else ())

    async def limits(self, token: str) -> inference_pb2.Limits:
        return await self._stub.GetLimits(inference_pb2.GetLimitsRequest(), metadata=bearer(token))


class CatalogClient:
    """The caller's images; every call forwards the caller's token."""

    service_name = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name
    dependencies = ("database", "object_storage")

    def __init__(self, channel: grpc.aio.Channel, *, transfer_timeout: float) -> None:
        self.channel = channel
        self._stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        self._transfer_timeout = transfer_timeout

    async def upload(
        self, token: str, *, filename: str, content_type: str, chunks: AsyncIterator[bytes], max_bytes: int
    ) -> catalog_pb2.Image:
        """Streams one file; refuses with 413 the moment it grows past `max_bytes`, cancelling the call.

        A file complete within its first chunk (most photos) goes as a finished list of messages: writing to an
        intercepted stream one message at a time costs a queue hand-off and two tasks per message.
        """
        limited = _within_limit(chunks, max_bytes=max_bytes, name=filename or "the file")
        header = catalog_pb2.UploadHeader(filename=filename, content_type=content_type)
        messages = [catalog_pb2.UploadImageRequest(header=header)]
        first = await anext(limited, None)
        if first is not None:
            messages.append(catalog_pb2.UploadImageRequest(chunk=first))
            second = await anext(limited, None)
            if second is not None:
                messages.append(catalog_pb2.UploadImageRequest(chunk=second))
                return await self._stream(token, messages, limited)
        call = self._stub.UploadImage(iter(messages), metadata=bearer(token), timeout=self._transfer_timeout)
        return await stream_answer(call, peer="the catalog")

    async def _stream(
        self, token: str, messages: list[catalog_pb2.UploadImageRequest], rest: AsyncIterator[bytes]
    ) -> catalog_pb2.Image:
        call = self._stub.UploadImage(metadata=bearer(token), timeout=self._transfer_timeout)
        try:
            for message in messages:
                await call.write(message)
            async for chunk in rest:
                await call.write(catalog_pb2.UploadImageRequest(chunk=chunk))
            await call.done_writing()
        except asyncio.InvalidStateError:
            pass  # the catalog answered before the end of the file (a refusal): its status is the answer
        except BaseException:
            call.cancel()
            raise
        return await stream_answer(call, peer="the catalog")

    def download(
        self, token: str, uid: str, *, thumbnail: catalog_pb2.ThumbnailSize | None = None
    ) -> grpc.aio.UnaryStreamCall:
        """The open stream of the original, or of a thumbnail of this size: first the metadata, then the bytes."""
        if thumbnail is not None:
            thumbnail_request = catalog_pb2.GetThumbnailRequest(uid=uid, size=thumbnail)
            return self._stub.GetThumbnail(thumbnail_request, metadata=bearer(token), timeout=self._transfer_timeout)
        request = catalog_pb2.DownloadImageRequest(uid=uid)
        return self._stub.DownloadImage(request, metadata=bearer(token), timeout=self._transfer_timeout)

    async def get(self, token: str, uid: str) -> catalog_pb2.Image:
        return await self._stub.GetImage(catalog_pb2.GetImageRequest(uid=uid), metadata=bearer(token))

    async def delete(self, token: str, uid: str) -> None:
        await self._stub.DeleteImage(catalog_pb2.DeleteImageRequest(uid=uid), metadata=bearer(token))

    async def list_images(self, token: str, **filters) -> catalog_pb2.ListImagesResponse:
        return await self._stub.ListImages(catalog_pb2.ListImagesRequest(**filters), metadata=bearer(token))

    async def search(self, token: str, **query) -> catalog_pb2.SearchImagesResponse:
        return await self._stub.SearchImages(catalog_pb2.SearchImagesRequest(**query), metadata=bearer(token))

    async def similar(self, token: str, uid: str, page_size: int) -> catalog_pb2.FindSimilarImagesResponse:
        request = catalog_pb2.FindSimilarImagesRequest(uid=uid, page_size=page_size)
        return await self._stub.FindSimilarImages(request, metadata=bearer(token))

    async def near_duplicates(self, token: str) -> catalog_pb2.ListNearDuplicatesResponse:
        return await self._stub.ListNearDuplicates(catalog_pb2.ListNearDuplicatesRequest(), metadata=bearer(token))

    async def categories(self, token: str, **query) -> catalog_pb2.ListCategoriesResponse:
        return await self._stub.ListCategories(catalog_pb2.ListCategoriesRequest(**query), metadata=bearer(token))

    async def tags(self, token: str, **query) -> catalog_pb2.ListTagsResponse:
        return await self._stub.ListTags(catalog_pb2.ListTagsRequest(**query), metadata=bearer(token))

    async def settings(self, token: str) -> catalog_pb2.UserSettings:
        return await self._stub.GetSettings(catalog_pb2.GetSettingsRequest(), metadata=bearer(token))

    async def update_settings(self, token: str, **changes) -> catalog_pb2.UserSettings:
        return await self._stub.UpdateSettings(catalog_pb2.UpdateSettingsRequest(**changes), metadata=bearer(token))

    async def usage(self, token: str) -> catalog_pb2.Usage:
        return await self._stub.GetUsage(catalog_pb2.GetUsageRequest(), metadata=bearer(token))

    async def set_tags(self, token: str, uid: str, tags: list[str]) -> catalog_pb2.Image:
        request = catalog_pb2.UpdateTagsRequest(uid=uid, add=tags, replace=True)
        return await self._stub.UpdateTags(request, metadata=bearer(token))

    async def find_digests(self, token: str, digests: list[str]) -> catalog_pb2.FindDigestsResponse:
        request = catalog_pb2.FindDigestsRequest(sha256=digests)
        return await self._stub.FindDigests(request, metadata=bearer(token))

    # Trash: delete moves an image there; restore brings it back; the catalog purges it after the retention period.
    async def trash(self, token: str, uid: str) -> catalog_pb2.Image:
        return await self._stub.TrashImage(catalog_pb2.TrashImageRequest(uid=uid), metadata=bearer(token))

    async def restore(self, token: str, uid: str) -> catalog_pb2.Image:
        return await self._stub.RestoreImage(catalog_pb2.RestoreImageRequest(uid=uid), metadata=bearer(token))

    async def list_trash(self, token: str, **page) -> catalog_pb2.ListTrashResponse:
        return await self._stub.ListTrash(catalog_pb2.ListTrashRequest(**page), metadata=bearer(token))


@dataclass
class Backends:
    """The three clients, opened together and closed together."""

    auth: AuthClient
    catalog: CatalogClient
    inference: InferenceClient

    @classmethod
    def open(cls, settings: Settings) -> "Backends":
        def channel(address: str) -> grpc.aio.Channel:
            return open_channel(address, default_timeout=settings.backend_timeout_seconds)

        return cls(
            auth=AuthClient(channel(settings.auth_addr)),
            catalog=CatalogClient(channel(settings.catalog_addr), transfer_timeout=settings.transfer_timeout_seconds),
            inference=InferenceClient(channel(settings.inference_addr)),
        )

    async def close(self) -> None:
        for client in (self.auth, self.catalog, self.inference):
            await client.channel.close()

    def _named(self) -> dict[str, AuthClient | CatalogClient | InferenceClient]:
        return {"auth": self.auth, "catalog": self.catalog, "inference": self.inference}

    async def readiness(self) -> dict[str, str]:
        """Each backend's health status, checked concurrently: SERVING, NOT_SERVING or UNREACHABLE."""
        named = self._named()
        results = await asyncio.gather(*(_health(c.channel, c.service_name) for c in named.values()))
        return dict(zip(named, results, strict=True))

    async def status(self) -> dict[str, dict]:
        """Each backend's status and that of each dependency it watches, all checked concurrently."""
        return dict(await asyncio.gather(*(_backend_status(name, c) for name, c in self._named().items())))


async def _within_limit(chunks: AsyncIterator[bytes], *, max_bytes: int, name: str) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise ApiError(413, f"{name} is larger than the limit of {max_bytes} bytes")
        yield chunk


async def _backend_status(name: str, client) -> tuple[str, dict]:
    services = (client.service_name, *client.dependencies)
    found = await asyncio.gather(*(_health(client.channel, service) for service in services))
    dependencies = dict(zip(client.dependencies, found[1:], strict=True))
    if found[0] == "UNREACHABLE":
        dependencies = dict.fromkeys(client.dependencies, "UNKNOWN")
    return name, {"status": found[0], "dependencies": dependencies}


async def _health(channel: grpc.aio.Channel, service: str) -> str:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=HEALTH_TIMEOUT_SECONDS
        )
    except grpc.aio.AioRpcError as exc:
        # NOT_FOUND: the backend does not report that name (an older release); it answered, so it is reachable.
        return "UNKNOWN" if exc.code() == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
