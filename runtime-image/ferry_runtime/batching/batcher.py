"""The dynamic batcher: a bounded queue, a future per request, one compute thread.

Threads and hand-offs
    ``submit`` runs on the event loop (REST): it appends the request to the queue (under a
    lock) and returns an asyncio future. ``submit_threadsafe`` does the same from any thread
    (the gRPC handler threads) and returns a ``concurrent.futures.Future``. One dedicated
    compute thread takes batches from the queue, merges them, runs the model's forward pass
    under its ``thread_context()`` (``torch.inference_mode()`` for TorchScript) and splits the
    outputs. It resolves the thread futures itself and hands the batch's asyncio futures back
    to the loop with a single ``call_soon_threadsafe`` (none when the batch holds none).

Batch policy (when does a batch close?)
    The compute thread is the only consumer, so a batch closes only when the thread is free.
    It then closes as soon as one of these holds, taking requests in arrival order:

    1. the queued rows (of the head request's shape) reach the *fill goal*;
    2. the oldest queued request has waited ``max_queue_delay``;
    3. the server is draining (no point waiting for requests that will not come).

    The fill goal is the recent concurrency: the largest number of rows that were in the server
    at once since the previous batch (queued or computing), decaying by half per batch when
    load drops, capped at ``max_batch_size`` (and at the largest preferred size, if any).
    So a lone request at low load finds a goal of 1 and runs at once (its latency is the
    forward time, it never sits out the queue delay), while under load the goal tracks the
    number of clients and batches fill up to it, bounded by the delay. Requests arriving while
    a batch computes simply queue and form the next batch.

    The batch then takes whole requests while they fit in ``max_batch_size`` rows; with
    ``preferred_batch_sizes`` it is cut at the largest preferred size a prefix reaches.
    Requests whose non-batch shapes differ from the head's are left for a later batch.

Failure and overload
    A full queue (``max_queue_size`` requests) refuses new requests at once with
    ``QueueFullError`` (503 / UNAVAILABLE). An exception in a batch fails every request of that
    batch with ``InferenceFailedError`` naming the cause; the thread carries on.

With batching disabled every request is its own batch, still on the one compute thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np

from ferry_runtime.batching.batch import (
    Signature,
    choose_batch,
    fill_goal,
    merge,
    signature_of,
    split,
)
from ferry_runtime.metrics import Metrics
from ferry_runtime.model.base import Model
from ferry_runtime.protocol.errors import (
    InferenceFailedError,
    QueueFullError,
    UnavailableError,
)
from ferry_runtime.stats import BatchTiming

log = logging.getLogger(__name__)

DECAY = 0.5
"""How fast the concurrency estimate forgets a burst (factor per batch)."""

BatchCallback = Callable[[BatchTiming, int], None]
"""Called on the compute thread after each executed batch (timing, summed queue ns)."""
Outputs = list[np.ndarray]
LoopFuture = asyncio.Future[Outputs]
ThreadFuture = concurrent.futures.Future[Outputs]


@dataclass(frozen=True, slots=True)
class BatchingOptions:
    """Batcher knobs (from the ``FERRY_RUNTIME_*`` settings)."""

    enabled: bool = True
    max_batch_size: int = 32
    max_queue_delay_s: float = 0.005
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 1024


class _Request:
    __slots__ = ("enqueued", "future", "inputs", "on_loop", "rows", "signature")

    def __init__(
        self,
        inputs: Sequence[np.ndarray],
        rows: int,
        signature: Signature,
        future: LoopFuture | ThreadFuture,
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.signature = signature
        self.future = future
        self.on_loop = isinstance(future, asyncio.Future)
        self.enqueued = time.perf_counter()


class Batcher:
    """Queue + compute thread for one model. Create, ``start()`` on the loop, ``stop()``."""

    def __init__(
        self,
        model: Model,
        options: BatchingOptions,
        *,
        metrics: Metrics | None = None,
        on_batch: BatchCallback | None = None,
    ) -> None:
        self._model = model
        self._options = options
        self._metrics = metrics
        self._on_batch = on_batch
        self._max_rows = options.max_batch_size
        self._max_queue = options.max_queue_size
        self._delay = options.max_queue_delay_s
        self._preferred = tuple(sorted(options.preferred_batch_sizes))
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Request] = deque()
        self._rows_by_signature: dict[Signature, int] = {}
        self._outstanding = 0
        self._peak = 0
        self._estimate = 1.0
        self._wake_rows = 0
        self._wake_signature: Signature | None = None
        self._stopping = False
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- event-loop side -------------------------------------------------------------------

    def start(self) -> None:
        """Start the compute thread; call from the event loop that will submit."""
        if self._thread is not None:
            raise RuntimeError("batcher already started")
        self._loop = asyncio.get_running_loop()
        if self._metrics is not None:
            queue = self._queue
            self._metrics.queue_depth.set_function(lambda: len(queue))
        self._thread = threading.Thread(target=self._run, name="ferry-compute", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the compute thread is running."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    @property
    def full(self) -> bool:
        """Whether a new request would be refused now (queue full, stopping or failed)."""
        return len(self._queue) >= self._max_queue or self._stopping or self._failure is not None

    def submit(self, inputs: Sequence[np.ndarray], rows: int) -> LoopFuture:
        """Queue one request (``rows`` rows) from the event loop thread.

        The asyncio future resolves to the request's output slices.
        """
        loop = self._check_intake(rows)
        future: LoopFuture = loop.create_future()
        self._enqueue(_Request(inputs, rows, signature_of(inputs), future))
        return future

    def submit_threadsafe(self, inputs: Sequence[np.ndarray], rows: int) -> ThreadFuture:
        """Queue one request from any thread; the compute thread resolves the future itself."""
        self._check_intake(rows)
        future: ThreadFuture = concurrent.futures.Future()
        self._enqueue(_Request(inputs, rows, signature_of(inputs), future))
        return future

    def _check_intake(self, rows: int) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or self._stopping or self._failure is not None:
            raise UnavailableError(
                "server is shutting down" if self._stopping else "compute thread is not running"
            )
        if rows > self._max_rows:
            raise ValueError(f"{rows} rows exceed the max batch size {self._max_rows}")
        if len(self._queue) >= self._max_queue:
            raise QueueFullError(
                f"inference queue is full ({self._max_queue} requests waiting); retry later"
            )
        return loop

    def _enqueue(self, request: _Request) -> None:
        rows, signature = request.rows, request.signature
        with self._cond:
            self._queue.append(request)
            queued = self._rows_by_signature.get(signature, 0) + rows
            self._rows_by_signature[signature] = queued
            self._outstanding += rows
            self._peak = max(self._peak, self._outstanding)
            wake = self._wake_rows
            if wake and queued >= wake and self._wake_signature in (None, signature):
                self._wake_rows = 0
                self._cond.notify()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop intake, let queued and computing requests finish, then end the thread.

        Requests still queued after ``grace_s`` seconds fail with ``UnavailableError``.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify()
        thread = self._thread
        if thread is None:
            return
        await asyncio.to_thread(thread.join, grace_s)
        if thread.is_alive():
            with self._cond:
                abandoned = list(self._queue)
                self._queue.clear()
                self._rows_by_signature.clear()
            for request in abandoned:
                _fail(request, UnavailableError("server shut down before this request could run"))
            log.warning("drain timed out; %d queued requests failed", len(abandoned))
        # let the thread's last call_soon_threadsafe deliveries run
        await asyncio.sleep(0)

    @staticmethod
    def _deliver(
        batch: list[_Request],
        pieces: list[list[np.ndarray]] | None,
        error: InferenceServerErrorFactory | None,
    ) -> None:
        """Resolve the requests' futures (on the thread that owns them)."""
        for index, request in enumerate(batch):
            if pieces is not None:
                _succeed(request, pieces[index])
            else:
                _fail(request, (error or _default_error)())

    # ---- compute thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with self._model.thread_context():
                while (batch := self._next_batch()) is not None:
                    self._execute(batch)
        except BaseException as error:  # pragma: no cover - a bug, not a model error
            log.exception("compute thread crashed")
            self._failure = error
            with self._cond:
                abandoned = list(self._queue)
                self._queue.clear()
            message = f"compute thread crashed: {type(error).__name__}: {error}"
            self._hand_back(abandoned, None, lambda: UnavailableError(message))

    def _next_batch(self) -> list[_Request] | None:
        cond = self._cond
        with cond:
            while True:
                queue = self._queue
                if not queue:
                    if self._stopping:
                        return None
                    self._wake_rows, self._wake_signature = 1, None
                    cond.wait()
                    continue
                head = queue[0]
                if not self._options.enabled or self._stopping:
                    break
                goal = fill_goal(
                    max(self._peak, self._estimate * DECAY), self._max_rows, self._preferred
                )
                if self._rows_by_signature[head.signature] >= goal:
                    break
                remaining = head.enqueued + self._delay - time.perf_counter()
                if remaining <= 0:
                    break
                self._wake_rows, self._wake_signature = goal, head.signature
                cond.wait(remaining)
            self._wake_rows = 0
            batch = self._take(head.signature) if self._options.enabled else [queue.popleft()]
            for request in batch:
                left = self._rows_by_signature[request.signature] - request.rows
                if left:
                    self._rows_by_signature[request.signature] = left
                else:
                    del self._rows_by_signature[request.signature]
            self._estimate = max(self._peak, self._estimate * DECAY)
            self._peak = self._outstanding
        return batch

    def _take(self, signature: Signature) -> list[_Request]:
        queue = self._queue
        limit = self._max_rows  # each request holds at least one row
        if len(self._rows_by_signature) == 1:
            rows = [request.rows for request in islice(queue, limit)]
            count = choose_batch(rows, self._max_rows, self._preferred)
            return [queue.popleft() for _ in range(count)]
        matching = [request for request in queue if request.signature == signature][:limit]
        count = choose_batch(
            [request.rows for request in matching], self._max_rows, self._preferred
        )
        chosen = matching[:count]
        taken = {id(request) for request in chosen}
        kept = [request for request in queue if id(request) not in taken]
        queue.clear()
        queue.extend(kept)
        return chosen

    def _execute(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        rows = [request.rows for request in batch]
        total_rows = sum(rows)
        pieces: list[list[np.ndarray]] | None = None
        error: InferenceServerErrorFactory | None = None
        timing: BatchTiming | None = None
        try:
            inputs = merge([request.inputs for request in batch])
            merged = time.perf_counter()
            outputs = self._model.forward(inputs)
            computed = time.perf_counter()
            pieces = split(outputs, rows)
            finished = time.perf_counter()
            timing = BatchTiming(
                batch_rows=total_rows,
                requests=len(batch),
                input_ns=int((merged - started) * 1e9),
                infer_ns=int((computed - merged) * 1e9),
                output_ns=int((finished - computed) * 1e9),
            )
        except Exception as exc:
            finished = time.perf_counter()
            message = (
                f"inference failed for a batch of {len(batch)} request(s), {total_rows} row(s): "
                f"{type(exc).__name__}: {_last_line(exc)}"
            )
            log.warning("%s", message)
            error = _failure_factory(message)
        with self._cond:
            self._outstanding -= total_rows
        waits = [started - request.enqueued for request in batch]
        if timing is not None and self._on_batch is not None:
            self._on_batch(timing, int(sum(waits) * 1e9))
        self._hand_back(batch, pieces, error)
        metrics = self._metrics
        if metrics is not None:
            metrics.compute_duration.observe(finished - started)
            metrics.batch_size.observe(total_rows)
            for wait in waits:
                metrics.queue_duration.observe(wait)

    def _hand_back(
        self,
        batch: list[_Request],
        pieces: list[list[np.ndarray]] | None,
        error: InferenceServerErrorFactory | None,
    ) -> None:
        """Deliver a finished batch: thread futures here, asyncio futures on the loop.

        The loop gets one hop per batch holding asyncio futures, none for the others.
        """
        on_loop = [index for index, request in enumerate(batch) if request.on_loop]
        if len(on_loop) < len(batch):
            if not on_loop:
                self._deliver(batch, pieces, error)
                return
            here = [index for index, request in enumerate(batch) if not request.on_loop]
            self._deliver(
                [batch[index] for index in here],
                None if pieces is None else [pieces[index] for index in here],
                error,
            )
            batch = [batch[index] for index in on_loop]
            pieces = None if pieces is None else [pieces[index] for index in on_loop]
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._deliver, batch, pieces, error)
        except RuntimeError:  # the loop closed during shutdown: nobody is waiting any more
            log.debug("event loop closed; dropped the results of %d requests", len(batch))


InferenceServerErrorFactory = Callable[[], Exception]


def _default_error() -> Exception:
    return InferenceFailedError("inference failed")


def _succeed(request: _Request, outputs: Outputs) -> None:
    future = request.future
    if future.done():  # an asyncio future whose client went away
        return
    # a thread future may have been failed meanwhile by a draining stop()
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_result(outputs)


def _fail(request: _Request, error: Exception) -> None:
    future = request.future
    if future.done():
        return
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_exception(error)


def _failure_factory(message: str) -> InferenceServerErrorFactory:
    return lambda: InferenceFailedError(message)


def _last_line(error: BaseException) -> str:
    """The useful part of an exception message (TorchScript prepends its own traceback)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return text[:500]
