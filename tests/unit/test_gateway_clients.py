"""The catalog client's upload: small files as one finished message list, large ones streamed, refusals kept."""

import asyncio

import grpc
import pytest
from tagsmith.catalog.v1 import catalog_pb2

from services.gateway.clients import CatalogClient
from services.gateway.errors import ApiError

MIB = 1024 * 1024


class FakeCall:
    """A stream-unary call; `finished_after` messages, the catalog has answered and further writes fail."""

    def __init__(self, *, finished_after: int | None = None, error: BaseException | None = None) -> None:
        self.written: list[catalog_pb2.UploadImageRequest] = []
        self.finished_after = finished_after
        self.error = error
        self.cancelled = False

    async def write(self, message: catalog_pb2.UploadImageRequest) -> None:
        if self.finished_after is not None and len(self.written) >= self.finished_after:
            raise asyncio.InvalidStateError("RPC already finished.")
        self.written.append(message)

    async def done_writing(self) -> None:
        return None

    def cancel(self) -> None:
        self.cancelled = True

    def __await__(self):
        return self._result().__await__()

    async def _result(self) -> catalog_pb2.Image:
        if self.error is not None:
            raise self.error
        return catalog_pb2.Image(uid="stored", size_bytes=sum(len(m.chunk) for m in self.written))


class FakeStub:
    def __init__(self, call: FakeCall) -> None:
        self.call = call

    def UploadImage(self, requests=None, *, metadata, timeout):
        if requests is not None:
            self.call.written = list(requests)
        return self.call


@pytest.fixture
async def client():
    channel = grpc.aio.insecure_channel("127.0.0.1:9")
    yield CatalogClient(channel, transfer_timeout=5)
    await channel.close()


async def chunks(*sizes: int):
    for size in sizes:
        yield bytes(size)


async def upload(client: CatalogClient, call: FakeCall, *sizes: int, max_bytes: int = 8 * MIB):
    client._stub = FakeStub(call)
    return await client.upload(
        "token", filename="a.png", content_type="image/png", chunks=chunks(*sizes), max_bytes=max_bytes
    )


async def test_a_small_file_goes_as_one_finished_list(client):
    call = FakeCall(finished_after=0)
    image = await upload(client, call, 1000)
    assert image.size_bytes == 1000
    assert [m.WhichOneof("part") for m in call.written] == ["header", "chunk"]
    assert call.written[0].header.filename == "a.png"


async def test_a_large_file_streams_every_chunk(client):
    call = FakeCall()
    image = await upload(client, call, MIB, MIB, 5)
    assert image.size_bytes == 2 * MIB + 5
    assert [len(m.chunk) for m in call.written] == [0, MIB, MIB, 5]


async def test_a_refusal_before_the_end_of_the_file_is_the_answer(client):
    refusal = grpc.aio.AioRpcError(grpc.StatusCode.UNAUTHENTICATED, grpc.aio.Metadata(), grpc.aio.Metadata(), "expired")
    call = FakeCall(finished_after=3, error=refusal)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upload(client, call, MIB, MIB, MIB, MIB)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not call.cancelled


async def test_growing_past_the_limit_is_413_and_cancels_the_call(client):
    call = FakeCall()
    with pytest.raises(ApiError) as raised:
        await upload(client, call, MIB, MIB, MIB, max_bytes=2 * MIB + 1)
    assert raised.value.status == 413
    assert call.cancelled
    assert len(call.written) == 3


@pytest.mark.parametrize("sizes", [(1000,), (MIB, MIB, 5)])
async def test_a_call_grpc_cancelled_itself_is_the_catalog_unavailable(client, sizes):
    # grpc's asyncio client cancels a call whose connection dropped mid-write and raises CancelledError from it.
    call = FakeCall(error=asyncio.CancelledError())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upload(client, call, *sizes)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "the catalog" in raised.value.details()


async def test_a_request_cancelled_itself_stays_cancelled(client):
    answered = asyncio.Event()

    class SlowCall(FakeCall):
        async def _result(self) -> catalog_pb2.Image:
            answered.set()
            await asyncio.sleep(30)
            raise AssertionError("not cancelled")

    request = asyncio.create_task(upload(client, SlowCall(), 1000))
    await asyncio.wait_for(answered.wait(), timeout=5)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
