"""OIP v2 gRPC: ``inference.GRPCInferenceService`` on the thread-pool ``grpc.server``.

Uses the generated stubs that ship in ``tritonclient.grpc`` so tritonclient and perf_analyzer
talk to it unchanged. Health, metadata, ModelInfer (typed ``contents`` or
``raw_input_contents`` in, ``raw_output_contents`` out), ModelStreamInfer (``grpc_stream.py``),
ModelConfig, ModelStatistics and RepositoryIndex are served; every other RPC of the service
answers UNIMPLEMENTED.

Why the classic server and not grpc.aio
    Per call, grpc.aio spends far more Python CPU than the thread-pool server (its Cython
    coroutine machinery, measured ~1.6x slower with an empty handler), and with the model
    sharing the server's cores that CPU comes straight out of the forward pass. So each call
    runs on a pool thread: decode, ``DataPlane.infer_blocking`` (the batcher's thread-safe
    submission; the compute thread resolves the future directly, without the event loop),
    encode. The pool holds enough threads for every request the batcher can accept
    (``max_queue_size`` queued plus a running batch), so a full batch queue still answers
    UNAVAILABLE at once instead of calls waiting for a free thread. The first
    ``PRESTARTED_WORKERS`` threads start with the server, so a burst of calls never waits for
    thread starts on a busy CPU. Measured on one pinned core (medium MLP, batching b32/5ms):
    ~5-12% more gRPC throughput at concurrency 32-64 and ~10% less server CPU per call; REST
    is unchanged.

Hostile input and overload
    Handlers receive the raw message bytes and parse them themselves, so an undecodable message
    answers INVALID_ARGUMENT (grpcio's own deserialiser would answer INTERNAL). ``ModelInfer``
    decides admission first, before its message is parsed: when every inference thread is taken
    or the batch queue is full it answers UNAVAILABLE (the code clients retry on). The pool has
    a few spare threads beyond the inference ones for these refusals, so they never wait behind
    inference, and grpcio's ``maximum_concurrent_rpcs`` (which answers RESOURCE_EXHAUSTED, a
    code clients do not retry) is not used.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from ferry_runtime.dataplane import DataPlane
from ferry_runtime.priority import yield_cpu
from ferry_runtime.protocol import grpc_codec
from ferry_runtime.protocol.errors import (
    InferenceServerError,
    QueueFullError,
    message_of,
    outcome_of,
    status_of,
)
from ferry_runtime.transports.grpc_stream import MAX_STREAMS, StreamInfer

log = logging.getLogger(__name__)

PROTOCOL = "grpc"
SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]


def server_options(max_request_bytes: int, *, reuse_port: bool = False) -> list[tuple[str, Any]]:
    """gRPC server options: the request size limit, and no silent port sharing unless
    ``reuse_port`` (front-end processes share their ports on purpose)."""
    return [
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]


def _abort(context: grpc.ServicerContext, error: InferenceServerError) -> NoReturn:
    context.abort(grpc.StatusCode[status_of(error).grpc], message_of(error))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The service; each call runs on a thread of the server's pool."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane
        self._metrics = dataplane.metrics
        self.inferring = 0
        """``ModelInfer`` calls being served now (read by the admission check)."""
        self._inferring_lock = threading.Lock()
        for method in SERVICE.methods:
            if getattr(type(self), method.name) is getattr(
                service_pb2_grpc.GRPCInferenceServiceServicer, method.name
            ):
                setattr(self, method.name, _unimplemented(method.name))

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return service_pb2.ServerLiveResponse(live=self._dataplane.live())

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=self._dataplane.ready())

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            ready = self._dataplane.model_ready(request.name, request.version)
        except InferenceServerError as error:
            _abort(context, error)
        return service_pb2.ModelReadyResponse(ready=ready)

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return json_format.ParseDict(
            self._dataplane.server_metadata(), service_pb2.ServerMetadataResponse()
        )

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            document = self._dataplane.model_metadata(request.name, request.version)
        except InferenceServerError as error:
            _abort(context, error)
        return json_format.ParseDict(document, service_pb2.ModelMetadataResponse())

    def ModelConfig(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            document = self._dataplane.model_config(request.name, request.version)
        except InferenceServerError as error:
            _abort(context, error)
        config = json_format.ParseDict(document, model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=config)

    def ModelStatistics(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            document = self._dataplane.model_statistics(request.name, request.version)
        except InferenceServerError as error:
            _abort(context, error)
        return json_format.ParseDict(document, service_pb2.ModelStatisticsResponse())

    def RepositoryIndex(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        models = [
            service_pb2.RepositoryIndexResponse.ModelIndex(**entry)
            for entry in self._dataplane.repository_index()
            if not request.ready or entry["state"] == "READY"
        ]
        return service_pb2.RepositoryIndexResponse(models=models)

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        started = time.perf_counter()
        outcome = "success"
        with self._inferring_lock:
            self.inferring += 1
        try:
            self._dataplane.resolve(request.model_name, request.model_version)
            decoded = grpc_codec.decode_infer_request(request)
            response = self._dataplane.infer_blocking(decoded)
            return grpc_codec.encode_infer_response(response)
        except InferenceServerError as error:
            outcome = outcome_of(error)
            _abort(context, error)
        except Exception:
            outcome = "error"
            log.exception("unexpected error in ModelInfer")
            context.abort(grpc.StatusCode.INTERNAL, "internal server error")
        finally:
            with self._inferring_lock:
                self.inferring -= 1
            self._metrics.observe_request(PROTOCOL, outcome, time.perf_counter() - started)
        return None  # pragma: no cover - abort raises

    def shed(self, request: bytes, context: grpc.ServicerContext) -> Any:
        """Refuse a ``ModelInfer`` call admission turned away (its message is never parsed)."""
        self._metrics.observe_request(PROTOCOL, "queue_full", 0.0)
        yield_cpu()
        _abort(context, QueueFullError("inference queue is full; retry later"))


def _unimplemented(name: str) -> Callable[..., Any]:
    def unimplemented(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented")

    return unimplemented


PRESTARTED_WORKERS = 64
"""Pool threads started up front: a burst of calls then finds threads waiting, instead of
each call paying a thread start (slow on a busy CPU)."""


def _prestart(pool: ThreadPoolExecutor, count: int) -> None:
    """Start ``count`` threads of ``pool``: each first task holds its thread until all run."""
    if count < 1:
        return
    started = threading.Barrier(count + 1)
    for _ in range(count):
        pool.submit(started.wait)
    started.wait()


SHEDDING_WORKERS = 8
"""Pool threads beyond the inference ones: they answer refused calls (microseconds each)."""


def _parsing(
    behavior: Callable[[Any, grpc.ServicerContext], Any], request_type: Any
) -> Callable[[bytes, grpc.ServicerContext], Any]:
    """Wrap ``behavior`` to parse its raw request itself: undecodable → INVALID_ARGUMENT."""
    parse = request_type.FromString
    what = request_type.DESCRIPTOR.name

    def handle(raw: bytes, context: grpc.ServicerContext) -> Any:
        try:
            request = parse(raw)
        except DecodeError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {what}")
        return behavior(request, context)

    return handle


def _admitting(
    servicer: InferenceServicer, dataplane: DataPlane, workers: int
) -> Callable[[bytes, grpc.ServicerContext], Any]:
    """``ModelInfer`` with admission first: refused before its message is even parsed."""
    parse = service_pb2.ModelInferRequest.FromString

    def handle(raw: bytes, context: grpc.ServicerContext) -> Any:
        if servicer.inferring >= workers or dataplane.full:
            return servicer.shed(raw, context)
        try:
            request = parse(raw)
        except DecodeError:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid ModelInferRequest"
            )
        return servicer.ModelInfer(request, context)

    return handle


def method_handlers(
    servicer: InferenceServicer, dataplane: DataPlane, workers: int
) -> dict[str, grpc.RpcMethodHandler]:
    """Every method of the service: handlers that take the raw message and parse it."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in SERVICE.methods:
        if method.name == "ModelStreamInfer":
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                StreamInfer(dataplane),
                response_serializer=service_pb2.ModelStreamInferResponse.SerializeToString,
            )
            continue
        if method.client_streaming or method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                _unimplemented_stream(method.name)
            )
            continue
        if method.name == "ModelInfer":
            behavior = _admitting(servicer, dataplane, workers)
        else:
            behavior = _parsing(
                getattr(servicer, method.name), getattr(service_pb2, method.input_type.name)
            )
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            behavior,
            response_serializer=getattr(service_pb2, method.output_type.name).SerializeToString,
        )
    return handlers


def _unimplemented_stream(name: str) -> Callable[..., Any]:
    def unimplemented(requests: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented")

    return unimplemented


def build_server(
    dataplane: DataPlane, *, max_request_bytes: int, workers: int, reuse_port: bool = False
) -> grpc.Server:
    """A thread-pool gRPC server with the service added (ports are bound by the caller).

    ``workers`` bounds the inference calls served at once; the caller sizes it to the batcher's
    queue. Calls beyond it, or while the queue is full, are refused at once with UNAVAILABLE by
    the service's admission check instead of waiting, unbounded, for a free thread.
    """
    pool = ThreadPoolExecutor(
        max_workers=workers + SHEDDING_WORKERS + MAX_STREAMS, thread_name_prefix="ferry-grpc"
    )
    _prestart(pool, min(workers + SHEDDING_WORKERS, PRESTARTED_WORKERS))
    server = grpc.server(pool, options=server_options(max_request_bytes, reuse_port=reuse_port))
    handlers = method_handlers(InferenceServicer(dataplane), dataplane, workers)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
    return server
