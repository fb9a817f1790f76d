"""OIP v2 gRPC: ``inference.GRPCInferenceService`` on grpc.aio, over the DataPlane.

Uses the generated stubs that ship in ``tritonclient.grpc`` so tritonclient and perf_analyzer
talk to it unchanged. Health, metadata, ModelInfer (typed ``contents`` or
``raw_input_contents`` in, ``raw_output_contents`` out), ModelConfig, ModelStatistics and
RepositoryIndex are served; every other RPC of the service answers UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from ferry_runtime.dataplane import DataPlane
from ferry_runtime.protocol import grpc_codec
from ferry_runtime.protocol.errors import InferenceServerError, outcome_of, status_of

log = logging.getLogger(__name__)

PROTOCOL = "grpc"
SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]


def server_options(max_request_bytes: int) -> list[tuple[str, Any]]:
    """grpc.aio server options: the request size limit, and no silent port sharing."""
    return [
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),
    ]


async def _abort(context: grpc.aio.ServicerContext, error: InferenceServerError) -> None:
    await context.abort(grpc.StatusCode[status_of(error).grpc], str(error))


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The service, every method a coroutine."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane
        self._metrics = dataplane.metrics
        for method in SERVICE.methods:
            if getattr(type(self), method.name) is getattr(
                service_pb2_grpc.GRPCInferenceServiceServicer, method.name
            ):
                setattr(self, method.name, _unimplemented(method.name))

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return service_pb2.ServerLiveResponse(live=self._dataplane.live())

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=self._dataplane.ready())

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        try:
            ready = self._dataplane.model_ready(request.name, request.version)
        except InferenceServerError as error:
            await _abort(context, error)
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return json_format.ParseDict(
            self._dataplane.server_metadata(), service_pb2.ServerMetadataResponse()
        )

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        try:
            document = self._dataplane.model_metadata(request.name, request.version)
        except InferenceServerError as error:
            await _abort(context, error)
        return json_format.ParseDict(document, service_pb2.ModelMetadataResponse())

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        try:
            document = self._dataplane.model_config(request.name, request.version)
        except InferenceServerError as error:
            await _abort(context, error)
        config = json_format.ParseDict(document, model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        try:
            document = self._dataplane.model_statistics(request.name, request.version)
        except InferenceServerError as error:
            await _abort(context, error)
        return json_format.ParseDict(document, service_pb2.ModelStatisticsResponse())

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        models = [
            service_pb2.RepositoryIndexResponse.ModelIndex(**entry)
            for entry in self._dataplane.repository_index()
            if not request.ready or entry["state"] == "READY"
        ]
        return service_pb2.RepositoryIndexResponse(models=models)

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        started = time.perf_counter()
        outcome = "success"
        try:
            decoded = grpc_codec.decode_infer_request(request)
            response = await self._dataplane.infer(decoded)
            return grpc_codec.encode_infer_response(response)
        except InferenceServerError as error:
            outcome = outcome_of(error)
            await _abort(context, error)
        except Exception:
            outcome = "error"
            log.exception("unexpected error in ModelInfer")
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
        finally:
            self._metrics.observe_request(PROTOCOL, outcome, time.perf_counter() - started)
        return None  # pragma: no cover - abort raises


def _unimplemented(name: str) -> Callable[..., Any]:
    async def unimplemented(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented")

    return unimplemented


def build_server(dataplane: DataPlane, *, max_request_bytes: int) -> grpc.aio.Server:
    """A grpc.aio server with the inference service added (ports are bound by the caller)."""
    server = grpc.aio.server(options=server_options(max_request_bytes))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(dataplane), server
    )
    return server
