"""OIP v2 gRPC streaming inference: ``ModelStreamInfer``, Triton's bidirectional stream.

Each message the client sends is a ``ModelInferRequest``; each answer is a
``ModelStreamInferResponse`` holding the ``ModelInferResponse``, or, for a request that failed,
``error_message`` with the request's ``id`` while the stream carries on (as Triton answers).
Answers come back in request order. tritonclient (``start_stream``/``async_stream_infer``) and
perf_analyzer (``--streaming``) use it unchanged.

Why a stream
    A unary call costs the thread-pool server well over 100 µs of Python per request in
    grpcio's own call set-up and hand-offs; a message on an open stream skips that set-up. A
    reader thread parses each message and queues it with ``DataPlane.begin_threadsafe``
    without waiting, so one stream keeps many requests in flight (they batch together); the
    handler's own thread takes the answers in order and writes them.

Bounds
    At most ``max_streams`` streams at once (one more answers UNAVAILABLE, the code clients
    retry on), and at most ``max_pending`` requests of a stream between reading and answering:
    past that the reader stops reading, so gRPC flow control pushes back on the client. A full
    batch queue refuses a request with an UNAVAILABLE-class ``error_message`` on the stream;
    an undecodable message gets an error answer, never a broken stream.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from ferry_runtime.dataplane import DataPlane, PendingInference
from ferry_runtime.protocol import grpc_codec
from ferry_runtime.protocol.errors import (
    InferenceServerError,
    InvalidInputError,
    message_of,
    outcome_of,
)

log = logging.getLogger(__name__)

PROTOCOL = "grpc"
MAX_STREAMS = 16
"""Inference streams served at once (each holds a pool thread and a reader thread)."""
MAX_PENDING = 256
"""Requests of one stream read but not yet answered."""
MAX_ID_CHARS = 256
"""A request ``id`` echoed in an error answer is clipped to this."""

_parse = service_pb2.ModelInferRequest.FromString
_StreamResponse = service_pb2.ModelStreamInferResponse
_InferResponse = service_pb2.ModelInferResponse


@dataclass(slots=True)
class _Read:
    """One message read from the stream: queued for the model, or already failed."""

    started: float
    request_id: str
    pending: PendingInference | None
    error: BaseException | None


_END = _Read(0.0, "", None, None)
"""Put by the reader after the client's last message."""


class StreamInfer:
    """The ``ModelStreamInfer`` behaviour: raw request messages in, stream answers out."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        max_streams: int = MAX_STREAMS,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._dataplane = dataplane
        self._metrics = dataplane.metrics
        self._streams = threading.BoundedSemaphore(max_streams)
        self._max_pending = max_pending

    def __call__(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
        """Serve one stream until the client half-closes it (or goes away)."""
        if not self._streams.acquire(blocking=False):
            context.abort(grpc.StatusCode.UNAVAILABLE, "too many inference streams; retry later")
        read: queue.Queue[_Read] = queue.Queue(maxsize=self._max_pending)
        reader = threading.Thread(
            target=self._read, args=(requests, read), name="ferry-grpc-stream", daemon=True
        )
        ended = False
        try:
            reader.start()
            while (item := read.get()) is not _END:
                yield self._answer(item)
            ended = True
        finally:
            if not ended:
                self._abandon(reader, read)
            self._streams.release()

    def _read(self, requests: Iterator[bytes], read: queue.Queue[_Read]) -> None:
        """Reader thread: parse and queue every message; ``_END`` when the client is done."""
        try:
            for raw in requests:
                read.put(self._begin(raw))
        except grpc.RpcError:
            pass  # the client cancelled or the stream broke: nothing more to read
        except Exception:
            log.exception("unexpected error reading an inference stream")
        finally:
            read.put(_END)

    def _begin(self, raw: bytes) -> _Read:
        started = time.perf_counter()
        try:
            message = _parse(raw)
        except DecodeError:
            error = InvalidInputError("the request is not a valid ModelInferRequest")
            return _Read(started, "", None, error)
        request_id = message.id[:MAX_ID_CHARS]
        try:
            pending = self._dataplane.begin_threadsafe(grpc_codec.decode_infer_request(message))
        except Exception as error:  # answered on the stream by _answer
            return _Read(started, request_id, None, error)
        return _Read(started, request_id, pending, None)

    def _answer(self, item: _Read) -> Any:
        outcome = "success"
        try:
            if item.error is not None:
                raise item.error
            assert item.pending is not None
            response = grpc_codec.encode_infer_response(item.pending.result())
            return _StreamResponse(infer_response=response)
        except InferenceServerError as error:
            outcome = outcome_of(error)
            return _StreamResponse(
                error_message=message_of(error), infer_response=_InferResponse(id=item.request_id)
            )
        except Exception:
            outcome = "error"
            log.exception("unexpected error in ModelStreamInfer")
            return _StreamResponse(
                error_message="internal server error",
                infer_response=_InferResponse(id=item.request_id),
            )
        finally:
            self._metrics.observe_request(PROTOCOL, outcome, time.perf_counter() - item.started)

    @staticmethod
    def _abandon(reader: threading.Thread, read: queue.Queue[_Read]) -> None:
        """The stream ended (or the client left): let the reader finish, and wait out every
        request it queued so the in-flight count and statistics stay exact."""
        while True:
            try:
                item = read.get(timeout=0.05)
            except queue.Empty:
                if not reader.is_alive():
                    return
                continue
            if item is _END:
                return
            if item.pending is not None:
                with contextlib.suppress(Exception):  # nobody is left to answer
                    item.pending.result()
