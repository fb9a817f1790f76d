"""A keyed work queue: each key is processed by one worker at a time, events coalesce.

The same contract as client-go's workqueue, which Kubernetes controllers are built on:

* ``add(key)`` while the key waits: nothing more (one pass will see the latest state).
* ``add(key)`` while the key is being processed: it runs once more right after.
* a failed pass asks for a delay; until it expires ``add(key)`` does not shorten it, so a burst
  of events cannot turn a backoff (or a server's ``Retry-After``) into a tight loop.
* at most ``concurrency`` keys are processed at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

Process = Callable[[K], Awaitable[float | None]]
"""Processes one key; returns ``None`` when done, or seconds to wait before trying again."""


class WorkQueue(Generic[K]):
    """Coalescing, per-key serialized, concurrency-limited processing of keys."""

    def __init__(self, process: Process[K], *, concurrency: int) -> None:
        self._process = process
        self._concurrency = concurrency
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._delayed: dict[K, asyncio.TimerHandle] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self.processed = 0

    @property
    def depth(self) -> int:
        """Keys waiting (ready or delayed)."""
        return len(self._queued) + len(self._delayed)

    @property
    def active(self) -> int:
        """Keys being processed now."""
        return len(self._active)

    def add(self, key: K) -> None:
        """Ask for ``key`` to be processed (soon, unless it is backing off)."""
        if key in self._delayed:
            return
        if key in self._active:
            self._dirty.add(key)
            return
        self._enqueue(key)

    def add_after(self, key: K, delay: float) -> None:
        """Process ``key`` after ``delay`` seconds (no sooner, whatever else is added)."""
        if delay <= 0:
            self.add(key)
            return
        if key in self._delayed or key in self._queued:
            return
        self._idle.clear()
        loop = asyncio.get_running_loop()
        self._delayed[key] = loop.call_later(delay, self._due, key)

    def _due(self, key: K) -> None:
        self._delayed.pop(key, None)
        if key in self._active:
            self._dirty.add(key)
        else:
            self._enqueue(key)

    def _enqueue(self, key: K) -> None:
        if key in self._queued:
            return
        self._idle.clear()
        self._queued.add(key)
        self._ready.put_nowait(key)

    def start(self) -> None:
        """Start the workers (in the running loop)."""
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"ferry-worker-{index}")
                for index in range(self._concurrency)
            ]

    async def stop(self) -> None:
        """Stop the workers; pending delayed keys are dropped."""
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    async def join(self) -> None:
        """Wait until nothing is queued, delayed or being processed."""
        await self._idle.wait()

    def _check_idle(self) -> None:
        if not self._queued and not self._active and not self._delayed:
            self._idle.set()

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._active.add(key)
            self._dirty.discard(key)
            delay: float | None = None
            try:
                delay = await self._process(key)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in processing must not kill the worker
                logger.exception("processing %r failed", key)
                delay = 60.0
            finally:
                self._active.discard(key)
                self.processed += 1
            if delay is not None:
                self._dirty.discard(key)
                self.add_after(key, delay)
            elif key in self._dirty:
                self._dirty.discard(key)
                self._enqueue(key)
            self._check_idle()
