"""Coalescing into batched Predict calls, the result cache, and joining identical images in flight."""

import asyncio

import grpc
import numpy as np
import pytest

from services.common.errors import StatusError
from services.inference.batcher import PredictBatcher
from services.inference.cache import ResultCache
from services.inference.classifier import Classifier, Scores, ranked


class RecordingModel:
    """Stands in for TF Serving: scores image i as class len(payload) % 10, records every call's batch size."""

    def __init__(self, *, delay: float = 0.01, version: str = "1") -> None:
        self.batches: list[int] = []
        self.delay = delay
        self.version = version

    async def predict(self, images: list[bytes], *, timeout: float) -> Scores:
        self.batches.append(len(images))
        if any(image == b"bad" for image in images):
            raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, "the model could not read the image")
        await asyncio.sleep(self.delay)
        scores = np.full((len(images), 10), 0.01, dtype=np.float32)
        for row, image in enumerate(images):
            scores[row, len(image) % 10] = 0.91
        return Scores(scores, self.version)


def batcher(model, **overrides) -> PredictBatcher:
    return PredictBatcher(model, **{"max_size": 8, "max_wait_s": 0.005, "max_in_flight": 1, **overrides})


async def test_concurrent_images_share_predict_calls():
    model = RecordingModel()
    subject = batcher(model)
    results = await asyncio.gather(*(subject.predict(b"x" * n, timeout=5) for n in range(20)))
    await subject.close()
    assert [int(row.argmax()) for row, _, _ in results] == [n % 10 for n in range(20)]
    assert sum(model.batches) == 20 and max(model.batches) == 8
    assert len(model.batches) <= 4


async def test_batches_respect_the_byte_budget():
    model = RecordingModel()
    subject = batcher(model, max_bytes=250)
    await asyncio.gather(
        *(subject.predict(b"x" * 100, timeout=5) for _ in range(6)), subject.predict(b"y" * 400, timeout=5)
    )
    await subject.close()
    assert sum(model.batches) == 7 and max(model.batches) <= 2


async def test_a_lone_image_waits_at_most_max_wait():
    model = RecordingModel(delay=0)
    subject = batcher(model, max_wait_s=0.05)
    started = asyncio.get_running_loop().time()
    await subject.predict(b"x", timeout=5)
    elapsed = asyncio.get_running_loop().time() - started
    await subject.close()
    assert model.batches == [1] and 0.04 <= elapsed < 0.5


async def test_a_lone_image_to_an_idle_model_goes_at_once():
    model = RecordingModel(delay=0)
    subject = batcher(model, max_wait_s=0, max_linger_s=1.0)
    started = asyncio.get_running_loop().time()
    await subject.predict(b"x", timeout=5)
    elapsed = asyncio.get_running_loop().time() - started
    await subject.close()
    assert model.batches == [1] and elapsed < 0.5


async def test_a_batch_waits_for_images_still_being_uploaded():
    model = RecordingModel(delay=0)
    subject = batcher(model, max_wait_s=0, max_linger_s=1.0)

    async def uploading_then_classified() -> None:
        with subject.incoming():
            await asyncio.sleep(0.05)
        await subject.predict(b"late", timeout=5)

    started = asyncio.get_running_loop().time()
    await asyncio.gather(uploading_then_classified(), subject.predict(b"early", timeout=5))
    elapsed = asyncio.get_running_loop().time() - started
    await subject.close()
    assert model.batches == [2] and elapsed < 0.5


async def test_while_a_predict_is_in_flight_the_next_batch_collects_more():
    model = RecordingModel(delay=0.2)
    subject = batcher(model, max_wait_s=0, max_linger_s=0.1, max_in_flight=2)

    async def arriving(delay: float) -> None:
        await asyncio.sleep(delay)
        await subject.predict(b"x" * int(delay * 1000), timeout=5)

    await asyncio.gather(*(arriving(delay) for delay in (0, 0.02, 0.03, 0.04)))
    await subject.close()
    assert model.batches == [1, 3]


async def test_the_queue_is_spread_over_free_slots():
    model = RecordingModel(delay=0.1)
    subject = batcher(model, max_in_flight=2)
    await asyncio.gather(*(subject.predict(b"x" * n, timeout=5) for n in range(10)))
    await subject.close()
    assert model.batches == [5, 5]


async def test_one_unreadable_image_does_not_fail_its_batch():
    model = RecordingModel()
    subject = batcher(model)
    results = await asyncio.gather(
        subject.predict(b"good", timeout=5), subject.predict(b"bad", timeout=5), return_exceptions=True
    )
    await subject.close()
    assert isinstance(results[1], StatusError) and results[1].code == grpc.StatusCode.INVALID_ARGUMENT
    assert int(results[0][0].argmax()) == 4


async def test_deadline_is_kept_when_the_model_is_slow():
    subject = batcher(RecordingModel(delay=10))
    with pytest.raises(StatusError) as err:
        await subject.predict(b"x", timeout=0.1)
    await subject.close()
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_cache_and_single_flight():
    model = RecordingModel()
    classifier = Classifier(batcher(model), ResultCache(10))
    first, second = await asyncio.gather(
        classifier.classify("same", b"abc", timeout=5), classifier.classify("same", b"abc", timeout=5)
    )
    third = await classifier.classify("same", b"abc", timeout=5)
    await classifier.batcher.close()
    assert first == second == third
    assert model.batches == [1]
    assert classifier.cache.hits == 1


def test_cache_is_bounded_and_least_recently_used_goes_first():
    cache: ResultCache[str] = ResultCache(2)
    cache.put("a", "A", version="1")
    cache.put("b", "B", version="1")
    assert cache.get("a") == "A"
    cache.put("c", "C", version="1")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")


def test_a_newer_model_version_empties_the_cache():
    cache: ResultCache[str] = ResultCache(10)
    cache.put("a", "A", version="1")
    cache.put("b", "B", version="2")
    assert cache.get("a") is None and cache.get("b") == "B"
    cache.put("c", "C", version="1")  # a late answer from the old version is not kept
    assert cache.get("c") is None and len(cache) == 1


def test_disabled_cache_keeps_nothing():
    cache: ResultCache[str] = ResultCache(0)
    cache.put("a", "A", version="1")
    assert cache.get("a") is None


def test_ranked_orders_best_first():
    result = ranked(np.array([0.1, 0.5, 0.05, 0.35], dtype=np.float32), "3", k=3)
    assert result.class_ids == (1, 3, 0)
    assert result.scores == pytest.approx((0.5, 0.35, 0.1))
    assert result.model_version == "3"
