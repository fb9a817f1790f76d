"""KServe's Python model server serving a TorchScript model (runs inside .bench-venvs/kserve).

``kserve.ModelServer`` (FastAPI/uvicorn REST + grpc.aio gRPC, Open Inference Protocol v2) calls
``predict`` once per request: KServe's Python server has no dynamic batcher. Every knob comes
from the command line and is echoed by the launcher (bench/runtime/servers.py) into the results.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

OUTPUT_NAME = "OUTPUT__0"
QUIET_LOGGERS = ("kserve", "kserve.trace", "uvicorn.access")


# kserve ships no type information, so its Model base class is Any to mypy
class TorchScriptModel(Model):  # type: ignore[misc]
    """Loads ``model.pt`` with ``torch.jit.load``; one forward pass per request."""

    def __init__(self, name: str, model_file: str, input_width: int) -> None:
        super().__init__(name)
        self._model_file = model_file
        self._input_width = input_width
        self._model: torch.jit.ScriptModule | None = None

    def load(self) -> bool:
        """Load and warm the model."""
        self._model = torch.jit.load(self._model_file, map_location="cpu").eval()
        with torch.inference_mode():
            for _ in range(3):
                self._model(torch.zeros(1, self._input_width))
        self.ready = True
        return True

    # narrower than kserve's predict (no async/dict payloads): this peer serves OIP requests only
    def predict(  # type: ignore[override]
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        """One forward pass over the request's rows."""
        assert self._model is not None
        rows = payload.inputs[0].as_numpy().copy()
        tensor = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
        with torch.inference_mode():
            out = self._model(tensor).numpy()
        output = InferOutput(name=OUTPUT_NAME, shape=list(out.shape), datatype="FP32")
        # gRPC answers in raw_output_contents (as Triton and Ferry do), REST in JSON ``data``
        output.set_data_from_numpy(out, binary_data=bool(payload.from_grpc))
        return InferResponse(
            model_name=self.name,
            infer_outputs=[output],
            response_id=payload.id or "",
            from_grpc=payload.from_grpc,
        )


def main() -> None:
    """Load the model and serve until terminated."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-file", required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--input-width", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = TorchScriptModel(args.model_name, args.model_file, args.input_width)
    model.load()
    server = ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        enable_grpc=True,
        enable_docs_url=False,
        enable_latency_logging=False,
        access_log_format=None,
    )
    # no per-request log lines (KServe logs every gRPC call and every HTTP access at INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
