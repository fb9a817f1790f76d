"""Does a pod with more CPUs serve more? Ferry on 1 and 2 server CPUs, with and without
front-end processes (``FERRY_RUNTIME_FRONTEND_PROCESSES``).

    .venv/bin/python -m bench.runtime.cores [--rounds 3] [--seconds 4]

Medium MLP, b32/5ms, one torch thread (the forward pass uses one core in every
configuration, so whatever a second CPU adds is the transports'). Four servers run at once:

- ``1 cpu``: one process on the last CPU (the benchmark's headline configuration);
- ``1 cpu + 1 front end``: the same CPU, the transports in a front-end process (the IPC's cost);
- ``2 cpus``: one process allowed two CPUs;
- ``2 cpus + 1 front end``: the compute process and one front end on two CPUs.

Each cell (REST and gRPC at concurrency 64) is measured on every server in turn, in a rotating
order, ``--rounds`` times; figures are medians. The load generator runs on the first CPU: on a
two-CPU machine the two-CPU servers share it with the load generator (its CPU use is printed),
which understates them. So each row also gives the CPU time per request of the compute process
and of the front ends (CPU used ÷ requests served, over the same window): with enough cores for
the front ends, the compute process's figure bounds the throughput ("compute-bound req/s").
Prints a table and writes ``bench/results/cores.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.runtime.ab import measure_medium, start_medium
from bench.runtime.driver import LoadPlan
from bench.runtime.models import MODELS, write_model_dir
from bench.runtime.orchestrate import _payload
from bench.runtime.procs import cpu_seconds, process_tree
from bench.runtime.servers import Server

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
CELLS = (("http", 64), ("grpc", 64))


def configurations(cpus: list[int]) -> dict[str, tuple[list[int], int]]:
    """Name → (server CPUs, front-end processes)."""
    one, two = cpus[-1:], cpus[-2:]
    return {
        "1 cpu": (one, 0),
        "1 cpu + 1 front end": (one, 1),
        "2 cpus": (two, 0),
        "2 cpus + 1 front end": (two, 1),
    }


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median figures per (cell, configuration) and the ratio to ``1 cpu`` (pure)."""
    grouped: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["protocol"], row["concurrency"], row["config"]), []).append(row)
    out = []
    for (protocol, concurrency, config), group in grouped.items():
        out.append(
            {
                "protocol": protocol,
                "concurrency": concurrency,
                "config": config,
                "rps": statistics.median(r["rps"] for r in group),
                "p99_ms": statistics.median(r["p99_ms"] for r in group),
                "server_cores": statistics.median(r["server_cores"] for r in group),
                "loadgen_cores": statistics.median(r["loadgen_cores"] for r in group),
                "compute_us": statistics.median(
                    r["compute_cores"] / r["rps"] * 1e6 for r in group if r["rps"]
                ),
                "front_end_us": statistics.median(
                    r["front_end_cores"] / r["rps"] * 1e6 for r in group if r["rps"]
                ),
                "rounds": len(group),
            }
        )
    base = {(r["protocol"], r["concurrency"]): r["rps"] for r in out if r["config"] == "1 cpu"}
    for row in out:
        reference = base.get((row["protocol"], row["concurrency"]))
        row["vs_1_cpu"] = row["rps"] / reference if reference else None
    return out


def markdown(summary: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The results as a Markdown table (pure)."""
    lines = [
        f"Run {meta['started']}, {meta['rounds']} rounds of {meta['seconds']} s per cell; "
        f"CPUs {meta['cpus']}, load generator on CPU {meta['loadgen_cpus']}; "
        f"load average at start {meta['loadavg_start']}, at end {meta['loadavg_end']}.",
        "",
        "| protocol | conc. | server | req/s | x 1 cpu | p99 ms | server cores | loadgen cores "
        "| compute process µs/req | front ends µs/req | compute-bound req/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        ratio = "" if row["vs_1_cpu"] is None else f"{row['vs_1_cpu']:.2f}"
        lines.append(
            f"| {row['protocol']} | {row['concurrency']} | {row['config']} | {row['rps']:,.0f} | "
            f"{ratio} | {row['p99_ms']:.1f} | {row['server_cores']:.2f} | "
            f"{row['loadgen_cores']:.2f} | {row['compute_us']:.0f} | "
            f"{row['front_end_us']:.0f} | {1e6 / row['compute_us']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("needs at least two CPUs", file=sys.stderr)
        return 2
    loadgen_cpus = cpus[:1]
    plan = LoadPlan(warmup_requests=300, warmup_s=0.5, requests=10**6, duration_s=args.seconds)
    meta = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "cpus": cpus,
        "loadgen_cpus": loadgen_cpus,
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ferry-cores-") as tmp:
        root = Path(tmp)
        model_dir = write_model_dir(MODELS["medium"], root / "medium")
        payload = _payload(MODELS["medium"], model_dir)
        servers: dict[str, Server] = {}
        try:
            for name, (server_cpus, front_ends) in configurations(cpus).items():
                settings = {"frontend_processes": str(front_ends)}
                logs = root / f"logs-{len(servers)}"
                servers[name] = start_medium(None, model_dir, server_cpus, logs, settings)
            names = list(servers)
            measure = partial(
                measure_medium,
                payload=payload,
                plan=plan,
                loadgen_cpus=loadgen_cpus,
                jobs_dir=root / "jobs",
            )
            for protocol, concurrency in CELLS:
                for round_index in range(args.rounds):
                    order = names[round_index % len(names) :] + names[: round_index % len(names)]
                    for name in order:
                        root_pid = servers[name].process.pid
                        front_end_pids = [pid for pid in process_tree(root_pid) if pid != root_pid]
                        compute0 = cpu_seconds(root_pid)
                        front0 = sum(cpu_seconds(pid) for pid in front_end_pids)
                        wall0 = time.monotonic()
                        cell = measure(servers[name], protocol, concurrency)
                        wall = time.monotonic() - wall0  # includes the warm-up: same load
                        compute_cores = (cpu_seconds(root_pid) - compute0) / wall
                        front_cores = (
                            sum(cpu_seconds(pid) for pid in front_end_pids) - front0
                        ) / wall
                        row = {
                            "protocol": protocol,
                            "concurrency": concurrency,
                            "config": name,
                            "round": round_index,
                            "rps": cell["throughput_rps"],
                            "p99_ms": cell["p99_ms"],
                            "server_cores": cell["server_cpu"],
                            "loadgen_cores": cell["loadgen_cpu"],
                            "errors": cell.get("errors", 0),
                            "compute_cores": compute_cores,
                            "front_end_cores": front_cores,
                        }
                        rows.append(row)
                        print(
                            f"{protocol} c{concurrency} round {round_index} {name}: "
                            f"{row['rps']:,.0f} req/s, p99 {row['p99_ms']:.1f} ms, server "
                            f"{row['server_cores']:.2f} cores, errors {row['errors']}",
                            flush=True,
                        )
        finally:
            for server in servers.values():
                server.process.stop()
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    summary = summarize(rows)
    text = markdown(summary, meta)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"meta": meta, "summary": summary, "rows": rows}
    (RESULTS / "cores.json").write_text(json.dumps(document, indent=2) + "\n")
    (RESULTS / "cores.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
