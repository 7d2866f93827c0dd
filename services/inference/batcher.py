"""Coalesces concurrent classifications into batched Predict calls."""

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import numpy as np

from services.common.errors import StatusError

DEADLINE_MESSAGE = "TensorFlow Serving did not answer within the deadline; try again"


class Rows(Protocol):
    """A batch's answer: one row per image (in order), the model version, and the embeddings or None."""

    @property
    def values(self) -> Iterable[Any]: ...

    @property
    def version(self) -> str: ...

    @property
    def embeddings(self) -> np.ndarray | None: ...


class BatchModel(Protocol):
    """A model's signature on the model client (the classifier's or the face detector's)."""

    async def predict(self, images: list[bytes], *, timeout: float) -> Rows: ...


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
    """Queues images; a Predict call goes out when a slot is free and the batch is ready.

    A batch is ready when it is full; else, while other calls are still uploading (see `incoming`) or a Predict
    call is in flight anyway, it waits up to `max_linger_s` for more, and otherwise up to `max_wait_s`. So under
    load batches grow, and a lone image to an idle model goes at once. When several slots are free the queue is
    spread over them, so TF Serving can run the parts side by side.
    """

    def __init__(
        self,
        client: BatchModel,
        *,
        max_size: int,
        max_wait_s: float,
        max_in_flight: int,
        max_bytes: int = 2**25,
        max_linger_s: float = 0.01,
    ) -> None:
        self._client = client
        self._max = max_size
        self._max_bytes = max_bytes
        self._max_wait = max_wait_s
        self._max_linger = max(max_linger_s, max_wait_s)
        self._max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._incoming = 0
        self._busy = 0
        self._loop_task: asyncio.Task | None = None
        self._sending: set[asyncio.Task] = set()
        self.stats = BatchStats()

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Marks an image on its way (still uploading or being checked): a forming batch waits for it to arrive."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            self._arrived.set()

    def submit(self, payload: bytes, *, timeout: float) -> asyncio.Future:
        """Queues one image at once; the future gives its scores and the model version, or DEADLINE_EXCEEDED."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        future = loop.create_future()
        expiry = loop.call_at(now + timeout, _expire, future)
        future.add_done_callback(lambda _: expiry.cancel())
        self._pending.append(_Pending(payload, now + timeout, future, now))
        self._arrived.set()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._schedule())
        return future

    async def predict(self, payload: bytes, *, timeout: float) -> tuple[np.ndarray, str, np.ndarray | None]:
        """One image's scores, the model version and its embedding (None when the model gives none);
        DEADLINE_EXCEEDED once `timeout` seconds pass."""
        return await self.submit(payload, timeout=timeout)

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
            if not batch:
                self._slots.release()
                continue
            self._busy += 1
            sending = asyncio.create_task(self._send(batch))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)

    async def _take_batch(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        while self._pending and (remaining := self._time_to_ready(loop.time())) > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        # The slot being filled and the other free ones share the queue.
        free = self._max_in_flight - self._busy
        return self._take(min(self._max, math.ceil(len(self._pending) / free)))

    def _time_to_ready(self, now: float) -> float:
        """Seconds the forming batch should still wait for more images; 0 when it should go now."""
        if len(self._pending) >= self._max:
            return 0.0
        first = self._pending[0].enqueued_at
        # While TF Serving is busy or more images are on their way, a fuller batch costs no time.
        wait = self._max_linger if self._incoming or self._busy else self._max_wait
        return max(0.0, first + wait - now)

    def _take(self, count: int) -> list[_Pending]:
        """Up to `count` live images from the queue, within the byte budget (a lone large image always goes)."""
        batch: list[_Pending] = []
        size = 0
        while self._pending and len(batch) < count:
            item = self._pending[0]
            if batch and size + len(item.payload) > self._max_bytes:
                break
            self._pending.popleft()
            if not item.future.done():
                batch.append(item)
                size += len(item.payload)
        return batch

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            live = [item for item in batch if not item.future.done()]
            if live:
                await self._predict_into(live)
        finally:
            self._busy -= 1
            self._slots.release()
            self._arrived.set()  # a batch lingering because TF Serving was busy may go now

    async def _predict_into(self, batch: list[_Pending]) -> None:
        timeout = max(item.deadline for item in batch) - asyncio.get_running_loop().time()
        self.stats.calls += 1
        self.stats.images += len(batch)
        try:
            scores = await self._client.predict([item.payload for item in batch], timeout=max(timeout, 0.001))
        except StatusError as exc:
            if exc.code == grpc.StatusCode.INVALID_ARGUMENT and len(batch) > 1:
                # TF Serving fails a whole batch for one unreadable image: find it by sending each alone.
                await asyncio.gather(*(self._predict_into([item]) for item in batch))
                return
            _fail(batch, exc)
            return
        for index, (item, row) in enumerate(zip(batch, scores.values, strict=True)):
            if not item.future.done():
                embedding = None if scores.embeddings is None else scores.embeddings[index]
                item.future.set_result((row, scores.version, embedding))


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(StatusError(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE))


def _fail(batch: list[_Pending], error: StatusError) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(error)
