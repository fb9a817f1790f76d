"""TorchServe handler serving a TorchScript model over KServe v2 / OIP JSON (runs inside
.bench-venvs/torchserve).

TorchServe's stock ``kservev2`` service envelope keeps only the first request of a batch and
returns one response for the whole batch, so any ``batchSize`` > 1 fails with "number of batch
response mismatched" (pytorch/serve#2158; the fix, pytorch/serve#3341, was never merged). This
handler therefore does the envelope's job itself, per request: it parses each request's OIP v2
JSON (``/v2/models/{name}/infer``), stacks the rows of the whole batch into one forward pass,
and answers each request with its own OIP v2 JSON response.
"""

from __future__ import annotations

import json
import os

import torch

OUTPUT_NAME = "OUTPUT__0"


class TorchScriptOIPHandler:
    """Minimal TorchServe custom handler: ``initialize`` + ``handle``."""

    def __init__(self) -> None:
        self.initialized = False
        self.model: torch.jit.ScriptModule | None = None
        self.model_name = ""
        self.model_version = ""

    def initialize(self, context: object) -> None:
        """Load ``model.pt`` from the unpacked archive and warm it at the largest batch."""
        # TorchServe's Context object is untyped (ts.context has no annotations).
        properties = context.system_properties  # type: ignore[attr-defined]
        model_dir = properties["model_dir"]
        torch.set_num_threads(int(os.environ.get("FERRY_BENCH_TORCH_THREADS", "1")))
        self.model = torch.jit.load(os.path.join(model_dir, "model.pt"), map_location="cpu")
        self.model.eval()
        manifest = context.manifest  # type: ignore[attr-defined]
        self.model_name = manifest["model"]["modelName"]
        self.model_version = manifest["model"].get("modelVersion", "1.0")
        with open(os.path.join(model_dir, "model.json")) as handle:
            width = int(json.load(handle)["inputs"][0]["shape"][0])
        batch = int(properties.get("batch_size") or 1)
        with torch.inference_mode():
            for _ in range(3):
                self.model(torch.zeros(batch, width))
        self.initialized = True

    def handle(self, data: list[dict[str, object]], context: object) -> list[bytes]:
        """One forward pass over the rows of every request in the batch."""
        tensors: list[torch.Tensor] = []
        document_ids: list[str] = []
        for item in data:
            body = item.get("body") or item.get("data")
            document = json.loads(body) if isinstance(body, bytes | bytearray | str) else body
            # The KServe v2 body is JSON decoded by the handler: untyped by nature.
            document_ids.append(str(document.get("id") or ""))  # type: ignore[union-attr]
            first = document["inputs"][0]  # type: ignore[index]
            tensors.append(torch.tensor(first["data"], dtype=torch.float32).reshape(first["shape"]))
        assert self.model is not None
        with torch.inference_mode():
            out = self.model(torch.cat(tensors) if len(tensors) > 1 else tensors[0])
        responses: list[bytes] = []
        start = 0
        for index, tensor in enumerate(tensors):
            rows = out[start : start + tensor.shape[0]]
            start += tensor.shape[0]
            context.set_response_content_type(index, "application/json")  # type: ignore[attr-defined]
            request_id = context.get_request_id(index)  # type: ignore[attr-defined]
            document = {
                "id": document_ids[index] or request_id,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "outputs": [
                    {
                        "name": OUTPUT_NAME,
                        "datatype": "FP32",
                        "shape": list(rows.shape),
                        "data": rows.flatten().tolist(),
                    }
                ],
            }
            responses.append(json.dumps(document, separators=(",", ":")).encode())
        return responses


_service = TorchScriptOIPHandler()


def handle(data: list[dict[str, object]] | None, context: object) -> list[bytes] | None:
    """TorchServe's module-level entry point."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
