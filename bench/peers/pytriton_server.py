"""NVIDIA Triton through PyTriton serving a TorchScript model (runs inside .bench-venvs/pytriton).

Triton's C++ HTTP and gRPC front ends and its dynamic batcher receive the requests; PyTriton's
Python proxy process runs ``infer`` on the batch Triton formed. Every knob comes from the
command line and is echoed by the launcher (bench/runtime/servers.py) into the results.
"""

from __future__ import annotations

import argparse
import os
import sysconfig

import numpy as np
import torch
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

INPUT_NAME = "INPUT__0"
OUTPUT_NAME = "OUTPUT__0"


def main() -> None:
    """Bind the model and serve until terminated."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-file", required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--input-width", type=int, required=True)
    parser.add_argument("--output-width", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=0, help="0: batching off")
    parser.add_argument("--max-queue-delay-us", type=int, default=5000)
    parser.add_argument(
        "--access-token",
        required=True,
        help="PyTriton's token for its restricted endpoints (model config, repository...); "
        "inference itself is not restricted",
    )
    args = parser.parse_args()

    # Triton's Python backend stub loads ``libpython3.X.so``: make it the one of this very
    # interpreter, not another build of the same minor version found first by the loader
    # (a mismatched libpython fails the stub while it imports the standard library).
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p
        )
    torch.set_num_threads(args.threads)
    model = torch.jit.load(args.model_file, map_location="cpu").eval()
    with torch.inference_mode():
        for _ in range(3):
            model(torch.zeros(max(1, args.max_batch_size), args.input_width))

    # pytriton's decorators are not annotated
    @batch  # type: ignore[untyped-decorator]
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        rows = torch.from_numpy(np.ascontiguousarray(inputs[INPUT_NAME], dtype=np.float32))
        with torch.inference_mode():
            return {OUTPUT_NAME: model(rows).numpy()}

    batching = args.max_batch_size > 0
    config = ModelConfig(
        max_batch_size=args.max_batch_size if batching else 1,
        batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us)
        if batching
        else None,
        batching=True,
    )
    triton_config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        allow_metrics=False,
        log_verbose=0,
    )
    security = TritonSecurityConfig(access_token=args.access_token)
    with Triton(config=triton_config, security_config=security) as triton:
        triton.bind(
            model_name=args.model_name,
            infer_func=infer,
            inputs=[Tensor(name=INPUT_NAME, dtype=np.float32, shape=(args.input_width,))],
            outputs=[Tensor(name=OUTPUT_NAME, dtype=np.float32, shape=(args.output_width,))],
            config=config,
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
