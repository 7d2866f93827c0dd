"""The Classify stream: options first, chunks of at most 1 MiB, refused as soon as it passes the byte limit."""

import hashlib

import pytest
from tagsmith.inference.v1 import inference_pb2

from services.inference.images import InvalidImage
from services.inference.upload import read_upload, resolve_top_k
from tests.support.inference_fixtures import classify_requests


async def stream(messages, consumed: list | None = None):
    for message in messages:
        if consumed is not None:
            consumed.append(message)
        yield message


async def test_reassembles_chunks_and_hashes_them():
    data = bytes(range(256)) * 10_000
    upload = await read_upload(stream(classify_requests(data, top_k=7, chunk_bytes=100_000)), max_bytes=10**7)
    assert upload.data == data and upload.top_k == 7
    assert upload.sha256 == hashlib.sha256(data).hexdigest()


async def test_stops_reading_once_over_the_limit():
    consumed: list = []
    messages = classify_requests(b"x" * 1000, chunk_bytes=100)
    with pytest.raises(InvalidImage, match="MiB limit"):
        await read_upload(stream(messages, consumed), max_bytes=250)
    assert len(consumed) == 4  # options and three chunks; the rest was never read


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([], "empty"),
        ([inference_pb2.ClassifyRequest(chunk=b"x")], "start with an options"),
        ([*classify_requests(b"x"), inference_pb2.ClassifyRequest(options={})], "only once"),
        (
            [inference_pb2.ClassifyRequest(options={}), inference_pb2.ClassifyRequest(chunk=b"x" * (2**20 + 1))],
            "at most",
        ),
    ],
)
async def test_malformed_streams(messages, fragment):
    with pytest.raises(InvalidImage, match=fragment):
        await read_upload(stream(messages), max_bytes=10**8)


def test_top_k():
    assert resolve_top_k(0) == 5
    assert resolve_top_k(20) == 20
    for bad in (-1, 21):
        with pytest.raises(InvalidImage, match="top_k"):
            resolve_top_k(bad)
