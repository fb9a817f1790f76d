"""MLServer custom runtime serving a TorchScript model (runs inside .bench-venvs/mlserver).

Configured through ``model-settings.json``: ``parameters.uri`` points at ``model.pt`` and
``parameters.extra.torch_threads`` sets torch's intra-op threads. MLServer's adaptive batcher
(``max_batch_size``, ``max_batch_time``) hands ``predict`` the merged rows of several requests;
this runtime only decodes, runs the forward pass and encodes.
"""

from __future__ import annotations

import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

OUTPUT_NAME = "OUTPUT__0"


class TorchScriptModel(MLModel):
    """Loads ``model.pt`` with ``torch.jit.load`` and runs it under ``inference_mode``."""

    async def load(self) -> bool:
        """Load and warm the model at the largest batch the batcher can form."""
        extra = (self.settings.parameters.extra or {}) if self.settings.parameters else {}
        torch.set_num_threads(int(extra.get("torch_threads", 1)))
        uri = await get_model_uri(self.settings)
        self._model = torch.jit.load(uri, map_location="cpu")
        self._model.eval()
        width = int(self.settings.inputs[0].shape[-1])
        warm_rows = max(1, self.settings.max_batch_size)
        with torch.inference_mode():
            for _ in range(3):
                self._model(torch.zeros(warm_rows, width))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """One forward pass over the (possibly merged) request."""
        rows = NumpyCodec.decode_input(payload.inputs[0])
        tensor = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
        with torch.inference_mode():
            out = self._model(tensor).numpy()
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(OUTPUT_NAME, out)],
        )
