"""Idempotency for calls: run each idempotency key once, answer repeats from memory.

Workers deliver tasks at least once (a reclaimed task, a retried script call), so the same call
can arrive twice. A bounded LRU maps ``(function, idempotency_key)`` to the outcome of a finished
run; a key that is running right now maps to a future that later callers await instead of
starting a second run. The memory is per process: a restarted service runs a repeated key again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Hashable

from .protocol import Result


class ResultCache:
    """Finished outcomes (bounded, least recently used dropped first) and runs in progress."""

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"dedup capacity must be an integer >= 0, got {capacity!r}")
        self.capacity = capacity
        self._done: OrderedDict[Hashable, Result] = OrderedDict()
        self._running: dict[Hashable, asyncio.Future[Result]] = {}

    def __len__(self) -> int:
        return len(self._done)

    def get(self, key: Hashable) -> Result | None:
        """The recorded outcome for ``key`` (marking it recently used), or ``None``."""
        result = self._done.get(key)
        if result is not None:
            self._done.move_to_end(key)
        return result

    def running(self, key: Hashable) -> asyncio.Future[Result] | None:
        """The future of the run in progress for ``key``, or ``None``."""
        return self._running.get(key)

    def begin(self, key: Hashable) -> asyncio.Future[Result]:
        """Mark ``key`` as running; later callers await the returned future."""
        if key in self._running:
            raise RuntimeError(f"a run for {key!r} is already in progress")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        return future

    def finish(self, key: Hashable, result: Result, remember: bool) -> None:
        """End the run for ``key``: wake its waiters with ``result`` and, if ``remember``,
        record it for later repeats."""
        future = self._running.pop(key, None)
        if future is not None and not future.done():
            future.set_result(result)
        if remember and self.capacity > 0:
            self._done[key] = result
            self._done.move_to_end(key)
            while len(self._done) > self.capacity:
                self._done.popitem(last=False)

    def abandon(self, key: Hashable) -> None:
        """End the run for ``key`` without an outcome (the service is stopping): waiters are
        cancelled and nothing is recorded, so a later call runs again."""
        future = self._running.pop(key, None)
        if future is not None and not future.done():
            future.cancel()
