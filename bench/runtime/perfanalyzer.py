"""Triton's ``perf_analyzer`` (C++ load generator from the tritonclient 2.41.0 wheel) against
Ferry (and Triton itself), as a cross-check of the bench's own load generator and the only
gRPC streaming client here. MLServer, TorchServe and KServe do not serve Triton's model
configuration endpoint, so they are not measured this way."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.runtime.procs import pinned

GRPC_STREAM = "grpc-stream"
"""A perf_analyzer point's protocol for gRPC streaming (``--streaming``, ModelStreamInfer)."""


def binary(venv: Path) -> Path:
    """The perf_analyzer executable inside its venv."""
    return venv / "bin" / "perf_analyzer"


def cuda_runtime_lib(venv: Path) -> Path | None:
    """The CUDA runtime wheel's library folder (perf_analyzer links libcudart even on CPU)."""
    found = sorted(venv.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    return found[0] if found else None


def parse_csv(text: str) -> list[dict[str, Any]]:
    """perf_analyzer's ``-f`` CSV: one row per concurrency. Latencies there are microseconds;
    the server-side columns come from the server's statistics extension."""
    rows = []
    for record in csv.DictReader(io.StringIO(text)):

        def us_to_ms(column: str, record: dict[str, str] = record) -> float | None:
            value = record.get(column)
            return float(value) / 1000.0 if value not in (None, "") else None

        rows.append(
            {
                "concurrency": int(record["Concurrency"]),
                "throughput_rps": float(record["Inferences/Second"]),
                "p50_ms": us_to_ms("p50 latency"),
                "p90_ms": us_to_ms("p90 latency"),
                "p99_ms": us_to_ms("p99 latency"),
                "server_queue_ms": us_to_ms("Server Queue"),
                "server_compute_ms": us_to_ms("Server Compute Infer"),
                "network_and_server_ms": us_to_ms("Network+Server Send/Recv"),
            }
        )
    return rows


def run(
    venv: Path,
    model: str,
    protocol: str,
    port: int,
    *,
    concurrency: int,
    cpus: list[int],
    interval_ms: int,
    timeout_s: float,
    streaming: bool = False,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One perf_analyzer measurement at one concurrency; its figures or an ``error``.
    ``streaming``: gRPC ``ModelStreamInfer`` (one stream, ``concurrency`` requests in flight)."""
    env = dict(os.environ)
    lib = cuda_runtime_lib(venv)
    if lib is not None:
        env["LD_LIBRARY_PATH"] = f"{lib}:{env.get('LD_LIBRARY_PATH', '')}".rstrip(":")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pa.csv"
        cmd = [
            str(binary(venv)),
            "-m",
            model,
            "-u",
            f"127.0.0.1:{port}",
            "-i",
            protocol,
            "--concurrency-range",
            f"{concurrency}:{concurrency}",
            "--measurement-interval",
            str(interval_ms),
            "--stability-percentage",
            "25",
            "--max-trials",
            "6",
            "-f",
            str(out),
            *(["--streaming"] if streaming else []),
            *(arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}:{value}")),
        ]
        try:
            done = subprocess.run(
                pinned(cmd, cpus),
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s:.0f}s"}
        if done.returncode != 0 or not out.exists():
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            return {"error": f"exit {done.returncode}: {' / '.join(tail)}"}
        rows = parse_csv(out.read_text())
    return rows[0] if rows else {"error": "no rows in perf_analyzer CSV"}
