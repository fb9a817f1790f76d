"""Format benchmark: TorchScript vs torch.export program vs AOTInductor package (and TorchScript
after ``torch.jit.freeze`` + ``optimize_for_inference``), for the medium MLP and a small
CIFAR-10-style CNN::

    flock /tmp/ferry-bench.lock .venv/bin/python -m bench.formats.run [--quick]

1. writes each model in each format (the PyTorch 2 ones with ``ferry-runtime package``'s code);
2. raw forward rows/s at batch 1, 8 and 32 through Ferry's ``Model`` interface, each format in
   its own process pinned to the server CPU (best of ``--rounds`` rounds: the machine is shared);
3. served throughput and p99 over gRPC at concurrency 32 (``ferry-runtime serve`` pinned to the
   server CPU, the runtime benchmark's load generator on the other CPU);
4. prints the table with ratios vs TorchScript and writes bench/results/formats.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.formats.models import FORMATS, MODELS, write_format
from bench.formats.report import markdown, with_ratios
from bench.runtime.driver import LoadPlan, Payload, measure_cell
from bench.runtime.models import INPUT_NAME, ModelSpec
from bench.runtime.payloads import grpc_infer_request, http_infer_request
from bench.runtime.procs import pinned
from bench.runtime.servers import BatchConfig, start_ferry

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
CONCURRENCY = 32
NOISE_LIMIT = 0.25
"""A served cell is measured again (up to ``ATTEMPTS`` times, the quietest kept) when other
work on the shared machine took more than this many CPUs during it."""
ATTEMPTS = 3


def log(message: str) -> None:
    print(f"[formats {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def raw_forward(
    model_dir: Path, cpus: list[int], threads: int, rounds: int, variant: str = "ferry"
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.formats.raw",
        "--model-dir",
        str(model_dir),
        "--threads",
        str(threads),
        "--rounds",
        str(rounds),
        "--variant",
        variant,
    ]
    done = subprocess.run(
        pinned(command, cpus), cwd=REPO, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"raw forward of {model_dir} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def payload(name: str, width: int, model_dir: Path) -> Payload:
    """One request of one row, and the model's true answer for it (through Ferry's loader)."""
    import numpy as np
    from ferry_runtime.model.loader import LoadOptions, load_model

    row = np.random.default_rng(7).uniform(-1, 1, (1, width)).astype(np.float32)
    model = load_model(LoadOptions(model_dir, device="cpu", threads=1))
    with model.thread_context():
        (expected,) = model.forward([row])
    rows = row.tolist()
    return Payload(
        grpc_raw=grpc_infer_request(name, INPUT_NAME, rows, raw=True),
        grpc_typed=grpc_infer_request(name, INPUT_NAME, rows, raw=False),
        http_json=http_infer_request(INPUT_NAME, rows),
        expected=[float(v) for v in expected[0]],
    )


def served(
    name: str,
    width: int,
    model_dir: Path,
    *,
    plan: LoadPlan,
    server_cpus: list[int],
    loadgen_cpus: list[int],
    threads: int,
    batch: BatchConfig,
    workdir: Path,
) -> dict[str, Any]:
    spec = ModelSpec(name, (width,), name)
    server = start_ferry(spec, model_dir, batch, cpus=server_cpus, threads=threads, logs=workdir)
    request = payload(name, width, model_dir)
    cells: list[dict[str, Any]] = []
    try:
        for _ in range(ATTEMPTS):
            cells.append(
                measure_cell(
                    server,
                    name,
                    "grpc",
                    CONCURRENCY,
                    payload=request,
                    plan=plan,
                    loadgen_cpus=loadgen_cpus,
                    loadgen_processes=1,
                    jobs_dir=workdir / "jobs",
                )
            )
            if cells[-1]["other_cpu"] <= NOISE_LIMIT:
                break
            log(f"{name}: other work took {cells[-1]['other_cpu']:.2f} CPUs; measuring again")
    finally:
        server.stop()
    quietest = min(cells, key=lambda cell: cell["other_cpu"])
    return quietest | {"startup_s": server.startup_s, "attempts": len(cells)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short cells (a smoke run)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS / "formats")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, loadgen_cpus = [cpus[0]], [cpus[-1]] if len(cpus) > 1 else [cpus[0]]
    threads = 1
    plan = (
        LoadPlan(warmup_requests=200, warmup_s=1.0, requests=2_000, duration_s=3.0)
        if args.quick
        else LoadPlan(warmup_requests=500, warmup_s=2.0, requests=1_000_000, duration_s=10.0)
    )
    rounds = 1 if args.quick else args.rounds
    batch = BatchConfig(enabled=True, max_batch_size=32, max_delay_ms=5.0)
    import torch

    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ferry-formats-") as temp:
        workdir = Path(temp)
        for name in args.models.split(","):
            model = MODELS[name]
            for model_format in FORMATS:
                directory = workdir / name / model_format
                began = time.monotonic()
                write_format(model, model_format, directory)
                made_s = time.monotonic() - began
                variant = "plain" if model_format == "torchscript" else "ferry"
                raw = raw_forward(directory, server_cpus, threads, rounds, variant)
                log(f"{name} {model_format}: written in {made_s:.1f}s, raw {raw['rows_per_s']}")
                cell = served(
                    name,
                    model.input_width,
                    directory,
                    plan=plan,
                    server_cpus=server_cpus,
                    loadgen_cpus=loadgen_cpus,
                    threads=threads,
                    batch=batch,
                    workdir=workdir,
                )
                if cell.get("errors") or cell.get("validation_error"):
                    raise RuntimeError(f"{name} {model_format}: served cell failed: {cell}")
                log(
                    f"{name} {model_format}: served {cell['throughput_rps']:.0f} req/s, "
                    f"p99 {cell['p99_ms']:.1f} ms"
                )
                size = sum(path.stat().st_size for path in directory.iterdir())
                rows.append(
                    {
                        "model": name,
                        "format": model_format,
                        "packaging_s": made_s,
                        "size_bytes": size,
                        "raw": raw["rows_per_s"],
                        "served_rps": cell["throughput_rps"],
                        "served_p99_ms": cell["p99_ms"],
                        "served_p50_ms": cell["p50_ms"],
                        "startup_s": cell["startup_s"],
                        "server_cpu": cell["server_cpu"],
                        "other_cpu": cell["other_cpu"],
                        "attempts": cell["attempts"],
                    }
                )
            frozen = raw_forward(
                workdir / name / "torchscript", server_cpus, threads, rounds, "frozen"
            )
            log(
                f"{name} torchscript-frozen: raw {frozen['rows_per_s']}, "
                f"load-time verdict {frozen['load_time_verdict']}"
            )
            rows.append(
                {
                    "model": name,
                    "format": "torchscript frozen (raw only)",
                    "raw": frozen["rows_per_s"],
                    "max_abs_diff_vs_torchscript": frozen["max_abs_diff_vs_plain"],
                    "load_time_verdict": frozen["load_time_verdict"],
                }
            )
    rows = with_ratios(rows)
    meta = {
        "started_at": started_at,
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "server_cpus": ",".join(map(str, server_cpus)),
        "loadgen_cpus": ",".join(map(str, loadgen_cpus)),
        "threads": threads,
        "concurrency": CONCURRENCY,
        "max_batch_size": batch.max_batch_size,
        "max_delay_ms": batch.max_delay_ms,
        "duration_s": plan.duration_s,
        "rounds": rounds,
        "quick": args.quick,
        "loadavg": Path("/proc/loadavg").read_text().strip(),
    }
    table = markdown(rows, meta)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    args.output.with_suffix(".md").write_text(table)
    log(f"wrote {args.output.with_suffix('.json')} and {args.output.with_suffix('.md')}")
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    raise SystemExit(main())
