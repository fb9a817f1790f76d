"""A front end's engine: the compute process, reached over the data channel.

``RemoteEngine`` is the DataPlane's ``Engine`` in a front-end process, served by the event loop:
requests submitted during one loop iteration (REST on the loop, gRPC handler threads through
one wake-up of the loop per burst) leave as one message at the end of the iteration, and the
answers are read and resolved on the loop, with no thread in between. ``RemoteStats`` answers
``ModelStatistics`` from the compute process, which records every request and batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ferry_runtime.frontends import channel as wire
from ferry_runtime.frontends.channel import BlockingChannel, ChannelProtocol, Message
from ferry_runtime.protocol.errors import QueueFullError, UnavailableError
from ferry_runtime.stats import BatchTiming

log = logging.getLogger(__name__)

Outputs = list[np.ndarray]
AnyFuture = asyncio.Future[Outputs] | concurrent.futures.Future[Outputs]
Request = tuple[int, list[wire.PackedArray], int]

CALL_TIMEOUT_S = 5.0
"""Longest wait for the compute process to answer a statistics or metrics question."""


class RemoteEngine:
    """``Engine`` over the channels to the compute process (front-end side).

    ``on_state(ready, device)`` and ``on_lost()`` run on the loop; ``exposition()`` renders
    this process's metrics when the compute process gathers them for a scrape.
    """

    def __init__(
        self,
        control: BlockingChannel,
        max_outstanding: int,
        *,
        on_state: Callable[[bool, str], None],
        on_lost: Callable[[], None],
        exposition: Callable[[], bytes],
    ) -> None:
        self._control = control
        self._control_lock = threading.Lock()
        self._max_outstanding = max_outstanding
        self._on_state = on_state
        self._on_lost = on_lost
        self._exposition = exposition
        self._ids = itertools.count()
        self._waiting: dict[int, AnyFuture] = {}
        self._pending: list[Request] = []
        self._pending_lock = threading.Lock()
        self._flush_scheduled = False
        self._data: ChannelProtocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def connect(self, data: socket.socket) -> None:
        """Serve the data channel on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._data = await wire.serve_channel(data, self._on_messages, self._lost)

    def announce_listening(self) -> None:
        """Tell the compute process that both servers are bound."""
        if self._data is not None:
            self._data.send((wire.LISTENING,))

    # ---- Engine ----------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Whether the compute process is still there."""
        return self._data is not None and self._data.open

    @property
    def full(self) -> bool:
        """Whether a request now would be refused here (the compute process may refuse too)."""
        return not self.alive or len(self._waiting) >= self._max_outstanding

    def submit(self, inputs: Sequence[np.ndarray], rows: int) -> asyncio.Future[Outputs]:
        """Queue one request from the event loop; sent when the loop iteration ends."""
        loop = self._check_intake()
        future: asyncio.Future[Outputs] = loop.create_future()
        self._queue(future, inputs, rows)
        return future

    def submit_threadsafe(
        self, inputs: Sequence[np.ndarray], rows: int
    ) -> concurrent.futures.Future[Outputs]:
        """Queue one request from any thread; sent by the loop with the others of its burst."""
        self._check_intake()
        future: concurrent.futures.Future[Outputs] = concurrent.futures.Future()
        self._queue(future, inputs, rows)
        return future

    def _check_intake(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or not self.alive:
            raise UnavailableError("the compute process is gone")
        if len(self._waiting) >= self._max_outstanding:
            raise QueueFullError(
                f"inference queue is full ({self._max_outstanding} requests waiting); retry later"
            )
        return loop

    def _queue(self, future: AnyFuture, inputs: Sequence[np.ndarray], rows: int) -> None:
        request_id = next(self._ids)
        self._waiting[request_id] = future
        with self._pending_lock:
            self._pending.append((request_id, wire.pack_arrays(inputs), rows))
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        loop = self._loop
        assert loop is not None
        if isinstance(future, asyncio.Future):
            loop.call_soon(self._flush)
        else:
            loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, []
            self._flush_scheduled = False
        if pending and self._data is not None:
            self._data.send((wire.INFER, pending))

    # ---- the data channel (on the loop) ----------------------------------------------------

    def _on_messages(self, messages: list[Message]) -> None:
        for message in messages:
            kind = message[0]
            if kind == wire.ANSWERS:
                self._resolve(message[1])
            elif kind == wire.STATE:
                self._on_state(bool(message[1]), str(message[2]))
            elif kind == wire.CALL and self._data is not None:
                self._data.send((wire.REPLY, message[1], self._exposition()))

    def _resolve(self, answers: list[tuple[int, bool, Any]]) -> None:
        for request_id, ok, payload in answers:
            future = self._waiting.pop(request_id, None)
            if future is None or future.done():  # a REST client that went away
                continue
            if ok:
                future.set_result(wire.unpack_arrays(payload))
            else:
                future.set_exception(payload)

    def _lost(self) -> None:
        log.debug("data channel to the compute process closed")
        error = UnavailableError("the compute process is gone")
        waiting = list(self._waiting)
        self._resolve([(request_id, False, error) for request_id in waiting])
        self._on_lost()

    # ---- questions (control channel) -------------------------------------------------------

    def call(self, what: str, payload: object = None) -> Any:
        """Ask the compute process (``"stats"``, ``"metrics"``) and wait for the answer."""
        token = next(self._ids)
        with self._control_lock:
            try:
                self._control.send((wire.CALL, token, what, payload))
                while True:
                    reply = self._control.recv(timeout=CALL_TIMEOUT_S)
                    if reply[0] == wire.REPLY and reply[1] == token:
                        return reply[2]
            except (OSError, EOFError):  # TimeoutError is an OSError
                raise UnavailableError(f"the compute process did not answer ({what})") from None


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
