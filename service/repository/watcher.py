"""Hot reload: poll the model repository and apply what changed, in the background.

Every ``interval`` seconds the watcher asks the registry to compare the repository
with what it serves (a directory listing and a few ``stat`` calls when nothing
changed). New versions are loaded, verified and warmed up in a worker thread while
the current ones keep answering, then swapped in. Each worker process of a
multi-worker server runs its own watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from service.repository.registry import ModelRegistry

log = logging.getLogger("service.repository.watcher")


class RepositoryWatcher:
    """Polls ``registry``'s repository every ``interval`` seconds (0: never)."""

    def __init__(self, registry: ModelRegistry, interval: float) -> None:
        if interval < 0:
            raise ValueError(f"expected a poll interval >= 0 seconds, received {interval}")
        self.registry = registry
        self.interval = interval
        self.polls = 0

    async def run(self, after: Awaitable[object] | None = None) -> None:
        """Wait for ``after`` (the initial load), then poll until cancelled."""
        if after is not None:
            with contextlib.suppress(Exception):  # reported where it failed; polling may recover
                await after
        if self.interval == 0:
            return
        log.info("watching %s every %g s", self.registry.repository, self.interval)
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.registry.poll)
            except Exception:  # a bad moment on disk must not end hot reload for good
                log.exception("polling the model repository failed; trying again")
            self.polls += 1
