"""The whole runtime benchmark: venvs, models, raw torch limit, every server x model x protocol
x concurrency, perf_analyzer against Ferry, then JSON + Markdown + PNG (and, for a full run,
the generated section of docs/performance.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.peers.venvs import PEER_VENVS, ensure_all, venv_dir
from bench.runtime import floor, perfanalyzer, profile, report, stats
from bench.runtime.driver import LoadPlan, Payload, measure_cell
from bench.runtime.models import (
    INPUT_NAME,
    MODELS,
    OUTPUT_NAME,
    ModelSpec,
    reference_output,
    sample_input,
)
from bench.runtime.models import write_model_dir as write_model
from bench.runtime.payloads import grpc_infer_request, http_infer_request
from bench.runtime.plans import PLANS, QUICK, Plan
from bench.runtime.procs import pinned
from bench.runtime.publish import RESULTS, log, render_only, write_reports
from bench.runtime.servers import (
    BatchConfig,
    Server,
    ferry_available,
    start_ferry,
    start_grpc_floor,
    start_kserve,
    start_mlserver,
    start_pytriton,
    start_torchserve,
)

REPO = Path(__file__).resolve().parents[2]
OFF_BATCHING = BatchConfig(enabled=False)
PEER_SERVERS = ("mlserver", "torchserve", "pytriton", "kserve")


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _payload(spec: ModelSpec, model_dir: Path) -> Payload:
    rows = sample_input(spec, rows=1)
    return Payload(
        grpc_raw=grpc_infer_request(spec.name, INPUT_NAME, rows, raw=True),
        grpc_typed=grpc_infer_request(spec.name, INPUT_NAME, rows, raw=False),
        http_json=http_infer_request(INPUT_NAME, rows),
        expected=reference_output(model_dir, rows)[0],
    )


@dataclass
class Run:
    """Mutable state of one benchmark run."""

    plan: Plan
    server_cpus: list[int]
    loadgen_cpus: list[int]
    loadgen_processes: int
    mlserver_workers: int
    workdir: Path
    started: float = field(default_factory=time.monotonic)
    model_dirs: dict[str, Path] = field(default_factory=dict)
    payloads: dict[str, Payload] = field(default_factory=dict)
    raw: dict[str, dict[str, Any]] = field(default_factory=dict)
    cells: list[dict[str, Any]] = field(default_factory=list)
    servers: list[dict[str, Any]] = field(default_factory=list)
    perf: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    pyspy: Path | None = None
    """py-spy executable when ``--profile`` was given."""
    profiles: list[dict[str, Any]] = field(default_factory=list)

    torch_threads: int = 0
    """0: one per server CPU."""

    @property
    def threads(self) -> int:
        """Torch intra-op threads every server (and the raw limit) gets."""
        return self.torch_threads or len(self.server_cpus)

    @property
    def logs(self) -> Path:
        """Server and tool logs of this run."""
        return self.workdir / "logs"


def make_models(run: Run) -> None:
    """Write each model's directory and pre-encode its requests."""
    for name in run.plan.models:
        spec = MODELS[name]
        run.model_dirs[name] = write_model(spec, run.workdir / "models" / name)
        run.payloads[name] = _payload(spec, run.model_dirs[name])


def measure_raw(run: Run) -> None:
    """The raw torch limit of each model, pinned to the server CPUs with the same threads."""
    for name, model_dir in run.model_dirs.items():
        cmd = [
            sys.executable,
            "-m",
            "bench.runtime.rawtorch",
            "--model-dir",
            str(model_dir),
            "--threads",
            str(run.threads),
            "--budget-s",
            str(run.plan.raw_budget_s),
        ]
        done = subprocess.run(
            pinned(cmd, run.server_cpus), cwd=REPO, capture_output=True, text=True, check=True
        )
        run.raw[name] = json.loads(done.stdout.strip().splitlines()[-1])
        log(
            f"raw torch {name}: best {run.raw[name]['best_rows_per_s']:.0f} rows/s "
            f"@{run.raw[name]['best_batch']}, forward@1 {run.raw[name]['forward_b1_ms']:.4f} ms"
        )


def measure_quietly(
    run: Run, server: Server, model: str, protocol: str, concurrency: int
) -> dict[str, Any]:
    """Measure a cell; when other work on the machine took more than the plan's noise limit of
    CPU meanwhile, measure again (up to ``noise_retries`` times, and only while the run is
    younger than ``retry_until_s``) and keep the quietest attempt."""
    best: dict[str, Any] | None = None
    for attempt in range(1 + run.plan.noise_retries):
        cell = measure_cell(
            server,
            model,
            protocol,
            concurrency,
            payload=run.payloads[model],
            plan=run.plan.load,
            loadgen_cpus=run.loadgen_cpus,
            loadgen_processes=run.loadgen_processes,
            jobs_dir=run.workdir / "jobs",
        )
        cell["attempts"] = attempt + 1
        if best is None or cell["other_cpu"] < best["other_cpu"]:
            best = cell | {"attempts": attempt + 1}
        if cell["other_cpu"] <= run.plan.noise_cpu_limit:
            break
        if time.monotonic() - run.started > run.plan.retry_until_s:
            break
    assert best is not None
    return best


def exercise(run: Run, server: Server, models: list[str]) -> None:
    """Warm the server up, then measure every model x protocol x concurrency cell."""
    for model in models:
        for protocol in run.plan.protocols:
            if protocol not in server.endpoints[model]:
                continue
            try:
                measure_cell(
                    server,
                    model,
                    protocol,
                    8,
                    payload=run.payloads[model],
                    plan=LoadPlan(200, run.plan.server_warmup_s, 200, 0.2),
                    loadgen_cpus=run.loadgen_cpus,
                    loadgen_processes=run.loadgen_processes,
                    jobs_dir=run.workdir / "jobs",
                )
            except RuntimeError as exc:
                run.skipped.append(f"{server.series} {model} {protocol} warm-up failed: {exc}")
                continue
            for concurrency in run.plan.concurrencies:
                try:
                    cell = measure_quietly(run, server, model, protocol, concurrency)
                except RuntimeError as exc:
                    run.skipped.append(
                        f"{server.series} {model} {protocol} c={concurrency} failed: {exc}"
                    )
                    continue
                run.cells.append(cell)
                log(
                    f"{server.series:<22} {model:<6} {protocol:<4} c={concurrency:<3} "
                    f"{cell['throughput_rps']:>9.0f} req/s  p50 {cell.get('p50_ms', 0):7.2f} ms  "
                    f"p99 {cell.get('p99_ms', 0):7.2f} ms  errors {cell['errors']}  "
                    f"cpu srv {cell['server_cpu']:.2f} lg {cell['loadgen_cpu']:.2f} "
                    f"other {cell['other_cpu']:.2f}"
                )


def _start_and_exercise(
    run: Run,
    series: str,
    start: Callable[[], Server],
    models: list[str],
    after: Callable[[Server], None] | None = None,
) -> None:
    log(f"starting {series}")
    try:
        server = start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        run.servers.append({"series": series, "error": str(exc)[-2000:], "knobs": {}})
        run.skipped.append(f"{series} did not start: {str(exc)[-300:]}")
        log(f"{series} did not start: {str(exc)[-300:]}")
        return
    run.servers.append(
        {"series": server.series, "startup_s": server.startup_s, "knobs": server.knobs}
    )
    try:
        exercise(run, server, models)
        if after is not None:
            after(server)
    finally:
        server.stop()


def run_ferry(run: Run) -> None:
    """Ferry: one process per model and batching configuration."""
    missing = ferry_available()
    if missing is not None:
        run.skipped.append(f"ferry: {missing}")
        log(f"ferry skipped: {missing}")
        return
    for name in run.plan.models:
        for batch in run.plan.ferry_batchings:

            def start(name: str = name, batch: BatchConfig = batch) -> Server:
                return start_ferry(
                    MODELS[name],
                    run.model_dirs[name],
                    batch,
                    cpus=run.server_cpus,
                    threads=run.threads,
                    logs=run.logs,
                )

            def after(server: Server, name: str = name) -> None:
                run_perf_analyzer(run, server, name)
                run_profiles(run, server, name)

            _start_and_exercise(
                run, report.series_name("ferry", batch.label) + f" [{name}]", start, [name], after
            )


def run_grpc_floor(run: Run) -> None:
    """The grpc.aio floor on the no-op model: what any grpc.aio server pays per unary call."""
    if "noop" not in run.model_dirs or "grpc" not in run.plan.protocols:
        return
    payload = run.payloads["noop"]
    reply = floor.noop_reply("noop", OUTPUT_NAME, payload.expected)

    def start() -> Server:
        return start_grpc_floor(
            MODELS["noop"], reply, cpus=run.server_cpus, workdir=run.workdir, logs=run.logs
        )

    _start_and_exercise(run, "grpc.aio-floor off", start, ["noop"])


def run_perf_analyzer(run: Run, server: Server, model: str) -> None:
    """perf_analyzer points the plan names for this server (Ferry, and Triton with the same
    batching label)."""
    points = [p for p in run.plan.perf_analyzer if p[0] == model and p[1] == server.batch.label]
    if not points:
        return
    venv = venv_dir(REPO, "perf_analyzer")
    if not perfanalyzer.binary(venv).exists():
        run.skipped.append("perf_analyzer: venv missing")
        return
    for _, _, protocol, concurrency in points:
        # "grpc-stream": perf_analyzer --streaming over the gRPC endpoint (ModelStreamInfer)
        transport = "grpc" if protocol == perfanalyzer.GRPC_STREAM else protocol
        endpoint = server.endpoints[model][transport]
        result = perfanalyzer.run(
            venv,
            model,
            transport,
            endpoint.port,
            concurrency=concurrency,
            cpus=run.loadgen_cpus,
            interval_ms=run.plan.perf_interval_ms,
            timeout_s=run.plan.perf_interval_ms / 1000 * 8 + 30,
            streaming=protocol == perfanalyzer.GRPC_STREAM,
            # extra is a free-form record of each launcher's knobs; PyTriton's launcher puts
            # its access-token headers (a dict[str, str]) there
            headers=server.extra.get("headers"),  # type: ignore[arg-type]
        )
        row = {
            "series": server.series,
            "model": model,
            "protocol": protocol,
            "concurrency": concurrency,
        } | result
        run.perf.append(row)
        log(f"perf_analyzer {server.series} {model} {protocol} c={concurrency}: {result}")


def run_profiles(run: Run, server: Server, model: str) -> None:
    """With ``--profile``: one more pass of each profiled cell with py-spy attached."""
    if run.pyspy is None:
        return
    points = [p for p in run.plan.profile_points if p[0] == model and p[1] == server.batch.label]
    for _, _, protocol, concurrency in points:
        label = server.batch.label.replace("/", "-")
        name = f"{server.name}-{label}-{model}-{protocol}-c{concurrency}"
        output = run.workdir / "profiles" / f"{name}.txt"
        recorder: list[subprocess.Popen[bytes]] = []
        pyspy = run.pyspy
        load = replace(run.plan.load, requests=10**9, duration_s=max(run.plan.load.duration_s, 5.0))

        def attach(
            output: Path = output,
            pyspy: Path = pyspy,
            recorder: list[subprocess.Popen[bytes]] = recorder,
            duration_s: float = load.duration_s,
        ) -> None:
            recorder.append(
                profile.start_recording(
                    pyspy, server.process.pid, duration_s, output, run.loadgen_cpus
                )
            )

        try:
            cell = measure_cell(
                server,
                model,
                protocol,
                concurrency,
                payload=run.payloads[model],
                plan=load,
                loadgen_cpus=run.loadgen_cpus,
                loadgen_processes=run.loadgen_processes,
                jobs_dir=run.workdir / "jobs",
                on_go=attach,
            )
        except RuntimeError as exc:
            run.skipped.append(f"profile {name} failed: {exc}")
            continue
        finally:
            for proc in recorder:
                proc.wait(timeout=load.duration_s + 60)
        if not output.exists():
            err = (
                recorder[0].stderr.read().decode()[-300:] if recorder and recorder[0].stderr else ""
            )
            run.skipped.append(f"profile {name}: py-spy wrote nothing: {err}")
            continue
        stacks = profile.parse_collapsed(output.read_text().splitlines())
        run.profiles.append(
            {
                "series": server.series,
                "model": model,
                "protocol": protocol,
                "concurrency": concurrency,
                "throughput_rps": cell["throughput_rps"],
                "p50_ms": cell.get("p50_ms"),
                "samples": sum(count for _, count in stacks),
                "stacks_file": str(output.relative_to(REPO)),
                "hotspots": [asdict(h) for h in profile.hotspots(stacks)],
            }
        )
        log(f"profiled {name}: {output}")


def run_peers(run: Run, venvs: dict[str, Path | str]) -> None:
    """MLServer and TorchServe (one server per batching configuration serving every model),
    Triton via PyTriton (per batching configuration and model) and KServe (no batcher)."""
    models = {name: (MODELS[name], run.model_dirs[name]) for name in run.plan.models}
    for batch in run.plan.peer_batchings:
        mlserver = venvs.get("mlserver")
        if isinstance(mlserver, Path):

            def start_ml(batch: BatchConfig = batch, python: Path = mlserver) -> Server:
                return start_mlserver(
                    models,
                    batch,
                    cpus=run.server_cpus,
                    threads=run.threads,
                    python=python,
                    workdir=run.workdir,
                    logs=run.logs,
                    parallel_workers=run.mlserver_workers,
                )

            _start_and_exercise(
                run, report.series_name("mlserver", batch.label), start_ml, list(models)
            )
        else:
            run.skipped.append(f"mlserver {batch.label}: venv unavailable: {mlserver}")
        torchserve = venvs.get("torchserve")
        if isinstance(torchserve, Path):

            def start_ts(batch: BatchConfig = batch, python: Path = torchserve) -> Server:
                return start_torchserve(
                    models,
                    batch,
                    cpus=run.server_cpus,
                    threads=run.threads,
                    python=python,
                    workdir=run.workdir,
                    logs=run.logs,
                )

            _start_and_exercise(
                run, report.series_name("torchserve", batch.label), start_ts, list(models)
            )
        else:
            run.skipped.append(f"torchserve {batch.label}: venv unavailable: {torchserve}")
        if "pytriton" in venvs:
            run_single_model_peer(run, "triton", batch, venvs["pytriton"], start_pytriton)
    if "kserve" in venvs:
        run_single_model_peer(run, "kserve", OFF_BATCHING, venvs["kserve"], start_kserve)


def run_single_model_peer(
    run: Run,
    name: str,
    batch: BatchConfig,
    python: Path | str,
    launcher: Callable[..., Server],
) -> None:
    """A peer whose launcher serves one model per process (Triton via PyTriton, KServe)."""
    if not isinstance(python, Path):
        run.skipped.append(f"{name} {batch.label}: venv unavailable: {python}")
        return
    for model in run.plan.models:

        def start(model: str = model) -> Server:
            return launcher(
                MODELS[model],
                run.model_dirs[model],
                batch,
                cpus=run.server_cpus,
                threads=run.threads,
                python=python,
                logs=run.logs,
            )

        def after(server: Server, model: str = model) -> None:
            run_perf_analyzer(run, server, model)

        _start_and_exercise(
            run,
            report.series_name(name, batch.label) + f" [{model}]",
            start,
            [model],
            after if name == "triton" else None,
        )


def document(run: Run, started: float, started_at: str, loadavg_start: str) -> dict[str, Any]:
    """The JSON result document, derived figures and verdicts included."""
    batchings = [b.label for b in run.plan.ferry_batchings]
    derived = report.comparisons(run.cells, run.raw, batchings)
    targets = report.evaluate_targets(run.cells, run.raw, derived, batchings)
    import torch

    return {
        "meta": {
            "mode": run.plan.mode,
            "started": started_at,
            "duration_s": time.monotonic() - started,
            "server_cpus": run.server_cpus,
            "loadgen_cpus": run.loadgen_cpus,
            "loadgen_processes": run.loadgen_processes,
            "threads": run.threads,
            "cpu_model": _cpu_model(),
            "cpus_online": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "peers": {name: list(spec.packages) for name, spec in PEER_VENVS.items()},
            "loadavg_start": loadavg_start,
            "loadavg_end": _loadavg(),
            "noisy_cells": sum(1 for c in run.cells if c["other_cpu"] > run.plan.noise_cpu_limit),
            "other_cpu_median": stats.median([c["other_cpu"] for c in run.cells])
            if run.cells
            else None,
            "plan": asdict(run.plan),
        },
        "raw": run.raw,
        "servers": run.servers,
        "cells": run.cells,
        "comparisons": report.to_jsonable(derived),
        "targets": report.to_jsonable(targets),
        "perf_analyzer": run.perf,
        "profiles": run.profiles,
        "skipped": run.skipped,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    cpus = sorted(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run (< 3 minutes)")
    parser.add_argument(
        "--plan",
        choices=sorted(PLANS),
        default="full",
        help="what to measure (--quick is --plan quick); overhead: issue 13's cells",
    )
    parser.add_argument(
        "--server-cpus",
        default=str(cpus[-1]),
        help="CPUs the servers (and the raw torch limit) are pinned to; torch threads = count",
    )
    parser.add_argument(
        "--loadgen-cpus",
        default=",".join(str(c) for c in cpus[:-1]) or str(cpus[0]),
        help="CPUs the load generator processes are pinned to",
    )
    parser.add_argument(
        "--loadgen-processes", type=int, default=0, help="0: one per load generator CPU"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: one per server CPU); 1 with two server CPUs leaves "
        "a core to the transport",
    )
    parser.add_argument(
        "--stem",
        default="",
        help="results file name under bench/results (default: runtime[-MODE])",
    )
    parser.add_argument(
        "--mlserver-workers",
        type=int,
        default=0,
        help="MLServer parallel_workers (0: one per server CPU, as MLServer's docs advise)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma list of servers: ferry,mlserver,torchserve,pytriton,kserve",
    )
    parser.add_argument("--models", default="", help="comma list overriding the plan's models")
    parser.add_argument("--no-doc", action="store_true", help="do not touch docs/performance.md")
    parser.add_argument(
        "--render",
        type=Path,
        help="only re-render Markdown/PNG (and, for a full run, the docs) from a result JSON",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also record py-spy profiles of Ferry in the plan's profile cells",
    )
    return parser.parse_args(argv)


def _cpus(text: str) -> list[int]:
    return [int(c) for c in text.split(",") if c.strip()]


def _exit_on_sigterm(signum: int, frame: object) -> None:
    del frame
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write results; return 0 when every planned cell was measured."""
    args = parse_args(argv)
    if args.render:
        return render_only(args.render, update_docs=not args.no_doc)
    # SIGTERM unwinds like Ctrl-C, so every started server is stopped on the way out
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    plan = QUICK if args.quick else PLANS[args.plan]
    if args.models:
        plan = replace(plan, models=tuple(args.models.split(",")))
    only = set(args.only.split(",")) if args.only else set(plan.servers)
    server_cpus, loadgen_cpus = _cpus(args.server_cpus), _cpus(args.loadgen_cpus)
    started, started_at = time.monotonic(), dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    workdir = RESULTS / "tmp" / (args.stem or plan.mode)
    shutil.rmtree(workdir, ignore_errors=True)
    run = Run(
        plan=plan,
        server_cpus=server_cpus,
        loadgen_cpus=loadgen_cpus,
        loadgen_processes=args.loadgen_processes or len(loadgen_cpus),
        mlserver_workers=args.mlserver_workers or len(server_cpus),
        workdir=workdir,
        torch_threads=args.threads,
    )
    loadavg_start = _loadavg()
    log(f"{plan.mode} run: server CPUs {server_cpus}, load generator CPUs {loadgen_cpus}")
    wanted = [n for n in PEER_SERVERS if n in only] + (
        ["perf_analyzer"] if "ferry" in only and plan.perf_analyzer else []
    )
    venv_started = time.monotonic()
    if args.profile:
        wanted.append("tools")
    venvs = ensure_all(REPO, wanted, RESULTS / "tmp")
    tools = venvs.get("tools")
    if isinstance(tools, Path):
        run.pyspy = tools.parent / "py-spy"
    log(f"peer venvs ready in {time.monotonic() - venv_started:.0f}s")
    make_models(run)
    measure_raw(run)
    if "ferry" in only:
        run_ferry(run)
        run_grpc_floor(run)
    run_peers(run, {k: v for k, v in venvs.items() if k in only})
    doc = document(run, started, started_at, loadavg_start)
    stem = args.stem or ("runtime" if plan.mode == "full" else f"runtime-{plan.mode}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    complete = not args.only and not args.models and not args.stem and not args.threads
    write_reports(doc, stem, update_docs=plan.mode != "quick" and complete and not args.no_doc)
    log(f"wrote {RESULTS / stem}.json/.md/.png in {time.monotonic() - started:.0f}s")
    for target in doc["targets"]:
        log(f"target {target['name']}: {target['status'].upper()} — {target['figure']}")
    return 0 if not run.skipped else 1
