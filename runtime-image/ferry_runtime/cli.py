"""``ferry-runtime``: ``serve`` (the model server) and ``fetch URI DIR`` (the init container)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferry-runtime",
        description="Serve a PyTorch model (torch.export program, AOTInductor package or "
        "TorchScript) over the Open Inference Protocol v2.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="serve the model directory (settings from FERRY_RUNTIME_* variables)",
        description="Serve a model over OIP v2 REST and gRPC. Settings come from the "
        "FERRY_RUNTIME_* environment (docs/contracts.md); these flags override them.",
    )
    serve.add_argument("--model-dir", type=Path, help="FERRY_RUNTIME_MODEL_DIR")
    serve.add_argument("--model-name", help="FERRY_RUNTIME_MODEL_NAME")
    serve.add_argument("--host", help="FERRY_RUNTIME_HOST")
    serve.add_argument("--http-port", type=int, help="FERRY_RUNTIME_HTTP_PORT")
    serve.add_argument("--grpc-port", type=int, help="FERRY_RUNTIME_GRPC_PORT")
    serve.add_argument("--device", choices=["auto", "cpu", "cuda"], help="FERRY_RUNTIME_DEVICE")
    serve.add_argument("--log-level", help="FERRY_RUNTIME_LOG_LEVEL")

    fetch = commands.add_parser(
        "fetch",
        help="download a model directory (file://, http(s)://, s3://) into DIR",
    )
    fetch.add_argument("uri", help="model URI (docs/contracts.md)")
    fetch.add_argument("dest", type=Path, metavar="DIR", help="destination directory")
    fetch.add_argument(
        "--sha256",
        default=os.environ.get("FERRY_RUNTIME_MODEL_SHA256") or None,
        help="expected SHA-256 of model.pt2 or model.pt (default: FERRY_RUNTIME_MODEL_SHA256)",
    )

    package = commands.add_parser(
        "package",
        help="turn an nn.Module factory into a servable model directory (model.pt2)",
        description="Import FACTORY (pkg.module:build or path/to/file.py:build), export the "
        "module it returns with a dynamic batch dimension, compile it with AOTInductor (needs "
        "a C++ compiler) or keep the exported program, check it against eager on a random "
        "batch, write model.pt2 and model.json into --out and print the SHA-256 of model.pt2 "
        "(spec.model.sha256).",
    )
    package.add_argument("factory", help="MODULE:FACTORY or FILE.py:FACTORY returning nn.Module")
    package.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="NAME:DATATYPE:SHAPE",
        help="one per forward() argument, in order; the batch dimension first: x:FP32:-1,3,32,32",
    )
    package.add_argument(
        "--output", action="append", default=[], metavar="NAME", help="output names, in order"
    )
    package.add_argument(
        "--format", choices=["aot-inductor", "exported-program"], default="aot-inductor"
    )
    package.add_argument("--out", type=Path, required=True, metavar="DIR")
    package.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    package.add_argument("--max-batch-size", type=int, default=1024)
    package.add_argument("--rtol", type=float, default=1e-4)
    package.add_argument("--atol", type=float, default=1e-5)
    return parser


def _serve(args: argparse.Namespace) -> int:
    # Before torch loads: idle OpenMP workers sleep instead of spinning, which would take
    # CPU from the event loop between batches (the user's environment still wins).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ferry_runtime.model.base import ModelLoadError
    from ferry_runtime.server import run
    from ferry_runtime.settings import RuntimeSettings

    overrides = {
        key: value
        for key, value in {
            "model_dir": args.model_dir,
            "model_name": args.model_name,
            "host": args.host,
            "http_port": args.http_port,
            "grpc_port": args.grpc_port,
            "device": args.device,
            "log_level": args.log_level,
        }.items()
        if value is not None
    }
    try:
        settings = RuntimeSettings(**overrides)
    except ValidationError as error:
        print(f"ferry-runtime: invalid settings:\n{error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return run(settings)
    except ModelLoadError as error:
        from ferry_runtime.termination import report_load_failure

        print(f"ferry-runtime: {error}", file=sys.stderr)
        return report_load_failure(str(error))
    except OSError as error:
        print(f"ferry-runtime: {error}", file=sys.stderr)
        return 1


def _fetch(args: argparse.Namespace) -> int:
    from ferry_runtime.fetch import FetchError, fetch_model

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        path = fetch_model(args.uri, args.dest, sha256=args.sha256)
    except FetchError as error:
        print(f"ferry-runtime fetch: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _package(args: argparse.Namespace) -> int:
    from ferry_runtime.model.base import ModelLoadError
    from ferry_runtime.model.package import InputSpec, PackageError, PackageRequest, package_model

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        request = PackageRequest(
            factory=args.factory,
            inputs=tuple(InputSpec.parse(text) for text in args.input),
            out=args.out,
            format=args.format,
            outputs=tuple(args.output),
            device=args.device,
            max_batch_size=args.max_batch_size,
            rtol=args.rtol,
            atol=args.atol,
        )
        digest = package_model(request)
    except (PackageError, ModelLoadError) as error:
        print(f"ferry-runtime package: {error}", file=sys.stderr)
        return 1
    print(digest)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ferry-runtime`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "package":
        return _package(args)
    return _fetch(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
