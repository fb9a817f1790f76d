"""``ferry-operator``: run the operator, preview what it renders, or print the CRD."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferry-operator", description="Ferry: run PyTorch models on Kubernetes."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="watch ModelDeployments and reconcile them")
    run.add_argument(
        "--namespace",
        action="append",
        default=None,
        help="namespace to watch (repeatable); default: FERRY_WATCH_NAMESPACES or all",
    )
    peering = run.add_mutually_exclusive_group()
    peering.add_argument("--standalone", action="store_true", help="no peering (single replica)")
    peering.add_argument(
        "--require-peering",
        action="store_true",
        help="refuse to start without Kopf's peering CRD (high availability); by default a "
        "cluster without it gets a warning and a standalone operator",
    )
    run.add_argument(
        "--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    render = commands.add_parser("render", help="print the manifests a ModelDeployment yields")
    render.add_argument("file", type=Path, help="ModelDeployment YAML file ('-' for stdin)")
    render.add_argument("--runtime-image", default=None, help="override the default runtime image")
    commands.add_parser("crd", help="print the generated CustomResourceDefinition")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ferry-operator`` console script."""
    args = _build_parser().parse_args(argv)
    if args.command == "crd":
        from ferry_operator.crd import crd_yaml

        sys.stdout.write(crd_yaml())
        return 0
    if args.command == "render":
        from ferry_operator.render.preview import render_file_command

        return render_file_command(args.file, runtime_image=args.runtime_image)
    from ferry_operator.handlers import run_operator

    return run_operator(
        namespaces=args.namespace,
        standalone=args.standalone,
        liveness=args.liveness,
        require_peering=args.require_peering,
    )


if __name__ == "__main__":
    raise SystemExit(main())
