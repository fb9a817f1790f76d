"""The compute process's side of the front-end channels, served by its event loop.

Requests from a front end's data channel go into the batcher with ``submit``, the same
event-loop path REST takes in a single process: the compute thread hands each finished batch
back to the loop with one ``call_soon_threadsafe``, and the loop sends every answer that is
ready as one message per front end. The compute thread never touches a socket.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from ferry_runtime.dataplane import Engine
from ferry_runtime.frontends import channel as wire
from ferry_runtime.frontends.channel import ChannelProtocol, Message
from ferry_runtime.frontends.exposition import merge_expositions
from ferry_runtime.protocol.errors import (
    InferenceFailedError,
    InferenceServerError,
    UnavailableError,
)
from ferry_runtime.protocol.types import ModelSignature
from ferry_runtime.stats import StatsKeeper

log = logging.getLogger(__name__)

Answer = tuple[int, bool, Any]

EXPOSITION_TIMEOUT_S = 2.0
"""Longest wait for the other front ends' metrics when one of them is scraped."""


class Peer:
    """One front end as the compute process sees it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.listening = asyncio.Event()
        self.requests = 0
        self.data: ChannelProtocol | None = None
        self.control: ChannelProtocol | None = None
        self._outbox: list[Answer] = []

    def answer(self, item: Answer) -> None:
        """Queue an answer; everything queued in one loop iteration leaves as one message."""
        self._outbox.append(item)
        if len(self._outbox) == 1:
            asyncio.get_running_loop().call_soon(self._send_answers)

    def _send_answers(self) -> None:
        items, self._outbox = self._outbox, []
        if items and self.data is not None:
            self.data.send((wire.ANSWERS, items))


class EngineService:
    """Serves one engine (the batcher) to the front ends' channels (on the event loop).

    ``render_own`` renders the compute process's metrics; ``on_lost`` gets a front end's
    index when its data channel closes unexpectedly.
    """

    def __init__(
        self,
        signature: ModelSignature,
        stats: StatsKeeper,
        render_own: Callable[[], bytes],
        on_lost: Callable[[int], None],
    ) -> None:
        self._signature = signature
        self._stats = stats
        self._render_own = render_own
        self._on_lost = on_lost
        self._engine: Engine | None = None
        self._peers: list[Peer] = []
        self._stopping = False
        self._tokens = itertools.count()
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def peers(self) -> Sequence[Peer]:
        """The front ends served, in the order they were added."""
        return self._peers

    def attach(self, engine: Engine) -> None:
        """Queue requests into ``engine`` from now on (before: answered as unavailable)."""
        self._engine = engine

    async def serve(self, data: socket.socket, control: socket.socket) -> Peer:
        """Serve one front end's two channels on the running loop."""
        peer = Peer(len(self._peers))
        self._peers.append(peer)
        peer.data = await wire.serve_channel(
            data, partial(self._on_data, peer), partial(self._lost, peer)
        )
        peer.control = await wire.serve_channel(
            control, partial(self._on_control, peer), lambda: None
        )
        return peer

    def broadcast(self, message: Message) -> None:
        """Send ``message`` on every front end's data channel."""
        for peer in self._peers:
            if peer.data is not None:
                peer.data.send(message)

    def expect_exits(self) -> None:
        """The front ends are being stopped: a closing channel is no longer an error."""
        self._stopping = True

    def close(self) -> None:
        """Close every channel."""
        self._stopping = True
        for peer in self._peers:
            for protocol in (peer.data, peer.control):
                if protocol is not None:
                    protocol.close()

    # ---- data channels ---------------------------------------------------------------------

    def _on_data(self, peer: Peer, messages: list[Message]) -> None:
        for message in messages:
            kind = message[0]
            if kind == wire.INFER:
                for request_id, inputs, rows in message[1]:
                    self._submit(peer, request_id, wire.unpack_arrays(inputs), rows)
                peer.requests += len(message[1])
            elif kind == wire.REPLY:
                reply = self._replies.get(message[1])
                if reply is not None and not reply.done():
                    reply.set_result(message[2])
            elif kind == wire.LISTENING:
                peer.listening.set()

    def _submit(self, peer: Peer, request_id: int, inputs: list[np.ndarray], rows: int) -> None:
        started = time.perf_counter_ns()
        engine = self._engine
        try:
            if engine is None:
                raise UnavailableError(f"model {self._signature.name!r} is not ready (loading)")
            future = engine.submit(inputs, rows)
        except Exception as error:  # refused at intake: queue full, stopping, too many rows
            self._stats.record_request(False, time.perf_counter_ns() - started)
            peer.answer((request_id, False, _portable(error)))
            return
        future.add_done_callback(partial(self._answered, peer, request_id, started))

    def _answered(
        self,
        peer: Peer,
        request_id: int,
        started: int,
        future: asyncio.Future[list[np.ndarray]],
    ) -> None:
        error = UnavailableError("cancelled") if future.cancelled() else future.exception()
        self._stats.record_request(error is None, time.perf_counter_ns() - started)
        if error is None:
            peer.answer((request_id, True, wire.pack_arrays(future.result())))
        else:
            peer.answer((request_id, False, _portable(error)))

    def _lost(self, peer: Peer) -> None:
        if not self._stopping:
            log.error("front end %d is gone", peer.index)
            self._on_lost(peer.index)

    # ---- control channels ------------------------------------------------------------------

    def _on_control(self, peer: Peer, messages: list[Message]) -> None:
        for message in messages:
            if message[0] != wire.CALL or peer.control is None:
                continue
            _, token, what, payload = message
            if what == "metrics":
                task = asyncio.ensure_future(self._answer_metrics(peer, token, payload))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif what == "stats":
                signature = self._signature
                stats = self._stats.as_dict(signature.name, signature.version)
                peer.control.send((wire.REPLY, token, stats))
            else:
                peer.control.send((wire.REPLY, token, None))

    async def _answer_metrics(self, caller: Peer, token: int, fresh: object) -> None:
        """Every process's series now: ours, the caller's (sent with the question) and each
        other front end's (asked for, one bounded wait for all)."""
        texts = [self._render_own(), fresh if isinstance(fresh, bytes) else b""]
        loop = asyncio.get_running_loop()
        asked: dict[int, asyncio.Future[Any]] = {}
        for peer in self._peers:
            if peer is caller or peer.data is None or not peer.data.open:
                continue
            question = next(self._tokens)
            asked[question] = self._replies[question] = loop.create_future()
            peer.data.send((wire.CALL, question, "exposition"))
        try:
            if asked:
                await asyncio.wait(asked.values(), timeout=EXPOSITION_TIMEOUT_S)
        finally:
            for question in asked:
                self._replies.pop(question, None)
        for reply in asked.values():
            if reply.done() and isinstance(reply.result(), bytes):
                texts.append(reply.result())
        if caller.control is not None:
            caller.control.send((wire.REPLY, token, merge_expositions(texts)))


def _portable(error: BaseException) -> InferenceServerError:
    """The error as the front end raises it: Ferry's own errors travel as they are."""
    if isinstance(error, InferenceServerError):
        return error
    return InferenceFailedError(f"inference failed: {type(error).__name__}: {error}"[:1000])
