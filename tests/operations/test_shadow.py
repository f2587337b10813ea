"""Shadow traffic in process: the comparison against scipy, joining, sampling, shedding and
failures that never reach the live path."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped]

from service.inference.softmax import softmax
from service.operations.shadow import ShadowTraffic, compare


@dataclass(frozen=True)
class Version:
    name: str
    version: int


LIVE, SHADOW = Version("blobs", 1), Version("blobs", 2)
WEIGHTS = {
    1: np.array([[1.0, -1.0, 0.5], [0.2, 0.3, -0.4]]),
    2: np.array([[0.9, -1.2, 0.6], [0.1, 0.5, -0.2]]),
}


def probabilities(version: Any, x: np.ndarray) -> np.ndarray:
    return softmax(x.astype(np.float64) @ WEIGHTS[version.version], 1.0)


class Scorer:
    """A version's real scores (a fixed linear map and the softmax), with its calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail

    async def __call__(self, version: Any, x: np.ndarray, calibrated: bool) -> np.ndarray:
        self.calls.append(len(x))
        if self.fail:
            raise RuntimeError("the shadow's runtime failed")
        return probabilities(version, x)


def test_the_comparison_matches_scipy_and_numpy_references() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=50)
    q = rng.dirichlet(np.ones(5) * 0.3, size=50)
    q[0] = p[0]  # identical rows: divergence 0
    q[1] = np.eye(5)[0]
    p[1] = np.eye(5)[1]  # disjoint rows: divergence 1 bit
    batch = compare(p, q, 0.01)
    expected_js = jensenshannon(p, q, base=2, axis=1) ** 2
    assert batch.rows == 50
    assert batch.agreeing == int(np.sum(p.argmax(1) == q.argmax(1)))
    assert batch.abs_difference == pytest.approx(np.abs(p - q).mean(axis=1).sum(), rel=1e-12)
    assert batch.js_divergence == pytest.approx(expected_js.sum(), rel=1e-9)
    assert compare(p[:1], q[:1], 0).js_divergence == pytest.approx(0, abs=1e-15)
    assert compare(p[1:2], q[1:2], 0).js_divergence == pytest.approx(1, abs=1e-12)


def offers(shadow: ShadowTraffic, requests: list[np.ndarray], fraction: float = 1.0) -> None:
    for x in requests:
        shadow.offer(LIVE, SHADOW, fraction, x, probabilities(LIVE, x), True)


async def run_until_drained(shadow: ShadowTraffic) -> None:
    worker = asyncio.create_task(shadow.run())
    await asyncio.wait_for(shadow.drained(), 10)
    worker.cancel()


def test_queued_requests_are_compared_in_few_calls_with_the_right_numbers() -> None:
    scorer = Scorer()
    shadow = ShadowTraffic(scorer)
    rng = np.random.default_rng(1)
    requests = [rng.normal(size=(1 + i % 4, 2)).astype(np.float32) for i in range(40)]

    async def scenario() -> None:
        offers(shadow, requests)
        await run_until_drained(shadow)

    asyncio.run(scenario())
    assert len(scorer.calls) == 1  # every request queued before the worker ran: one call
    x = np.concatenate(requests)
    expected = compare(probabilities(LIVE, x), probabilities(SHADOW, x), 0)
    (pair,) = shadow.summary("blobs")
    assert pair["live_version"] == "1"
    assert pair["shadow_version"] == "2"
    assert pair["rows_compared"] == len(x)
    assert pair["top1_agreement"] == pytest.approx(expected.agreeing / len(x))
    assert pair["mean_js_divergence_bits"] == pytest.approx(expected.js_divergence / len(x))
    assert pair["mean_abs_difference"] == pytest.approx(expected.abs_difference / len(x))
    assert shadow.summary("other") == []


def test_a_fraction_samples_requests() -> None:
    shadow = ShadowTraffic(Scorer(), rng=random.Random(0))
    requests = [np.zeros((1, 2), dtype=np.float32)] * 1000
    offers(shadow, requests, fraction=0.25)
    assert 200 <= shadow.pending_rows <= 300
    offers(ShadowTraffic(Scorer()), requests, fraction=0.0)


def test_rows_beyond_the_bound_are_shed_and_counted() -> None:
    shadow = ShadowTraffic(Scorer(), max_pending_rows=10)
    offers(shadow, [np.zeros((4, 2), dtype=np.float32)] * 5)
    assert shadow.pending_rows == 8
    (pair,) = shadow.summary("blobs")
    assert pair["rows_not_compared"] == {"shed": 12}
    assert pair["rows_compared"] == 0


def test_a_failing_shadow_is_counted_and_the_worker_goes_on() -> None:
    shadow = ShadowTraffic(Scorer(fail=True))

    async def scenario() -> None:
        offers(shadow, [np.zeros((3, 2), dtype=np.float32)] * 2)
        await run_until_drained(shadow)

    asyncio.run(scenario())
    (pair,) = shadow.summary("blobs")
    assert pair["rows_not_compared"] == {"failed": 6}
