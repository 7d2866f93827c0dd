"""Coalesces concurrent classifications into batched Predict calls."""

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass

import grpc
import numpy as np

from services.inference.model_client import ModelClient, ModelError

DEADLINE_MESSAGE = "TensorFlow Serving did not answer within the deadline; try again"


@dataclass
class _Pending:
    payload: bytes
    deadline: float
    future: asyncio.Future
    enqueued_at: float


@dataclass
class BatchStats:
    """Predict calls made and images they carried, for tests and logs."""

    calls: int = 0
    images: int = 0


class PredictBatcher:
    """Queues images; a Predict call goes out when a slot is free and the batch is full or has waited long enough.

    While every slot is busy, images keep queueing, so batches grow with load and stay small when idle.
    """

    def __init__(
        self, client: ModelClient, *, max_size: int, max_wait_s: float, max_in_flight: int, max_bytes: int = 2**25
    ) -> None:
        self._client = client
        self._max = max_size
        self._max_bytes = max_bytes
        self._max_wait = max_wait_s
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._sending: set[asyncio.Task] = set()
        self.stats = BatchStats()

    async def predict(self, payload: bytes, *, timeout: float) -> tuple[np.ndarray, str]:
        """One image's scores and the model version; DEADLINE_EXCEEDED once `timeout` seconds pass."""
        loop = asyncio.get_running_loop()
        item = _Pending(payload, loop.time() + timeout, loop.create_future(), loop.time())
        self._pending.append(item)
        self._arrived.set()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._schedule())
        try:
            return await asyncio.wait_for(item.future, timeout)
        except TimeoutError:
            raise ModelError(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self._sending):
            task.cancel()

    async def _schedule(self) -> None:
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()
            batch = await self._take_batch()
            sending = asyncio.create_task(self._send(batch))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)

    async def _take_batch(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch: list[_Pending] = []
        size = 0
        wait_until = self._pending[0].enqueued_at + self._max_wait if self._pending else loop.time()
        while True:
            while self._pending and len(batch) < self._max and (not batch or self._fits(size)):
                item = self._pending.popleft()
                if not item.future.done():
                    batch.append(item)
                    size += len(item.payload)
            remaining = wait_until - loop.time()
            if len(batch) >= self._max or self._pending or remaining <= 0:
                return batch
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _fits(self, size: int) -> bool:
        """Whether the next queued image still fits the batch's byte budget (a lone large image always goes)."""
        return size + len(self._pending[0].payload) <= self._max_bytes

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            live = [item for item in batch if not item.future.done()]
            if live:
                await self._predict_into(live)
        finally:
            self._slots.release()

    async def _predict_into(self, batch: list[_Pending]) -> None:
        timeout = max(item.deadline for item in batch) - asyncio.get_running_loop().time()
        self.stats.calls += 1
        self.stats.images += len(batch)
        try:
            scores = await self._client.predict([item.payload for item in batch], timeout=max(timeout, 0.001))
        except ModelError as exc:
            if exc.code == grpc.StatusCode.INVALID_ARGUMENT and len(batch) > 1:
                # TF Serving fails a whole batch for one unreadable image: find it by sending each alone.
                await asyncio.gather(*(self._predict_into([item]) for item in batch))
                return
            _fail(batch, exc)
            return
        for item, row in zip(batch, scores.values, strict=True):
            if not item.future.done():
                item.future.set_result((row, scores.version))


def _fail(batch: list[_Pending], error: ModelError) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(error)
