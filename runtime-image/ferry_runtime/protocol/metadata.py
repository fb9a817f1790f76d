"""Server/model metadata, Triton model config and statistics documents (pure builders).

The same dicts serve REST (as JSON) and gRPC (parsed into the protobuf messages), so the two
protocols can never disagree.
"""

from __future__ import annotations

from typing import Any

from ferry_runtime.protocol.datatypes import DATATYPES
from ferry_runtime.protocol.types import ModelSignature, TensorSpec

SERVER_NAME = "ferry-runtime"
PLATFORM = "pytorch_libtorch"
"""Triton's platform name for TorchScript models; perf_analyzer and clients know it."""
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics")


def server_metadata(version: str) -> dict[str, Any]:
    """``GET /v2`` / ``ServerMetadata``."""
    return {"name": SERVER_NAME, "version": version, "extensions": list(EXTENSIONS)}


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": [-1, *spec.shape]}


def model_metadata(signature: ModelSignature) -> dict[str, Any]:
    """``GET /v2/models/{m}`` / ``ModelMetadata``: shapes carry the batch dimension as -1."""
    return {
        "name": signature.name,
        "versions": [signature.version],
        "platform": signature.platform,
        "inputs": [_tensor_metadata(spec) for spec in signature.inputs],
        "outputs": [_tensor_metadata(spec) for spec in signature.outputs],
    }


def model_config(signature: ModelSignature) -> dict[str, Any]:
    """Triton's model configuration (what ``perf_analyzer`` reads), dims without the batch dim."""
    config: dict[str, Any] = {
        "name": signature.name,
        "platform": signature.platform,
        "backend": "pytorch",
        "version_policy": _version_policy(signature.version),
        "max_batch_size": signature.max_batch_size,
        "input": [
            {
                "name": spec.name,
                "data_type": DATATYPES[spec.datatype].triton,
                "format": "FORMAT_NONE",
                "dims": list(spec.shape),
                "is_shape_tensor": False,
                "allow_ragged_batch": False,
                "optional": False,
            }
            for spec in signature.inputs
        ],
        "output": [
            {
                "name": spec.name,
                "data_type": DATATYPES[spec.datatype].triton,
                "dims": list(spec.shape),
                "label_filename": "",
                "is_shape_tensor": False,
            }
            for spec in signature.outputs
        ],
        "instance_group": [
            {
                "name": f"{signature.name}_0",
                "kind": "KIND_GPU" if signature.device.startswith("cuda") else "KIND_CPU",
                "count": 1,
            }
        ],
        "default_model_filename": "model.pt",
    }
    batching = signature.dynamic_batching
    if batching is not None:
        config["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": batching.max_queue_delay_us,
            "preserve_ordering": False,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": 0,
                "allow_timeout_override": False,
                "max_queue_size": batching.max_queue_size,
            },
        }
    return config


def _version_policy(version: str) -> dict[str, Any]:
    if version.isdigit():
        return {"specific": {"versions": [int(version)]}}
    return {"latest": {"num_versions": 1}}
