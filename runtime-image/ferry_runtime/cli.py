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
        description="Serve a TorchScript model over the Open Inference Protocol v2.",
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
        help="expected SHA-256 of model.pt (default: FERRY_RUNTIME_MODEL_SHA256)",
    )
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
        print(f"ferry-runtime: {error}", file=sys.stderr)
        return 1
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ferry-runtime`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _fetch(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
