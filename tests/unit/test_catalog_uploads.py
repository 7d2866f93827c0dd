"""The upload's plumbing: received bytes read by several readers at once, and steps that run side by side."""

import asyncio

import pytest
from tagsmith.catalog.v1 import catalog_pb2

from services.catalog.uploads import _SPOOL_IN_MEMORY, MAX_CHUNK_BYTES, all_or_none, receive


async def _chunks(data: bytes):
    for start in range(0, len(data), MAX_CHUNK_BYTES):
        yield catalog_pb2.UploadImageRequest(chunk=data[start : start + MAX_CHUNK_BYTES])


@pytest.mark.parametrize("size", [1000, _SPOOL_IN_MEMORY + 3 * MAX_CHUNK_BYTES // 2])
async def test_received_bytes_have_independent_readers(size):
    data = bytes(range(256)) * (size // 256) + b"end"
    received = await receive(_chunks(data), max_bytes=64 * MAX_CHUNK_BYTES)
    try:
        with received.reader() as first, received.reader() as second:
            head = first.read(100)
            assert second.read() == data
            assert head + first.read() == data
        assert received.size == len(data)
    finally:
        received.close()


async def test_both_steps_run_at_once_and_both_results_come_back():
    started = []
    both_started = asyncio.Event()

    async def step(name: str) -> str:
        started.append(name)
        if len(started) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), timeout=5)
        return name

    assert await all_or_none(step("save"), step("classify")) == ("save", "classify")


async def test_a_failure_cancels_the_other_step_and_waits_for_it():
    finished_cleanup = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.01)  # cleanup that must end before the error is raised
            finished_cleanup.set()

    async def failing() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("the classifier refused the image")

    with pytest.raises(ValueError, match="refused"):
        await all_or_none(slow(), failing())
    assert finished_cleanup.is_set()


async def test_cancelling_the_caller_cancels_both_steps():
    cancelled = []

    async def waits(name: str) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    caller = asyncio.create_task(all_or_none(waits("save"), waits("classify")))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert sorted(cancelled) == ["classify", "save"]
