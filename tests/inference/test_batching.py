"""Adaptive batching: every request gets exactly its own rows; concurrency forms batches."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.inference.batching import Batcher, BatchingConfig
from service.inference.runtime import Features, Logits
from service.inference.softmax import softmax


class SlowRuntime:
    """A real computation (a fixed linear map) that, like TensorFlow, costs time per call."""

    blocking = True

    def __init__(self, delay: float = 0.01, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.calls: list[int] = []
        self.weights = np.arange(8, dtype=np.float32).reshape(2, 4) / 7
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.at_once = self.most_at_once = 0  # calls in progress (waiting for the lock too)

    def logits(self, features: Features) -> Logits:
        with self._count_lock:
            self.at_once += 1
            self.most_at_once = max(self.most_at_once, self.at_once)
        try:
            return self._compute(features)
        finally:
            with self._count_lock:
                self.at_once -= 1

    def _compute(self, features: Features) -> Logits:
        with self._lock:
            self.calls.append(len(features))
            time.sleep(self.delay)
            if self.fail:
                raise RuntimeError("runtime failed")
            result: Logits = features @ self.weights
            return result


def assert_same_rows(actual: Logits, x: Features, runtime: SlowRuntime) -> None:
    """Batched and unbatched float32 matrix products may round differently in the last ulp."""
    np.testing.assert_allclose(actual, x @ runtime.weights, rtol=1e-6, atol=1e-7)


def rows(seed: int, n: int) -> Features:
    return np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)


async def run_concurrently(batcher: Batcher, inputs: list[Features]) -> list[Logits]:
    return list(await asyncio.gather(*(batcher.logits(x) for x in inputs)))


def test_concurrent_requests_share_calls_and_each_gets_its_own_rows() -> None:
    runtime = SlowRuntime()
    batcher = Batcher(runtime, BatchingConfig(enabled=True, max_batch_size=64, max_wait=0.005))
    inputs = [rows(i, 1 + i % 3) for i in range(40)]
    outputs = asyncio.run(run_concurrently(batcher, inputs))
    for x, y in zip(inputs, outputs, strict=True):
        assert y.shape == (len(x), 4)
        assert_same_rows(y, x, runtime)
    assert len(runtime.calls) < 10  # 40 requests, far fewer calls
    assert sum(runtime.calls) == sum(len(x) for x in inputs)
    assert max(runtime.calls) <= 64


def test_batches_never_exceed_the_maximum_size() -> None:
    runtime = SlowRuntime(delay=0.005)
    batcher = Batcher(runtime, BatchingConfig(enabled=True, max_batch_size=5, max_wait=0.001))
    inputs = [rows(i, 2) for i in range(20)]
    outputs = asyncio.run(run_concurrently(batcher, inputs))
    assert max(runtime.calls) <= 5
    for x, y in zip(inputs, outputs, strict=True):
        assert_same_rows(y, x, runtime)


def test_a_request_larger_than_the_maximum_runs_alone() -> None:
    runtime = SlowRuntime(delay=0.0)
    batcher = Batcher(runtime, BatchingConfig(enabled=True, max_batch_size=4))
    big = rows(0, 10)
    (out,) = asyncio.run(run_concurrently(batcher, [big]))
    assert runtime.calls == [10]
    np.testing.assert_array_equal(out, big @ runtime.weights)


def test_a_lone_request_does_not_wait_for_company() -> None:
    runtime = SlowRuntime(delay=0.0)
    batcher = Batcher(runtime, BatchingConfig(enabled=True, max_batch_size=64, max_wait=0.5))

    async def sequential() -> float:
        started = time.perf_counter()
        for i in range(5):
            await batcher.logits(rows(i, 1))
        return time.perf_counter() - started

    assert asyncio.run(sequential()) < 0.25  # five lone requests, none waited 0.5 s
    assert runtime.calls == [1, 1, 1, 1, 1]


def test_a_runtime_error_reaches_every_request_of_the_batch() -> None:
    batcher = Batcher(SlowRuntime(fail=True), BatchingConfig(enabled=True))

    async def go() -> list[BaseException | Logits]:
        return list(
            await asyncio.gather(
                *(batcher.logits(rows(i, 1)) for i in range(6)), return_exceptions=True
            )
        )

    results = asyncio.run(go())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_batched_probabilities_equal_unbatched_ones() -> None:
    runtime = SlowRuntime(delay=0.001)
    batcher = Batcher(runtime, BatchingConfig(enabled=True, max_batch_size=32))
    inputs = [rows(i, 1) for i in range(16)]
    outputs = asyncio.run(run_concurrently(batcher, inputs))
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_allclose(softmax(y), softmax(runtime.logits(x)), rtol=1e-6)


@pytest.mark.parametrize(("size", "wait"), [(0, 0.001), (4, -1.0)])
def test_batcher_refuses_nonsense_configuration(size: int, wait: float) -> None:
    with pytest.raises(ValueError, match="expected"):
        Batcher(SlowRuntime(), BatchingConfig(enabled=True, max_batch_size=size, max_wait=wait))


def test_a_cancelled_request_is_dropped_from_the_queue_and_its_call_runs_to_its_end() -> None:
    """A request whose client left is cancelled: queued, it is never computed; running
    alone, its call still ends before the batcher takes the next one (never two at once)."""
    runtime = SlowRuntime(delay=0.05)
    batcher = Batcher(runtime, BatchingConfig(enabled=True, max_batch_size=64, max_wait=0))

    async def scenario() -> tuple[list[Logits], float]:
        running = asyncio.create_task(batcher.logits(rows(0, 1)))  # the idle call
        await asyncio.sleep(0.01)
        queued = asyncio.create_task(batcher.logits(rows(1, 3)))
        wanted = [asyncio.create_task(batcher.logits(rows(2 + i, 2))) for i in range(2)]
        await asyncio.sleep(0.01)
        running.cancel()
        queued.cancel()
        cancelled_at = time.monotonic()
        results = list(await asyncio.gather(*wanted))
        for task in (running, queued):
            with pytest.raises(asyncio.CancelledError):
                await task
        return results, time.monotonic() - cancelled_at

    results, waited = asyncio.run(scenario())
    assert runtime.calls == [1, 4]  # the cancelled call ran whole; the queued one never did
    assert runtime.most_at_once == 1  # the next batch waited for the cancelled call's end
    assert waited >= 0.03
    for i, result in enumerate(results):
        assert_same_rows(result, rows(2 + i, 2), runtime)
