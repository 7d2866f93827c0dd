"""The model server's batch scheduler: merges calls, splits outputs, isolates a bad input, bounds its queue."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf

from services.common.errors import StatusError
from services.modelserver.batching import BatchScheduler, concise_message


class Model:
    """Doubles its input; fails like a decode error on a negative value; records batch sizes."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay = delay

    def __call__(self, inputs):
        values = inputs["x"]
        self.batches.append(len(values))
        if (values < 0).any():
            raise tf.errors.InvalidArgumentError(None, None, "Unknown image file format.")
        if self.delay:
            import time

            time.sleep(self.delay)
        return {"y": values * 2, "n": np.array(len(values))}


@pytest.fixture
def executor():
    with ThreadPoolExecutor(2) as pool:
        yield pool


def scheduler(model, executor, **overrides) -> BatchScheduler:
    options = {"max_batch_size": 8, "timeout_s": 0.005, "num_threads": 1, "max_enqueued_batches": 4, **overrides}
    return BatchScheduler(model, executor=executor, **options)


async def test_merges_concurrent_calls_and_splits_the_outputs(executor):
    model = Model(delay=0.01)
    subject = scheduler(model, executor)
    calls = [subject.submit({"x": np.array([i, i + 100])}, 2) for i in range(10)]
    results = await asyncio.gather(*calls)
    await subject.close()
    assert [r["y"].tolist() for r in results] == [[2 * i, 2 * i + 200] for i in range(10)]
    assert sum(model.batches) == 20 and max(model.batches) <= 8
    assert len(model.batches) <= 5
    assert subject.stats.examples == 20 and subject.stats.batches == len(model.batches)


async def test_bad_input_fails_alone(executor):
    subject = scheduler(Model(delay=0.01), executor)
    results = await asyncio.gather(
        subject.submit({"x": np.array([1])}, 1), subject.submit({"x": np.array([-1])}, 1), return_exceptions=True
    )
    await subject.close()
    assert results[0]["y"].tolist() == [2]
    assert isinstance(results[1], StatusError) and results[1].code == grpc.StatusCode.INVALID_ARGUMENT
    assert results[1].message == "Unknown image file format."


async def test_oversized_call_runs_on_its_own(executor):
    model = Model()
    subject = scheduler(model, executor, max_batch_size=2)
    result = await subject.submit({"x": np.arange(5)}, 5)
    assert result["y"].tolist() == [0, 2, 4, 6, 8] and model.batches == [5]


async def test_full_queue_is_unavailable(executor):
    subject = scheduler(Model(delay=0.2), executor, max_batch_size=1, max_enqueued_batches=2)
    calls = [asyncio.ensure_future(subject.submit({"x": np.array([i])}, 1)) for i in range(6)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    await subject.close()
    refused = [r for r in results if isinstance(r, StatusError)]
    assert refused and all(r.code == grpc.StatusCode.UNAVAILABLE for r in refused)


async def test_a_large_batch_is_split_over_idle_threads(executor):
    model = Model(delay=0.01)
    subject = scheduler(model, executor, max_batch_size=32, num_threads=2)
    result = await subject.submit({"x": np.arange(20)}, 20)
    await subject.close()
    assert sorted(model.batches) == [10, 10]
    assert result["y"].tolist() == [2 * i for i in range(20)]
    assert result["n"] == 10  # an output without a batch dimension comes from the first part
    assert subject.stats.batches == 2 and subject.stats.examples == 20


async def test_small_batches_are_not_split(executor):
    model = Model()
    subject = scheduler(model, executor, max_batch_size=32, num_threads=2)
    result = await subject.submit({"x": np.arange(15)}, 15)
    await subject.close()
    assert model.batches == [15] and result["y"].tolist() == [2 * i for i in range(15)]


async def test_a_bad_input_in_a_split_batch_fails_alone(executor):
    subject = scheduler(Model(), executor, max_batch_size=32, num_threads=2)
    good = subject.submit({"x": np.arange(10)}, 10)
    bad = subject.submit({"x": np.array([1] * 9 + [-1])}, 10)
    results = await asyncio.gather(good, bad, return_exceptions=True)
    await subject.close()
    assert results[0]["y"].tolist() == [2 * i for i in range(10)]
    assert isinstance(results[1], StatusError) and results[1].code == grpc.StatusCode.INVALID_ARGUMENT


def test_concise_message_drops_graph_noise():
    raw = (
        "Graph execution error:\n\nDetected at node x defined at (most recent call last):\n<stack traces unavailable>\n"
        "Unknown image file format. One of JPEG, PNG required.\n\t [[{{node decode}}]] [Op:__inference_serve_123]"
    )
    assert concise_message(raw) == "Unknown image file format. One of JPEG, PNG required."
