"""Reference server: the floor of Python's grpc.aio.

``ModelInfer`` over a raw-bytes generic handler that answers every call with one prebuilt,
correct ``ModelInferResponse`` (the no-op model's output for the bench's request), so no
protobuf, numpy or model work happens per call. What it costs per request is what grpc.aio
itself costs: the least any Python server built on grpc.aio can spend per unary call.

    python -m bench.runtime.floor --port PORT --reply FILE
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from bench.runtime.payloads import GRPC_SERVICE


async def serve(port: int, reply: bytes) -> None:
    """Serve until killed."""
    import grpc

    async def model_infer(request: bytes, context: Any) -> bytes:
        del request, context
        return reply

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        GRPC_SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def noop_reply(model: str, output_name: str, values: list[float]) -> bytes:
    """A serialized ``ModelInferResponse`` holding ``values`` as one FP32 row."""
    import struct

    from tritonclient.grpc import service_pb2

    response = service_pb2.ModelInferResponse(model_name=model, model_version="1")
    output = response.outputs.add()
    output.name = output_name
    output.datatype = "FP32"
    output.shape.extend([1, len(values)])
    response.raw_output_contents.append(struct.pack(f"<{len(values)}f", *values))
    body: bytes = response.SerializeToString()
    return body


def main() -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.reply.read_bytes()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
