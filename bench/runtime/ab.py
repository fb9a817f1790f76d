"""Interleaved A/B of two checkouts of the runtime on the benchmark's cells.

    .venv/bin/python bench/runtime/ab.py --base /path/to/other/checkout [--rounds 5]

On a shared machine, two benchmark runs minutes apart see different background load, so their
ratio mostly measures the neighbours. Here both servers (``--base``'s ``runtime-image`` on
PYTHONPATH, and this checkout's) run at once, pinned to the same CPU, and each cell is measured
on one then the other, alternating, ``--rounds`` times; the per-cell ratio is the median of the
rounds' ratios (this checkout / base). Besides throughput, the server's CPU time per request is
compared: under a neighbour's load it moves far less than throughput does. Prints a table and
writes ``bench/results/ab.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.runtime import servers as server_module
from bench.runtime.driver import LoadPlan, measure_cell
from bench.runtime.models import MODELS, write_model_dir
from bench.runtime.orchestrate import _payload
from bench.runtime.servers import BatchConfig, Server, start_ferry

REPO = Path(__file__).resolve().parents[2]
CELLS = (("http", 1), ("http", 32), ("http", 64), ("grpc", 1), ("grpc", 32), ("grpc", 64))


def start_medium(
    source: Path | None,
    model_dir: Path,
    cpus: list[int],
    logs: Path,
    settings: dict[str, str] | None = None,
) -> Server:
    """Ferry (b32/5ms, one torch thread) serving the medium MLP from ``source``'s runtime-image
    (``None``: this checkout), pinned to ``cpus``, with extra runtime ``settings``."""
    previous = os.environ.get("PYTHONPATH")
    base_env = server_module._base_env
    if settings:  # start_ferry drops FERRY_* from the environment: add these after it does
        extra = {f"FERRY_RUNTIME_{key.upper()}": value for key, value in settings.items()}
        server_module._base_env = lambda threads: base_env(threads) | extra
    if source is not None:
        os.environ["PYTHONPATH"] = str(source / "runtime-image")
    else:
        os.environ.pop("PYTHONPATH", None)
    try:
        batch = BatchConfig(enabled=True, max_batch_size=32, max_delay_ms=5.0)
        return start_ferry(MODELS["medium"], model_dir, batch, cpus=cpus, threads=1, logs=logs)
    finally:
        server_module._base_env = base_env
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


def measure_medium(
    server: Server,
    protocol: str,
    concurrency: int,
    *,
    payload: Any,
    plan: LoadPlan,
    loadgen_cpus: list[int],
    jobs_dir: Path,
) -> dict[str, Any]:
    """One cell on the medium MLP with one load generator process."""
    return measure_cell(
        server,
        "medium",
        protocol,
        concurrency,
        payload=payload,
        plan=plan,
        loadgen_cpus=loadgen_cpus,
        loadgen_processes=1,
        jobs_dir=jobs_dir,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=Path, required=True, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="per measurement")
    parser.add_argument(
        "--head-set",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="a runtime setting for this checkout's server, e.g. serving_thread_nice=0",
    )
    args = parser.parse_args(argv)
    head_settings = dict(item.split("=", 1) for item in args.head_set)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, loadgen_cpus = cpus[-1:], cpus[:-1] or cpus
    plan = LoadPlan(warmup_requests=300, warmup_s=0.3, requests=10**6, duration_s=args.seconds)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ferry-ab-") as tmp:
        root = Path(tmp)
        model_dir = write_model_dir(MODELS["medium"], root / "medium")
        payload = _payload(MODELS["medium"], model_dir)
        servers = {
            "base": start_medium(args.base.resolve(), model_dir, server_cpus, root / "logs-base"),
            "head": start_medium(None, model_dir, server_cpus, root / "logs-head", head_settings),
        }
        try:
            for protocol, concurrency in CELLS:
                ratios, cpu_ratios = [], []
                figures: dict[str, list[float]] = {"base": [], "head": []}
                for round_index in range(args.rounds):
                    order = ("base", "head") if round_index % 2 == 0 else ("head", "base")
                    got, cpu = {}, {}
                    for name in order:
                        cell = measure_medium(
                            servers[name],
                            protocol,
                            concurrency,
                            payload=payload,
                            plan=plan,
                            loadgen_cpus=loadgen_cpus,
                            jobs_dir=root / "jobs",
                        )
                        got[name] = cell["throughput_rps"]
                        cpu[name] = cell["server_cpu"] / max(cell["throughput_rps"], 1e-9)
                        figures[name].append(cell["throughput_rps"])
                    ratios.append(got["head"] / got["base"])
                    cpu_ratios.append(cpu["head"] / cpu["base"])
                row = {
                    "protocol": protocol,
                    "concurrency": concurrency,
                    "base_rps": statistics.median(figures["base"]),
                    "head_rps": statistics.median(figures["head"]),
                    "ratio": statistics.median(ratios),
                    "ratios": ratios,
                    "cpu_per_request_ratio": statistics.median(cpu_ratios),
                    "cpu_ratios": cpu_ratios,
                }
                rows.append(row)
                print(
                    f"{protocol} c{concurrency}: base {row['base_rps']:.0f} req/s, this checkout "
                    f"{row['head_rps']:.0f} req/s, median ratio {row['ratio']:.3f} "
                    f"(rounds {', '.join(f'{r:.3f}' for r in ratios)}); server CPU per request "
                    f"ratio {row['cpu_per_request_ratio']:.3f}",
                    flush=True,
                )
        finally:
            for server in servers.values():
                server.process.stop()
    geomean = math.exp(statistics.fmean(math.log(row["ratio"]) for row in rows))
    cpu_geomean = math.exp(statistics.fmean(math.log(row["cpu_per_request_ratio"]) for row in rows))
    print(
        f"geometric mean of the per-cell ratios: throughput {geomean:.3f}, "
        f"server CPU per request {cpu_geomean:.3f}"
    )
    out = REPO / "bench" / "results" / "ab.json"
    document = {
        "rows": rows,
        "geomean": geomean,
        "cpu_per_request_geomean": cpu_geomean,
        "head_settings": head_settings,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
