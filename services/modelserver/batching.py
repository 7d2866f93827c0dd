"""Server-side batching: concurrent Predict calls on one signature become a single model call."""

import asyncio
import contextlib
import itertools
import logging
import re
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import grpc
import numpy as np
import tensorflow as tf

from services.common.errors import StatusError

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
_STACK_MARKER = "<stack traces unavailable>"
# The " [Op:__inference_...]" tail TensorFlow appends to eager errors.
_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]")
RunFunction = Callable[[Arrays], Arrays]
# A batch is split over idle batch threads only into parts at least this big: smaller ones are not worth a call.
MIN_PART_EXAMPLES = 8


@dataclass
class BatchStats:
    """Counts kept per scheduler so tests and logs can see how well calls coalesce."""

    batches: int = 0
    examples: int = 0
    largest: int = 0

    def record(self, size: int) -> None:
        self.batches += 1
        self.examples += size
        self.largest = max(self.largest, size)


@dataclass
class _Task:
    inputs: Arrays
    size: int
    future: asyncio.Future
    enqueued_at: float = field(default=0.0)


def to_status_error(exc: Exception) -> StatusError:
    """TensorFlow's errors carry a canonical status code; anything else is INTERNAL without detail."""
    if isinstance(exc, StatusError):
        return exc
    if isinstance(exc, tf.errors.OpError):
        code = next((c for c in grpc.StatusCode if c.value[0] == exc.error_code), grpc.StatusCode.INTERNAL)
        return StatusError(code, concise_message(exc.message))
    log.error("model call failed", exc_info=exc)
    return StatusError(grpc.StatusCode.INTERNAL, "the model call failed")


def concise_message(message: str) -> str:
    """TensorFlow's error text without the graph-execution preamble and node annotations."""
    if _STACK_MARKER in message:
        message = message.split(_STACK_MARKER, 1)[1]
    lines = [line.strip() for line in message.splitlines() if line.strip() and not line.strip().startswith("[[")]
    text = " ".join(lines) or "the model call failed"
    return _OP_SUFFIX.sub("", text).strip()


async def run_unbatched(run: RunFunction, inputs: Arrays, executor: Executor) -> Arrays:
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, run, inputs)
    except Exception as exc:
        raise to_status_error(exc) from None


class BatchScheduler:
    """Queues calls for one signature; a batch starts when a thread is free and it is full or has waited long enough.

    While every batch thread is busy, calls keep queueing, so under load batches fill up on their own. A large
    batch that finds other threads idle is split over them, so one big call still uses every CPU.
    """

    def __init__(
        self,
        run: RunFunction,
        *,
        executor: Executor,
        max_batch_size: int,
        timeout_s: float,
        num_threads: int = 1,
        max_enqueued_batches: int = 64,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        self._executor = executor
        self._max = max_batch_size
        self._timeout = timeout_s
        self._max_queued = max_batch_size * max_enqueued_batches
        self._pending: deque[_Task] = deque()
        self._arrived = asyncio.Event()
        self._threads = asyncio.Semaphore(num_threads)
        self._loop_task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._observe = observe
        self.stats = BatchStats()

    async def submit(self, inputs: Arrays, size: int) -> Arrays:
        """Runs one call's inputs (first dimension `size`) as part of a batch and returns its rows of the outputs."""
        if size > self._max:
            return await run_unbatched(self._run, inputs, self._executor)
        if len(self._pending) >= self._max_queued:
            raise StatusError(grpc.StatusCode.UNAVAILABLE, "The batch scheduling queue is full; retry later.")
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._schedule())
        loop = asyncio.get_running_loop()
        task = _Task(inputs, size, loop.create_future(), loop.time())
        self._pending.append(task)
        self._arrived.set()
        return await task.future

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        _fail(list(self._pending), StatusError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down"))

    async def _schedule(self) -> None:
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            await self._threads.acquire()
            batch = await self._take_batch()
            threads = 1 + await self._claim_idle_threads(sum(task.size for task in batch))
            execution = asyncio.create_task(self._execute(batch, threads))
            self._running.add(execution)
            execution.add_done_callback(self._running.discard)

    async def _claim_idle_threads(self, size: int) -> int:
        """Takes the idle batch threads a batch of `size` examples can use beside its own (see MIN_PART_EXAMPLES)."""
        claimed = 0
        while size // (claimed + 2) >= MIN_PART_EXAMPLES and not self._threads.locked():
            await self._threads.acquire()  # a free thread, so this returns at once
            claimed += 1
        return claimed

    async def _take_batch(self) -> list[_Task]:
        """Takes queued calls up to the size limit, waiting for more until the first one's timeout."""
        loop = asyncio.get_running_loop()
        deadline = self._pending[0].enqueued_at + self._timeout
        batch: list[_Task] = []
        total = 0
        while True:
            while self._pending and total + self._pending[0].size <= self._max:
                task = self._pending.popleft()
                batch.append(task)
                total += task.size
            remaining = deadline - loop.time()
            if total >= self._max or self._pending or remaining <= 0:
                return batch
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def _execute(self, batch: list[_Task], threads: int) -> None:
        try:
            live = [task for task in batch if not task.future.cancelled()]
            if live:
                await self._execute_live(live, threads)
        finally:
            for _ in range(threads):
                self._threads.release()

    async def _execute_live(self, batch: list[_Task], threads: int) -> None:
        merged = {key: np.concatenate([task.inputs[key] for task in batch]) for key in batch[0].inputs}
        parts = _split_rows(merged, sum(task.size for task in batch), threads)
        for _, part_size in parts:
            self.stats.record(part_size)
            if self._observe is not None:
                self._observe(part_size)
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(self._executor, self._run, inputs) for inputs, _ in parts), return_exceptions=True
        )
        errors: list[Exception] = []
        for error in (result for result in results if isinstance(result, BaseException)):
            if not isinstance(error, Exception):
                raise error  # cancelled: the server is stopping
            errors.append(error)
        if not errors:
            outputs = [result for result in results if not isinstance(result, BaseException)]
            _split(batch, _join_rows(outputs, [part_size for _, part_size in parts]))
        elif len(batch) > 1 and all(isinstance(error, tf.errors.InvalidArgumentError) for error in errors):
            # One bad input must not fail its neighbours: run each call on its own to find it.
            await asyncio.gather(*(self._alone(task) for task in batch))
        else:
            _fail(batch, to_status_error(errors[0]))

    async def _alone(self, task: _Task) -> None:
        try:
            _resolve(task, await run_unbatched(self._run, task.inputs, self._executor))
        except StatusError as exc:
            _fail([task], exc)


def _resolve(task: _Task, outputs: Arrays) -> None:
    if not task.future.done():
        task.future.set_result(outputs)


def _fail(batch: list[_Task], error: StatusError) -> None:
    for task in batch:
        if not task.future.done():
            task.future.set_exception(error)


def _split_rows(inputs: Arrays, size: int, parts: int) -> list[tuple[Arrays, int]]:
    """`inputs` cut into `parts` runs of consecutive rows of near-equal size, with each run's size."""
    bounds = [size * index // parts for index in range(parts + 1)]
    return [({k: v[lo:hi] for k, v in inputs.items()}, hi - lo) for lo, hi in itertools.pairwise(bounds)]


def _join_rows(results: list[Arrays], sizes: list[int]) -> Arrays:
    """The outputs of consecutive parts joined back; outputs without a batch dimension come from the first part."""
    if len(results) == 1:
        return results[0]
    joined = {}
    for key, first in results[0].items():
        batched = all(r[key].ndim and r[key].shape[0] == n for r, n in zip(results, sizes, strict=True))
        joined[key] = np.concatenate([r[key] for r in results]) if batched else first
    return joined


def _split(batch: list[_Task], outputs: Arrays) -> None:
    total = sum(task.size for task in batch)
    start = 0
    for task in batch:
        stop = start + task.size
        _resolve(task, {k: v[start:stop] if v.ndim and v.shape[0] == total else v for k, v in outputs.items()})
        start = stop
