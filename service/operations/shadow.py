"""Shadow traffic: a model's shadow version scores live requests off the response path.

A model's ``serving.json`` may name a shadow version (``service.repository.rollout``).
For each request the live version answered, the data plane ``offer``s the batch it
decoded and the probabilities it answered; ``offer`` samples the shadow's ``fraction``,
queues the batch and returns at once. One worker task drains the queue, ``LINGER``
seconds after an offer arrives: it joins the queued batches of one live/shadow pair into
one call of the shadow version, through the
data plane's own scoring (``Score``: the same runtime, batcher and softmax as any request),
then records, per pair, how the two versions compare:

- top-1 agreement: the share of rows where both pick the same class;
- the mean absolute difference of the probabilities (per row, the mean over classes);
- the Jensen-Shannon divergence of the two distributions, in bits (0: identical, 1:
  disjoint);
- the shadow's latency per call.

The shadow never changes an answer and never fails a request: its errors are counted
and logged. When more than ``max_pending_rows`` rows wait (the shadow cannot keep up),
new offers are shed and counted, so the live path pays only the cost of an offer.
The data plane offers only batches the shadow takes (the same input and classes as the
live version) and counts the others as ``different_input``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

log = logging.getLogger("service.operations.shadow")

#: Seconds the worker waits after an offer arrives, so that the offers of the next
#: moments join one shadow call: a call costs about 100 µs whatever its rows, so one per
#: request would cost a lone client a fifth of its throughput (benchmarks/shadow.py).
LINGER = 0.005

Probabilities = npt.NDArray[np.float64]


class Version(Protocol):
    """What the shadow needs of a served version (``LoadedVersion``)."""

    @property
    def name(self) -> str:
        """The model's name."""

    @property
    def version(self) -> int:
        """Its number."""


#: Scores a decoded batch with a version: its probabilities (calibrated or not).
Score = Callable[[Any, Any, bool], Awaitable[Probabilities]]


class ShadowMetrics(Protocol):
    """Where the comparisons go (``service.operations.metrics.Metrics``)."""

    def observe_shadow(self, key: tuple[str, str, str], batch: Comparison) -> None:
        """Add one shadow call's comparison."""

    def count_shadow_skipped(self, key: tuple[str, str, str], reason: str, rows: int) -> None:
        """Count rows the shadow did not score, and why."""


@dataclass(frozen=True)
class Comparison:
    """How one shadow call's rows compare with the live answers."""

    rows: int
    agreeing: int
    abs_difference: float
    """The sum over rows of the mean absolute difference of the probabilities."""
    js_divergence: float
    """The sum over rows of the Jensen-Shannon divergence, in bits."""
    seconds: float


def compare(live: Probabilities, shadow: Probabilities, seconds: float) -> Comparison:
    """Top-1 agreement, mean absolute difference and Jensen-Shannon divergence (bits)."""
    p = np.asarray(live, dtype=np.float64)
    q = np.asarray(shadow, dtype=np.float64)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
    js = np.clip((kl_p + kl_q) / 2, 0.0, 1.0)
    return Comparison(
        rows=len(p),
        agreeing=int(np.sum(p.argmax(axis=1) == q.argmax(axis=1))),
        abs_difference=float(np.abs(p - q).mean(axis=1).sum()),
        js_divergence=float(js.sum()),
        seconds=seconds,
    )


@dataclass
class PairSummary:
    """The running comparison of one live/shadow pair (``GET /models/{name}``)."""

    rows: int = 0
    agreeing: int = 0
    abs_difference: float = 0.0
    js_divergence: float = 0.0
    calls: int = 0
    seconds: float = 0.0
    skipped: dict[str, int] = field(default_factory=dict)

    def add(self, batch: Comparison) -> None:
        self.rows += batch.rows
        self.agreeing += batch.agreeing
        self.abs_difference += batch.abs_difference
        self.js_divergence += batch.js_divergence
        self.calls += 1
        self.seconds += batch.seconds

    def as_json(self) -> dict[str, Any]:
        rows = max(self.rows, 1)
        return {
            "rows_compared": self.rows,
            "top1_agreement": self.agreeing / rows if self.rows else None,
            "mean_abs_difference": self.abs_difference / rows if self.rows else None,
            "mean_js_divergence_bits": self.js_divergence / rows if self.rows else None,
            "shadow_calls": self.calls,
            "shadow_mean_seconds": self.seconds / self.calls if self.calls else None,
            "rows_not_compared": dict(sorted(self.skipped.items())),
        }


@dataclass
class _Offer:
    live: Any
    shadow: Any
    x: Any
    probabilities: Probabilities
    calibrated: bool


class ShadowTraffic:
    """Queues live requests for their model's shadow version and compares the answers."""

    def __init__(
        self,
        score: Score,
        metrics: ShadowMetrics | None = None,
        *,
        max_pending_rows: int = 4096,
        max_call_rows: int = 1024,
        linger: float = LINGER,
        rng: random.Random | None = None,
    ) -> None:
        self._score = score
        self._metrics = metrics
        self.max_pending_rows = max_pending_rows
        self.max_call_rows = max_call_rows
        self.linger = linger
        self._random = (rng or random.Random()).random  # noqa: S311 (sampling, not secrets)
        self._queue: deque[_Offer] = deque()
        self._pending_rows = 0
        self._arrived = asyncio.Event()
        self._pairs: dict[tuple[str, str, str], PairSummary] = {}

    def offer(
        self,
        live: Version,
        shadow: Version,
        fraction: float,
        x: Any,
        probabilities: Probabilities,
        calibrated: bool,
    ) -> None:
        """Queue a served batch for the shadow (a sampled ``fraction`` of them); never raises."""
        if fraction < 1.0 and self._random() >= fraction:
            return
        rows = len(probabilities)
        if self._pending_rows + rows > self.max_pending_rows:
            self.not_compared(pair_key(live, shadow), "shed", rows)
            return
        self._queue.append(_Offer(live, shadow, x, probabilities, calibrated))
        self._pending_rows += rows
        self._arrived.set()

    def summary(self, name: str) -> list[dict[str, Any]]:
        """Each live/shadow pair of model ``name`` with its running comparison."""
        return [
            {"live_version": live, "shadow_version": shadow, **pair.as_json()}
            for (model, live, shadow), pair in sorted(self._pairs.items())
            if model == name
        ]

    @property
    def pending_rows(self) -> int:
        """Rows queued for a shadow, not compared yet."""
        return self._pending_rows

    async def run(self) -> None:
        """Drain the queue until cancelled: one shadow call per pair and ``calibrated``."""
        while True:
            await self._arrived.wait()
            if self._pending_rows < self.max_call_rows:
                await asyncio.sleep(self.linger)  # let more offers join this call
            self._arrived.clear()
            while self._queue:
                await self._drain_one_call()

    async def drained(self) -> None:
        """Return once nothing is queued (tests, shutdown)."""
        while self._queue or self._pending_rows:
            await asyncio.sleep(0.001)

    async def _drain_one_call(self) -> None:
        first = self._queue.popleft()
        group = [first]
        rows = len(first.probabilities)
        kept: deque[_Offer] = deque()
        while self._queue and rows < self.max_call_rows:
            offer = self._queue.popleft()
            if (
                offer.shadow is first.shadow
                and offer.live is first.live
                and offer.calibrated == first.calibrated
                and _joinable(offer.x, first.x)
            ):
                group.append(offer)
                rows += len(offer.probabilities)
            else:
                kept.append(offer)
        self._queue.extendleft(reversed(kept))
        try:
            await self._compare(group)
        finally:
            self._pending_rows -= rows

    async def _compare(self, group: list[_Offer]) -> None:
        first = group[0]
        key = pair_key(first.live, first.shadow)
        rows = sum(len(o.probabilities) for o in group)
        x = group[0].x if len(group) == 1 else np.concatenate([o.x for o in group])
        live = np.concatenate([o.probabilities for o in group])
        started = time.perf_counter()
        try:
            shadow = await self._score(first.shadow, x, first.calibrated)
        except Exception:  # the shadow must never fail anything: counted and logged
            log.exception("shadow version %s of model %r failed", key[2], key[0])
            self.not_compared(key, "failed", rows)
            return
        if shadow.shape != live.shape:
            self.not_compared(key, "different_classes", rows)
            return
        batch = compare(live, shadow, time.perf_counter() - started)
        self._pairs.setdefault(key, PairSummary()).add(batch)
        if self._metrics is not None:
            self._metrics.observe_shadow(key, batch)

    def not_compared(self, key: tuple[str, str, str], reason: str, rows: int) -> None:
        """Count ``rows`` of pair ``key`` the shadow did not score, and why."""
        pair = self._pairs.setdefault(key, PairSummary())
        pair.skipped[reason] = pair.skipped.get(reason, 0) + rows
        if self._metrics is not None:
            self._metrics.count_shadow_skipped(key, reason, rows)


def pair_key(live: Version, shadow: Version) -> tuple[str, str, str]:
    """(model, live version, shadow version): how a pair is named in metrics."""
    return (live.name, str(live.version), str(shadow.version))


def _joinable(a: Any, b: Any) -> bool:
    """Batches that ``np.concatenate`` joins into one (same dtype and row shape)."""
    return bool(
        isinstance(a, np.ndarray)
        and isinstance(b, np.ndarray)
        and a.dtype == b.dtype
        and a.shape[1:] == b.shape[1:]
    )
