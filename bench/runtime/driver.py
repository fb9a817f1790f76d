"""Runs one measurement cell: a model on a started server over one protocol at one concurrency.

The driver writes the load generator's job, starts the load generator processes pinned to the
load generator CPUs (the concurrency split across them), waits until all have validated a
response and warmed up, samples the server's CPU time, releases them together, and merges what
they measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.runtime.loadgen import Job
from bench.runtime.procs import machine_busy_seconds, pinned, tree_cpu_seconds
from bench.runtime.servers import Endpoint, Server
from bench.runtime.stats import summarize_latencies_ns, throughput

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LoadPlan:
    """Request counts and time bounds of each cell."""

    warmup_requests: int
    warmup_s: float
    requests: int
    duration_s: float


@dataclass(frozen=True)
class Payload:
    """A model's pre-encoded request bodies and the true output of their one row."""

    grpc_raw: bytes
    grpc_typed: bytes
    http_json: bytes
    expected: list[float]


def split_concurrency(concurrency: int, processes: int) -> list[int]:
    """Spread ``concurrency`` workers over at most ``processes`` processes, none empty."""
    processes = max(1, min(processes, concurrency))
    base, extra = divmod(concurrency, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def _body(endpoint: Endpoint, payload: Payload) -> bytes:
    if endpoint.protocol == "http":
        return payload.http_json
    return payload.grpc_raw if endpoint.grpc_raw else payload.grpc_typed


def measure_cell(
    server: Server,
    model: str,
    protocol: str,
    concurrency: int,
    *,
    payload: Payload,
    plan: LoadPlan,
    loadgen_cpus: list[int],
    loadgen_processes: int,
    jobs_dir: Path,
    on_go: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Measure one cell; return its result row (figures plus diagnostics). ``on_go`` runs just
    as the measurement starts (e.g. to attach a profiler)."""
    endpoint = server.endpoints[model][protocol]
    shares = split_concurrency(concurrency, loadgen_processes)
    procs: list[subprocess.Popen[str]] = []
    jobs_dir.mkdir(parents=True, exist_ok=True)
    for index, share in enumerate(shares):
        job = Job(
            protocol=protocol,
            host="127.0.0.1",
            port=endpoint.port,
            target=endpoint.target,
            body=_body(endpoint, payload),
            expected=payload.expected,
            concurrency=share,
            warmup_requests=max(share * 4, plan.warmup_requests // len(shares)),
            warmup_s=plan.warmup_s,
            requests=max(share, plan.requests // len(shares)),
            duration_s=plan.duration_s,
        )
        with tempfile.NamedTemporaryFile(
            "w", suffix=f"-{index}.json", dir=jobs_dir, delete=False
        ) as handle:
            json.dump(job.to_json(), handle)
        procs.append(
            subprocess.Popen(
                pinned([sys.executable, "-m", "bench.runtime.loadgen", handle.name], loadgen_cpus),
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    row: dict[str, Any] = {
        "series": server.series,
        "server": server.name,
        "batching": server.batch.label,
        "model": model,
        "protocol": protocol,
        "concurrency": concurrency,
        "loadgen_processes": len(shares),
    }
    timeout = plan.warmup_s + plan.duration_s + 120
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "READY":
                _, err = proc.communicate(timeout=30)
                raise RuntimeError(f"load generator failed before READY: {line}{err[-1500:]}")
        busy0 = machine_busy_seconds()
        cpu0, wall0 = tree_cpu_seconds(server.process.pid), time.monotonic()
        if on_go is not None:
            on_go()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("GO\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=timeout) for proc in procs]
        cpu1, wall1 = tree_cpu_seconds(server.process.pid), time.monotonic()
        busy1 = machine_busy_seconds()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    parts = []
    for (out, err), proc in zip(outputs, procs, strict=True):
        if proc.returncode != 0 or not out.strip():
            raise RuntimeError(f"load generator exited {proc.returncode}: {err[-1500:]}")
        parts.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(wall1 - wall0, 1e-9)
    merged = merge_parts(parts)
    server_cpu = (cpu1 - cpu0) / wall
    # CPU that neither the server nor the load generator used: other work on the machine
    other_cpu = max(0.0, (busy1 - busy0) / wall - server_cpu - merged["loadgen_cpu"])
    return row | merged | {"server_cpu": server_cpu, "other_cpu": other_cpu}


def merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the load generator processes' results of one cell into its figures."""
    latencies = [v for part in parts for v in part["latencies_ns"]]
    started = min(p["started"] for p in parts)
    finished = max(p["finished"] for p in parts)
    window = finished - started
    errors = sum(p["errors"] for p in parts)
    first_error = next((p["first_error"] for p in parts if p["first_error"]), None)
    validation = next((p["validation_error"] for p in parts if p["validation_error"]), None)
    figures: dict[str, Any] = {
        "completed": len(latencies),
        "errors": errors,
        "first_error": first_error,
        "validation_error": validation,
        "window_s": window,
        "throughput_rps": throughput(len(latencies), window),
        "loadgen_cpu": sum(p["cpu_s"] for p in parts) / max(window, 1e-9),
    }
    if latencies:
        summary = summarize_latencies_ns(latencies)
        figures |= {
            "p50_ms": summary.p50_ms,
            "p90_ms": summary.p90_ms,
            "p99_ms": summary.p99_ms,
            "mean_ms": summary.mean_ms,
            "max_ms": summary.max_ms,
        }
    return figures
