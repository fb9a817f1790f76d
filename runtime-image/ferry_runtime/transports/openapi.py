"""The OpenAPI 3.0 document of Ferry's REST API, served at ``/v2/openapi.json``.

It describes the OIP v2 REST routes, the simple JSON predict route and ``/metrics`` as this
server answers them (the served model's name and inputs appear as examples), so API tools and
fuzzers (schemathesis in tests/runtime) can drive the server from it. The binary tensor
extension (a JSON header followed by raw bytes) has no OpenAPI form; it is described in
docs/contracts.md and fuzzed separately.
"""

from __future__ import annotations

from typing import Any

from ferry_runtime.protocol.datatypes import DATATYPES
from ferry_runtime.protocol.types import ModelSignature

OPENAPI_PATH = "/v2/openapi.json"

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


_ERROR = _json_response("error", _ref("Error"))
_NOT_FOUND = _json_response("unknown model or version", _ref("Error"))


def _parameters(signature: ModelSignature, versioned: bool) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {
            "name": "model_name",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "example": signature.name,
        }
    ]
    if versioned:
        parameters.append(
            {
                "name": "model_version",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "example": signature.version,
            }
        )
    return parameters


def _model_routes(signature: ModelSignature, versioned: bool) -> dict[str, Any]:
    prefix = "/v2/models/{model_name}" + ("/versions/{model_version}" if versioned else "")
    parameters = _parameters(signature, versioned)
    free_object = _json_response("document", {"type": "object"})
    return {
        prefix: {
            "get": {
                "summary": "Model metadata",
                "parameters": parameters,
                "responses": {"200": free_object, "404": _NOT_FOUND},
            }
        },
        prefix + "/ready": {
            "get": {
                "summary": "Model readiness",
                "parameters": parameters,
                "responses": {
                    "200": _json_response("ready", _ref("Ready")),
                    "404": _NOT_FOUND,
                    "503": _json_response("not ready", _ref("Ready")),
                },
            }
        },
        prefix + "/config": {
            "get": {
                "summary": "Triton model configuration",
                "parameters": parameters,
                "responses": {"200": free_object, "404": _NOT_FOUND},
            }
        },
        prefix + "/stats": {
            "get": {
                "summary": "Triton model statistics",
                "parameters": parameters,
                "responses": {"200": free_object, "404": _NOT_FOUND},
            }
        },
        prefix + "/infer": {
            "post": {
                "summary": "Inference (JSON; the binary extension is described in the docs)",
                "parameters": parameters,
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("InferenceRequest")}},
                },
                "responses": {
                    "200": {
                        "description": "outputs",
                        "content": {
                            _JSON: {"schema": _ref("InferenceResponse")},
                            "application/octet-stream": {"schema": {}},
                        },
                    },
                    "400": _ERROR,
                    "404": _NOT_FOUND,
                    "408": _ERROR,
                    "413": _ERROR,
                    "503": _ERROR,
                },
            }
        },
    }


def _schemas(signature: ModelSignature) -> dict[str, Any]:
    example_inputs = [
        {
            "name": spec.name,
            "datatype": spec.datatype,
            "shape": [1, *(max(dim, 1) for dim in spec.shape)],
        }
        for spec in signature.inputs
    ]
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "maxLength": 1024}},
        },
        "Live": {
            "type": "object",
            "required": ["live"],
            "properties": {"live": {"type": "boolean"}},
        },
        "Ready": {
            "type": "object",
            "required": ["ready"],
            "properties": {"ready": {"type": "boolean"}},
        },
        "Parameters": {"type": "object", "additionalProperties": True},
        "RequestInput": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "datatype": {"type": "string", "enum": list(DATATYPES)},
                "parameters": _ref("Parameters"),
                "data": {"type": "array", "items": {}},
            },
        },
        "RequestOutput": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": _ref("Parameters")},
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": _ref("Parameters"),
                "inputs": {"type": "array", "items": _ref("RequestInput")},
                "outputs": {"type": "array", "items": _ref("RequestOutput")},
            },
            "example": {"inputs": [{**entry, "data": []} for entry in example_inputs]},
        },
        "ResponseOutput": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "datatype": {"type": "string"},
                "parameters": _ref("Parameters"),
                "data": {"type": "array"},
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": _ref("ResponseOutput")},
            },
        },
    }


def openapi_document(signature: ModelSignature) -> dict[str, Any]:
    """The OpenAPI 3.0 document for a server of ``signature``."""
    free_object = _json_response("document", {"type": "object"})
    paths: dict[str, Any] = {
        "/v2/health/live": {
            "get": {
                "summary": "Liveness",
                "responses": {
                    "200": _json_response("live", _ref("Live")),
                    "503": _json_response("not live", _ref("Live")),
                },
            }
        },
        "/v2/health/ready": {
            "get": {
                "summary": "Readiness",
                "responses": {
                    "200": _json_response("ready", _ref("Ready")),
                    "503": _json_response("not ready", _ref("Ready")),
                },
            }
        },
        "/v2": {"get": {"summary": "Server metadata", "responses": {"200": free_object}}},
        "/v2/models/stats": {
            "get": {"summary": "Statistics of every model", "responses": {"200": free_object}}
        },
        "/v2/repository/index": {
            "post": {
                "summary": "The models this server holds",
                "responses": {
                    "200": _json_response("index", {"type": "array", "items": {"type": "object"}})
                },
            }
        },
        "/v1/models/{model_name}:predict": {
            "post": {
                "summary": 'Simple JSON prediction: {"instances": [row, ...]}',
                "parameters": _parameters(signature, False),
                "requestBody": {
                    "required": True,
                    "content": {
                        _JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["instances"],
                                "properties": {"instances": {"type": "array"}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json_response(
                        "predictions",
                        {
                            "type": "object",
                            "required": ["predictions"],
                            "properties": {"predictions": {"type": "array"}},
                        },
                    ),
                    "400": _ERROR,
                    "404": _NOT_FOUND,
                    "408": _ERROR,
                    "413": _ERROR,
                    "503": _ERROR,
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        OPENAPI_PATH: {"get": {"summary": "This document", "responses": {"200": free_object}}},
    }
    paths.update(_model_routes(signature, versioned=False))
    paths.update(_model_routes(signature, versioned=True))
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Ferry runtime: Open Inference Protocol v2 REST",
            "version": "v2",
            "description": "Serves model "
            + repr(signature.name)
            + " (version "
            + repr(signature.version)
            + ").",
        },
        "paths": paths,
        "components": {"schemas": _schemas(signature)},
    }
