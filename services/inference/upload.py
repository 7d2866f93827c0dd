"""Reads a Classify stream: the options message first, then image chunks, enforcing the byte limit as they arrive."""

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tagsmith.inference.v1 import inference_pb2

from services.inference.images import InvalidImage

MAX_CHUNK_BYTES = 1024 * 1024
DEFAULT_TOP_K = 5
MAX_TOP_K = 20


@dataclass(frozen=True)
class Upload:
    top_k: int
    data: bytes
    sha256: str


def resolve_top_k(requested: int) -> int:
    if requested < 0 or requested > MAX_TOP_K:
        raise InvalidImage(f"top_k must be between 1 and {MAX_TOP_K} (0 means {DEFAULT_TOP_K}), not {requested}")
    return requested or DEFAULT_TOP_K


async def read_upload(requests: AsyncIterator[inference_pb2.ClassifyRequest], *, max_bytes: int) -> Upload:
    """The whole upload, refused as soon as it passes `max_bytes` rather than after reading it all."""
    options: inference_pb2.ClassifyOptions | None = None
    chunks: list[bytes] = []
    size = 0
    digest = hashlib.sha256()
    async for message in requests:
        part = message.WhichOneof("part")
        if options is None:
            if part != "options":
                raise InvalidImage("the stream must start with an options message, followed by the image chunks")
            options = message.options
            continue
        if part != "chunk":
            raise InvalidImage("options may be sent only once, as the first message")
        if len(message.chunk) > MAX_CHUNK_BYTES:
            raise InvalidImage(f"chunks must be at most {MAX_CHUNK_BYTES} bytes; split the image into smaller chunks")
        size += len(message.chunk)
        if size > max_bytes:
            raise InvalidImage(
                f"the image is larger than the {max_bytes / 1024 / 1024:g} MiB limit; send a smaller file"
            )
        digest.update(message.chunk)
        chunks.append(message.chunk)
    if options is None:
        raise InvalidImage("the stream was empty; send an options message, then the image chunks")
    return Upload(resolve_top_k(options.top_k), b"".join(chunks), digest.hexdigest())
