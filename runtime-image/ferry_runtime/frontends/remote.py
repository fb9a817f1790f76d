"""A front end's engine: the compute process, reached over the channel.

``RemoteEngine`` is the DataPlane's ``Engine`` in a front-end process. Requests submitted on
the event loop during one loop iteration leave as one message (flushed by a callback at the
end of the iteration); gRPC handler threads send theirs at once. A receiver thread resolves
the futures: thread futures there, the loop's with one ``call_soon_threadsafe`` per message.
``RemoteStats`` answers ``ModelStatistics`` from the compute process, which records every
request and batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ferry_runtime.frontends import channel as wire
from ferry_runtime.frontends.channel import Channel
from ferry_runtime.protocol.errors import QueueFullError, UnavailableError
from ferry_runtime.stats import BatchTiming

log = logging.getLogger(__name__)

Outputs = list[np.ndarray]
AnyFuture = asyncio.Future[Outputs] | concurrent.futures.Future[Outputs]
StateCallback = Callable[[bool, str], object]

CALL_TIMEOUT_S = 5.0
"""Longest wait for the compute process to answer a statistics or metrics question."""


class RemoteEngine:
    """``Engine`` over a channel to the compute process (front-end side)."""

    def __init__(self, channel: Channel, max_outstanding: int) -> None:
        self._channel = channel
        self._max_outstanding = max_outstanding
        self._ids = itertools.count()
        self._waiting: dict[int, AnyFuture] = {}
        self._replies: dict[int, concurrent.futures.Future[Any]] = {}
        self._pending: list[tuple[int, Sequence[np.ndarray], int]] = []
        self._flush_scheduled = False
        self._open = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_state: StateCallback | None = None
        self._on_lost: Callable[[], object] | None = None
        self._exposition: Callable[[], bytes] = bytes

    def start(
        self,
        on_state: StateCallback,
        on_lost: Callable[[], object],
        exposition: Callable[[], bytes],
    ) -> None:
        """Start receiving (call on the event loop that will submit); ``exposition`` renders
        this process's metrics when the compute process asks for them."""
        self._loop = asyncio.get_running_loop()
        self._exposition = exposition
        self._on_state = on_state
        self._on_lost = on_lost
        threading.Thread(target=self._receive, name="ferry-frontend-receiver", daemon=True).start()

    # ---- Engine ----------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Whether the compute process is still there."""
        return self._open

    @property
    def full(self) -> bool:
        """Whether a request now would be refused here (the compute process may refuse too)."""
        return not self._open or len(self._waiting) >= self._max_outstanding

    def submit(self, inputs: Sequence[np.ndarray], rows: int) -> asyncio.Future[Outputs]:
        """Queue one request from the event loop; sent when the loop iteration ends."""
        loop = self._loop
        if loop is None:
            raise UnavailableError("front end is not connected to the compute process")
        self._check_intake()
        request_id = next(self._ids)
        future: asyncio.Future[Outputs] = loop.create_future()
        self._waiting[request_id] = future
        self._pending.append((request_id, inputs, rows))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def submit_threadsafe(
        self, inputs: Sequence[np.ndarray], rows: int
    ) -> concurrent.futures.Future[Outputs]:
        """Queue one request from any thread; sent at once."""
        self._check_intake()
        request_id = next(self._ids)
        future: concurrent.futures.Future[Outputs] = concurrent.futures.Future()
        self._waiting[request_id] = future
        try:
            self._channel.send((wire.INFER, [(request_id, inputs, rows)]))
        except OSError:
            self._waiting.pop(request_id, None)
            raise UnavailableError("the compute process is gone") from None
        return future

    def _check_intake(self) -> None:
        if not self._open:
            raise UnavailableError("the compute process is gone")
        if len(self._waiting) >= self._max_outstanding:
            raise QueueFullError(
                f"inference queue is full ({self._max_outstanding} requests waiting); retry later"
            )

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            self._channel.send((wire.INFER, pending))
        except OSError:
            self._fail_all(UnavailableError("the compute process is gone"))

    # ---- questions -------------------------------------------------------------------------

    def call(self, what: str, payload: object = None) -> Any:
        """Ask the compute process (``"stats"``, ``"metrics"``) and wait for the answer."""
        if not self._open:
            raise UnavailableError("the compute process is gone")
        token = next(self._ids)
        reply: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._replies[token] = reply
        try:
            self._channel.send((wire.CALL, token, what, payload))
            return reply.result(timeout=CALL_TIMEOUT_S)
        except (OSError, concurrent.futures.TimeoutError):
            raise UnavailableError(f"the compute process did not answer ({what})") from None
        finally:
            self._replies.pop(token, None)

    # ---- receiver thread -------------------------------------------------------------------

    def _receive(self) -> None:
        try:
            while True:
                message = self._channel.recv()
                kind = message[0]
                if kind == wire.ANSWERS:
                    self._resolve(message[1])
                elif kind == wire.REPLY:
                    reply = self._replies.get(message[1])
                    if reply is not None and not reply.done():
                        reply.set_result(message[2])
                elif kind == wire.CALL:  # the compute process gathers every front end's metrics
                    self._channel.send((wire.REPLY, message[1], self._exposition()))
                elif kind == wire.STATE and self._on_state is not None:
                    self._on_state(bool(message[1]), str(message[2]))
        except (EOFError, OSError) as error:
            log.debug("channel to the compute process closed: %s", error)
        self._open = False
        self._fail_all(UnavailableError("the compute process is gone"))
        if self._on_lost is not None:
            self._on_lost()

    def _resolve(self, answers: list[tuple[int, bool, Any]]) -> None:
        on_loop: list[tuple[asyncio.Future[Outputs], bool, Any]] = []
        for request_id, ok, payload in answers:
            future = self._waiting.pop(request_id, None)
            if future is None:
                continue
            if isinstance(future, asyncio.Future):
                on_loop.append((future, ok, payload))
            elif ok:
                future.set_result(payload)
            else:
                future.set_exception(payload)
        loop = self._loop
        if on_loop and loop is not None:
            # the loop closed during shutdown: nobody waits any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, on_loop)

    def _fail_all(self, error: Exception) -> None:
        waiting = list(self._waiting.items())
        self._waiting.clear()
        self._resolve([(request_id, False, error) for request_id, _ in waiting])


def _deliver(answers: list[tuple[asyncio.Future[Outputs], bool, Any]]) -> None:
    for future, ok, payload in answers:
        if future.done():  # the client went away
            continue
        if ok:
            future.set_result(payload)
        else:
            future.set_exception(payload)


class RemoteStats:
    """Statistics kept by the compute process; this front end records nothing itself."""

    def __init__(self, engine: RemoteEngine) -> None:
        self._engine = engine

    def record_request(self, ok: bool, ns: int) -> None:
        """The compute process records every request itself."""

    def record_batch(self, timing: BatchTiming, queue_ns: int) -> None:
        """Batches run in the compute process, which records them."""

    def as_dict(self, name: str, version: str) -> dict[str, Any]:
        """The compute process's ``model_stats`` entry."""
        answer = self._engine.call("stats")
        if not isinstance(answer, dict):
            raise UnavailableError("the compute process sent no statistics")
        return answer
