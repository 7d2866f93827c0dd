"""The catalog's inference client: a connection that breaks mid-upload is inference unavailable (the image waits
as pending), never the upload itself cancelled."""

import asyncio

import grpc
import pytest

from services.catalog.inference_client import InferenceClient, InferenceUnavailable


class SelfCancelledCall:
    """What grpc's asyncio client does when the connection breaks while the request is written: it cancels the call
    itself, and awaiting it raises CancelledError."""

    def __await__(self):
        return self._answer().__await__()

    async def _answer(self):
        raise asyncio.CancelledError


class Stub:
    def Classify(self, requests, *, metadata, timeout):
        return SelfCancelledCall()


@pytest.fixture
async def client():
    channel = grpc.aio.insecure_channel("127.0.0.1:9")
    inference = InferenceClient(channel)
    inference._stub = Stub()
    yield inference
    await channel.close()


async def chunks():
    yield b"image bytes"


async def test_a_connection_broken_mid_upload_is_inference_unavailable(client):
    with pytest.raises(InferenceUnavailable, match="inference unavailable: the connection to inference broke"):
        await client.classify(chunks(), token="token", timeout=5)
