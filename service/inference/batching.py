"""Adaptive batching: requests that arrive together run as one call of a slow runtime.

For runtimes whose per-call cost dominates (Keras/TensorFlow: a millisecond or more a
call, however few rows), running 64 concurrent one-row requests as one 64-row call
is many times faster than 64 calls. The batcher is adaptive:

- an idle runtime takes a request at once, so a lone client pays no waiting time;
- while the runtime is busy, new requests queue; when it is free, everything
  queued (up to ``max_batch_size`` rows) runs as one call;
- only when the last batch held several requests (so more are probably on their
  way) does it wait, at most ``max_wait`` seconds, to fill the batch further.

Each request gets back exactly its own rows. A request larger than
``max_batch_size`` runs alone. Runtime errors reach every request of the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.inference.runtime import Features, Logits, Runtime


@dataclass(frozen=True)
class BatchingConfig:
    """When and how to batch one model's requests."""

    enabled: bool
    max_batch_size: int = 64
    max_wait: float = 0.002
    #: Told the number of rows of every model call (metrics).
    on_batch: Callable[[int], None] | None = None


@dataclass
class _Pending:
    features: Features
    done: asyncio.Future[Logits]


class Batcher:
    """Batches calls to one runtime; use one per model version, from one event loop."""

    def __init__(self, runtime: Runtime, config: BatchingConfig) -> None:
        if config.max_batch_size < 1:
            raise ValueError(f"expected max_batch_size >= 1, received {config.max_batch_size}")
        if config.max_wait < 0:
            raise ValueError(f"expected max_wait >= 0, received {config.max_wait}")
        self._runtime = runtime
        self._config = config
        self._queue: deque[_Pending] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._busy = False  # a runtime call is in progress (direct or in the worker)
        self._last_batch_requests = 0
        self.batches = 0
        self.requests = 0

    async def logits(self, features: Features) -> Logits:
        """The runtime's logits for ``features``, computed in some batch.

        A caller cancelled while it waits (its client left) is dropped from the queue;
        a call already running goes on to its end, and the batcher stays busy until then.
        """
        if not self._busy and not self._queue:
            # Idle: run at once, with no queue or task in between (a lone client pays
            # nothing); requests arriving meanwhile queue up for the next batch.
            self._busy = True
            if not self._runtime.blocking:
                try:
                    logits = self._runtime.logits(features)
                finally:
                    self._idle_call_done()
                self._observe(len(features), 1)
                return logits
            call = self._call(features)
            call.add_done_callback(self._idle_call_done)  # when the thread is done, not before
            logits = await asyncio.shield(call)
            self._observe(len(features), 1)
            return logits
        loop = asyncio.get_running_loop()
        pending = _Pending(features, loop.create_future())
        self._queue.append(pending)
        if self._arrived is None:
            self._arrived = asyncio.Event()
        self._arrived.set()
        self._start_worker()
        return await pending.done

    def _idle_call_done(self, _: object = None) -> None:
        """The direct call has ended: serve what queued up meanwhile."""
        self._busy = False
        self._last_batch_requests = 1
        self._start_worker()

    def _start_worker(self) -> None:
        """Drain the queue in a task, unless a call is running (it starts one when done)."""
        if self._queue and not self._busy and (self._worker is None or self._worker.done()):
            self._worker = asyncio.get_running_loop().create_task(self._run())

    def _call(self, features: Features) -> asyncio.Future[Logits]:
        """The runtime's call on a worker thread (the runtime is ``blocking``)."""
        return asyncio.get_running_loop().run_in_executor(None, self._runtime.logits, features)

    def _observe(self, rows: int, requests: int) -> None:
        self.batches += 1
        self.requests += requests
        if self._config.on_batch is not None:
            self._config.on_batch(rows)

    async def _run(self) -> None:
        """Drain the queue batch by batch; exit when it is empty (restarted on demand)."""
        assert self._arrived is not None
        self._busy = True
        try:
            while self._queue:
                if self._last_batch_requests > 1 and self._config.max_wait > 0:
                    await self._fill(self._config.max_wait)
                batch = self._take()
                self._last_batch_requests = len(batch)
                await self._execute(batch)
        finally:
            self._busy = False

    async def _fill(self, max_wait: float) -> None:
        """Wait up to ``max_wait`` for the queue to reach a full batch."""
        assert self._arrived is not None
        deadline = asyncio.get_running_loop().time() + max_wait
        while self._queued_rows() < self._config.max_batch_size:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _queued_rows(self) -> int:
        return sum(len(p.features) for p in self._queue)

    def _take(self) -> list[_Pending]:
        batch = [self._queue.popleft()]
        rows = len(batch[0].features)
        while self._queue and rows + len(self._queue[0].features) <= self._config.max_batch_size:
            item = self._queue.popleft()
            batch.append(item)
            rows += len(item.features)
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.done.cancelled()]
        if not live:
            return
        features = (
            live[0].features if len(live) == 1 else np.concatenate([p.features for p in live])
        )
        try:
            if self._runtime.blocking:
                logits = await self._call(features)
            else:
                logits = self._runtime.logits(features)
        except Exception as exc:  # every waiting request must hear of it
            for p in live:
                if not p.done.done():
                    p.done.set_exception(exc)
            return
        self._observe(len(features), len(live))
        start = 0
        for p in live:
            stop = start + len(p.features)
            if not p.done.done():
                p.done.set_result(logits[start:stop])
            start = stop
