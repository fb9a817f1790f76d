"""The compute process's side of the front-end channels: queue the front ends' requests in the
batcher and send the answers back.

Per front end, a reader thread unpickles each message and queues its requests with
``submit_threadsafe``; the compute thread resolves the futures, whose callbacks only append
the answer to the front end's outbox; a writer thread sends everything in the outbox as one
message. So the compute thread pays a list append per request, and a busy front end gets many
answers per write.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from ferry_runtime.dataplane import Engine
from ferry_runtime.frontends import channel as wire
from ferry_runtime.frontends.channel import Channel, Message
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


class _Peer:
    """One front end: its channel, its outbox and the threads that serve them."""

    def __init__(self, index: int, channel: Channel) -> None:
        self.index = index
        self.channel = channel
        self.listening = threading.Event()
        self.requests = 0
        self._outbox: list[Answer] = []
        self._cond = threading.Condition(threading.Lock())
        self._closed = False

    def answer(self, item: Answer) -> None:
        with self._cond:
            self._outbox.append(item)
            if len(self._outbox) == 1:
                self._cond.notify()

    def write_answers(self) -> None:
        """Writer thread: send the outbox, as one message per wake-up, until closed."""
        while True:
            with self._cond:
                while not self._outbox and not self._closed:
                    self._cond.wait()
                if self._closed and not self._outbox:
                    return
                items, self._outbox = self._outbox, []
            try:
                self.channel.send((wire.ANSWERS, items))
            except OSError:
                return

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()


class EngineService:
    """Serves one engine (the batcher) to the front ends' channels.

    ``render_own`` renders the compute process's metrics; ``on_lost`` is called (from a
    reader thread) with a front end's index when its channel closes.
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
        self._peers: list[_Peer] = []
        self._stopping = False
        self._tokens = itertools.count()
        self._replies: dict[int, concurrent.futures.Future[Any]] = {}

    @property
    def peers(self) -> Sequence[_Peer]:
        """The front ends served, in the order they were added."""
        return self._peers

    def attach(self, engine: Engine) -> None:
        """Queue requests into ``engine`` from now on (before: answered as unavailable)."""
        self._engine = engine

    def serve(self, channel: Channel) -> _Peer:
        """Start serving one front end's channel."""
        peer = _Peer(len(self._peers), channel)
        self._peers.append(peer)
        workers: tuple[tuple[Callable[[], None], str], ...] = (
            (partial(self._read, peer), "reader"),
            (peer.write_answers, "writer"),
        )
        for target, role in workers:
            name = f"ferry-frontend-{peer.index}-{role}"
            threading.Thread(target=target, name=name, daemon=True).start()
        return peer

    def broadcast(self, message: Message) -> None:
        """Send ``message`` to every front end still connected."""
        for peer in self._peers:
            try:
                peer.channel.send(message)
            except OSError:
                continue

    def expect_exits(self) -> None:
        """The front ends are being stopped: a closing channel is no longer an error."""
        self._stopping = True

    def stop(self) -> None:
        """Stop serving: the channels close, the threads end."""
        self._stopping = True
        for peer in self._peers:
            peer.close()
            peer.channel.shutdown()

    # ---- reader threads --------------------------------------------------------------------

    def _read(self, peer: _Peer) -> None:
        try:
            while True:
                message = peer.channel.recv()
                kind = message[0]
                if kind == wire.INFER:
                    for request_id, inputs, rows in message[1]:
                        self._submit(peer, request_id, inputs, rows)
                    peer.requests += len(message[1])
                elif kind == wire.CALL:
                    _, token, what, payload = message
                    if what == "metrics":  # waits for the other front ends: not on this thread
                        threading.Thread(
                            target=self._answer_metrics, args=(peer, token, payload), daemon=True
                        ).start()
                    else:
                        peer.channel.send((wire.REPLY, token, self._call(what)))
                elif kind == wire.REPLY:
                    reply = self._replies.get(message[1])
                    if reply is not None and not reply.done():
                        reply.set_result(message[2])
                elif kind == wire.LISTENING:
                    peer.listening.set()
                else:
                    raise OSError(f"unknown message kind {kind!r} from front end {peer.index}")
        except (EOFError, OSError) as error:
            peer.close()
            if not self._stopping:
                log.error("front end %d is gone: %s", peer.index, error or "channel closed")
                self._on_lost(peer.index)

    def _submit(self, peer: _Peer, request_id: int, inputs: list[np.ndarray], rows: int) -> None:
        started = time.perf_counter_ns()
        engine = self._engine
        try:
            if engine is None:
                raise UnavailableError(f"model {self._signature.name!r} is not ready (loading)")
            future = engine.submit_threadsafe(inputs, rows)
        except Exception as error:  # refused at intake: queue full, stopping, too many rows
            self._stats.record_request(False, time.perf_counter_ns() - started)
            peer.answer((request_id, False, _portable(error)))
            return
        future.add_done_callback(partial(self._answered, peer, request_id, started))

    def _answered(
        self,
        peer: _Peer,
        request_id: int,
        started: int,
        future: concurrent.futures.Future[list[np.ndarray]],
    ) -> None:
        error = future.exception()
        self._stats.record_request(error is None, time.perf_counter_ns() - started)
        if error is None:
            peer.answer((request_id, True, future.result()))
        else:
            peer.answer((request_id, False, _portable(error)))

    def _call(self, what: str) -> object:
        if what == "stats":
            signature = self._signature
            return self._stats.as_dict(signature.name, signature.version)
        return None

    def _answer_metrics(self, caller: _Peer, token: int, fresh: object) -> None:
        """Every process's series now: ours, the caller's (sent with the question) and each
        other front end's (asked for, a bounded wait each)."""
        texts = [self._render_own(), fresh if isinstance(fresh, bytes) else b""]
        asked: dict[int, concurrent.futures.Future[Any]] = {}
        for peer in self._peers:
            if peer is caller:
                continue
            question = next(self._tokens)
            asked[question] = self._replies[question] = concurrent.futures.Future()
            try:
                peer.channel.send((wire.CALL, question, "exposition", None))
            except OSError:
                del asked[question]
                self._replies.pop(question, None)
        deadline = time.monotonic() + EXPOSITION_TIMEOUT_S
        for question, reply in asked.items():
            try:
                text = reply.result(timeout=max(0.0, deadline - time.monotonic()))
            except concurrent.futures.TimeoutError:
                continue
            finally:
                self._replies.pop(question, None)
            if isinstance(text, bytes):
                texts.append(text)
        try:
            caller.channel.send((wire.REPLY, token, merge_expositions(texts)))
        except OSError:
            return


def _portable(error: BaseException) -> InferenceServerError:
    """The error as the front end raises it: Ferry's own errors travel as they are."""
    if isinstance(error, InferenceServerError):
        return error
    return InferenceFailedError(f"inference failed: {type(error).__name__}: {error}"[:1000])
