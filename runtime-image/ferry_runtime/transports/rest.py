"""OIP v2 REST (+ binary tensor extension), the simple JSON predict route and ``/metrics``.

A Starlette app over the DataPlane; ``server.py`` runs it with uvicorn (httptools). The infer
route, the hot path, is a plain ASGI endpoint inside the Starlette router (no Request/Response
objects per call); every other route is an ordinary Starlette endpoint. Every error leaves as
``{"error": message}`` with the status from the protocol error table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ferry_runtime.dataplane import DataPlane
from ferry_runtime.priority import yield_cpu
from ferry_runtime.protocol import rest_codec
from ferry_runtime.protocol.errors import (
    InferenceServerError,
    InvalidInputError,
    PayloadTooLargeError,
    QueueFullError,
    message_of,
    outcome_of,
    status_of,
)
from ferry_runtime.protocol.limits import BodyLimits, body_limits
from ferry_runtime.transports.openapi import OPENAPI_PATH, openapi_document

log = logging.getLogger(__name__)

PROTOCOL = "rest"
Handler = Callable[[Request], Awaitable[Response]]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CONTENT_LENGTH = b"content-length"
_HEADER_LENGTH = rest_codec.HEADER_LENGTH.encode()
_JSON = rest_codec.JSON_CONTENT_TYPE.encode()
_BINARY = rest_codec.BINARY_CONTENT_TYPE.encode()


def _json(document: object, status: int = 200) -> Response:
    return Response(rest_codec.dumps(document), status, media_type=rest_codec.JSON_CONTENT_TYPE)


def _error(status: int, message: str) -> Response:
    return Response(rest_codec.error_body(message), status, media_type=rest_codec.JSON_CONTENT_TYPE)


def error_response(error: InferenceServerError) -> Response:
    """The REST form of a protocol error."""
    return _error(status_of(error).http, message_of(error))


def _header_values(scope: Scope, *names: bytes) -> list[str | None]:
    """Look up a few headers straight from the ASGI scope (no ``Headers`` object)."""
    found: list[str | None] = [None] * len(names)
    for key, value in scope["headers"]:
        if key in names:
            found[names.index(key)] = value.decode("latin-1")
    return found


def _declared_length(declared: str | None, limit: int) -> int | None:
    if declared is None:
        return None
    try:
        length = int(declared)
    except ValueError:
        raise InvalidInputError("Content-Length is not an integer") from None
    if length > limit:
        raise PayloadTooLargeError(
            f"request body of {length} bytes exceeds the limit of {limit} bytes"
        )
    return length


STREAMED_BODY_STEP = 1024 * 1024
"""A body without Content-Length grows its buffer in steps of this size."""


async def read_body(receive: Receive, limit: int, declared: str | None) -> bytearray | memoryview:
    """Read the body into one writable buffer (numpy views it without copies), at most ``limit``.

    ``declared`` is the Content-Length header, checked before anything is read. A body that
    arrives in one piece is copied once into a ``bytearray``. A longer one goes into a buffer
    allocated once at its declared size (untouched pages cost no memory until bytes arrive)
    and filled in place: it is held once, never copied again or regrown.
    """
    length = _declared_length(declared, limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect
    chunk = message.get("body", b"")
    if not message.get("more_body", False):
        if len(chunk) > limit:
            raise PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes")
        return bytearray(chunk)
    buffer = np.empty(length if length is not None else 0, dtype=np.uint8)
    filled = 0
    while True:
        end = filled + len(chunk)
        if end > len(buffer):
            if end > limit:
                raise PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes")
            grown = np.empty(min(limit, max(end, len(buffer) + STREAMED_BODY_STEP)), np.uint8)
            grown[:filled] = buffer[:filled]
            buffer = grown
        buffer[filled:end] = np.frombuffer(chunk, dtype=np.uint8)
        filled = end
        if not message.get("more_body", False):
            return buffer.data[:filled]
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")


class InferEndpoint:
    """``POST /v2/models/{m}[/versions/{v}]/infer`` as a plain ASGI app (the hot path)."""

    def __init__(self, dataplane: DataPlane, limits: BodyLimits) -> None:
        self._dataplane = dataplane
        self._metrics = dataplane.metrics
        self._limits = limits
        shed = QueueFullError("inference queue is full; retry later")
        body = rest_codec.error_body(message_of(shed))
        self._shed_start = {
            "type": "http.response.start",
            "status": status_of(shed).http,
            "headers": [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())],
        }
        self._shed_body = {"type": "http.response.body", "body": body}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        if self._dataplane.full:  # shed: a prepared answer, the body never read or parsed
            await send(self._shed_start)
            await send(self._shed_body)
            self._metrics.observe_request(PROTOCOL, "queue_full", time.perf_counter() - started)
            yield_cpu()
            return
        outcome = "success"
        headers: list[tuple[bytes, bytes]]
        parts: list[bytes | memoryview] = []
        try:
            status = 200
            body, json_length, parts = await self._infer(scope, receive)
            if json_length is None:
                headers = [(b"content-type", _JSON)]
            else:
                headers = [
                    (b"content-type", _BINARY),
                    (b"inference-header-content-length", str(json_length).encode()),
                ]
        except InferenceServerError as error:
            outcome = outcome_of(error)
            status, body = status_of(error).http, rest_codec.error_body(message_of(error))
            headers = [(b"content-type", _JSON)]
        except ClientDisconnect:
            self._metrics.observe_request(PROTOCOL, "disconnected", time.perf_counter() - started)
            return
        except Exception:
            outcome = "error"
            log.exception("unexpected error serving %s", scope.get("path"))
            status, body = 500, rest_codec.error_body("internal server error")
            headers = [(b"content-type", _JSON)]
        length = len(body) + sum(len(part) for part in parts) if parts else len(body)
        headers.append((b"content-length", str(length).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if not parts:
            await send({"type": "http.response.body", "body": body})
        else:  # large binary outputs leave as views of the output arrays, never copied
            await send({"type": "http.response.body", "body": body, "more_body": True})
            for part in parts[:-1]:
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": parts[-1]})
        self._metrics.observe_request(PROTOCOL, outcome, time.perf_counter() - started)

    async def _infer(
        self, scope: Scope, receive: Receive
    ) -> tuple[bytes, int | None, list[bytes | memoryview]]:
        params = scope["path_params"]
        name, version = params["model_name"], params.get("model_version", "")
        dataplane = self._dataplane
        dataplane.resolve(name, version)
        declared, inference_header = _header_values(scope, _CONTENT_LENGTH, _HEADER_LENGTH)
        limits = self._limits
        limit = limits.json if inference_header is None else limits.binary
        body = await read_body(receive, limit, declared)
        header_length = rest_codec.parse_header_length(inference_header, len(body))
        if header_length is not None and header_length > limits.json:
            raise PayloadTooLargeError(
                f"inference header of {header_length} bytes exceeds the limit of "
                f"{limits.json} bytes for JSON"
            )
        request = rest_codec.decode_infer_request(body, header_length, name, version)
        response = await dataplane.infer(request)
        return rest_codec.encode_infer_response_parts(response)


def infer_path_params(path: str) -> dict[str, str] | None:
    """``/v2/models/{m}/infer`` or ``/v2/models/{m}/versions/{v}/infer`` → path params."""
    parts = path.split("/")
    if parts[-1] != "infer" or parts[1:3] != ["v2", "models"]:
        return None
    if len(parts) == 5 and parts[3]:
        return {"model_name": parts[3]}
    if len(parts) == 7 and parts[4] == "versions" and parts[3] and parts[5]:
        return {"model_name": parts[3], "model_version": parts[5]}
    return None


class RestApp(Starlette):
    """Starlette, with ``POST .../infer`` dispatched straight to its endpoint.

    The infer routes are also in the router (same endpoint), so introspection and any path the
    shortcut does not recognise behave the same; the shortcut only skips the middleware stack
    and route matching on the hot path.
    """

    def __init__(self, infer: InferEndpoint, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._infer = infer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            params = infer_path_params(scope["path"])
            if params is not None:
                scope["path_params"] = params
                await self._infer(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def build_app(
    dataplane: DataPlane,
    *,
    max_request_bytes: int,
    max_json_request_bytes: int = 8 * 1024 * 1024,
) -> Starlette:
    """The REST application for one DataPlane."""
    metrics = dataplane.metrics
    limits = body_limits(dataplane.signature, max_request_bytes, max_json_request_bytes)
    openapi = rest_codec.dumps(openapi_document(dataplane.signature))

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except InferenceServerError as error:
                return error_response(error)

        return endpoint

    def _model(request: Request) -> tuple[str, str]:
        params = request.path_params
        return params["model_name"], params.get("model_version", "")

    async def live(request: Request) -> Response:
        ok = dataplane.live()
        return _json({"live": ok}, 200 if ok else 503)

    async def ready(request: Request) -> Response:
        ok = dataplane.ready()
        return _json({"ready": ok}, 200 if ok else 503)

    async def server_metadata(request: Request) -> Response:
        return _json(dataplane.server_metadata())

    async def model_metadata(request: Request) -> Response:
        return _json(dataplane.model_metadata(*_model(request)))

    async def model_ready(request: Request) -> Response:
        ok = dataplane.model_ready(*_model(request))
        return _json({"ready": ok}, 200 if ok else 503)

    async def model_config(request: Request) -> Response:
        return _json(dataplane.model_config(*_model(request)))

    async def model_stats(request: Request) -> Response:
        params = request.path_params
        return _json(
            dataplane.model_statistics(
                params.get("model_name", ""), params.get("model_version", "")
            )
        )

    async def repository_index(request: Request) -> Response:
        return _json(dataplane.repository_index())

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        outcome = "success"
        try:
            name = request.path_params["model_name"]
            dataplane.resolve(name)
            dataplane.admit()
            (declared,) = _header_values(request.scope, _CONTENT_LENGTH)
            body = await read_body(request.receive, limits.json, declared)
            document = rest_codec.load_json(body)
            if not isinstance(document, dict) or "instances" not in document:
                raise InvalidInputError('predict body must be {"instances": [...]}')
            predictions = await dataplane.predict(name, document["instances"])
            return _json({"predictions": predictions})
        except InferenceServerError as error:
            outcome = outcome_of(error)
            return error_response(error)
        except ClientDisconnect:
            outcome = "disconnected"
            return Response(status_code=499)
        except Exception:
            outcome = "error"
            log.exception("unexpected error serving %s", request.url.path)
            return _error(500, "internal server error")
        finally:
            metrics.observe_request(PROTOCOL, outcome, time.perf_counter() - started)

    async def metrics_endpoint(request: Request) -> Response:
        content, content_type = metrics.render()
        return Response(content, media_type=content_type)

    async def openapi_endpoint(request: Request) -> Response:
        return Response(openapi, media_type=rest_codec.JSON_CONTENT_TYPE)

    infer = InferEndpoint(dataplane, limits)
    model = "/v2/models/{model_name}"
    version = model + "/versions/{model_version}"
    routes = [  # the hot routes first: Starlette matches in order
        Route(model + "/infer", infer, methods=["POST"]),
        Route(version + "/infer", infer, methods=["POST"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", guarded(server_metadata), methods=["GET"]),
        Route("/v2/models/stats", guarded(model_stats), methods=["GET"]),
        Route("/v2/repository/index", guarded(repository_index), methods=["POST"]),
        Route("/v1/models/{model_name}:predict", predict, methods=["POST"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route(OPENAPI_PATH, openapi_endpoint, methods=["GET"]),
    ]
    for prefix in (model, version):
        routes += [
            Route(prefix, guarded(model_metadata), methods=["GET"]),
            Route(prefix + "/ready", guarded(model_ready), methods=["GET"]),
            Route(prefix + "/config", guarded(model_config), methods=["GET"]),
            Route(prefix + "/stats", guarded(model_stats), methods=["GET"]),
        ]

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return _error(error.status_code, str(error.detail))

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: http_error
    }
    return RestApp(infer, routes=routes, exception_handlers=handlers)
