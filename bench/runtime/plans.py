"""What a benchmark run measures: the full and the quick plan."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.runtime.driver import LoadPlan
from bench.runtime.servers import BatchConfig


@dataclass(frozen=True)
class Plan:
    """What one run measures and how long each measurement lasts."""

    mode: str
    models: tuple[str, ...]
    concurrencies: tuple[int, ...]
    protocols: tuple[str, ...]
    ferry_batchings: tuple[BatchConfig, ...]
    peer_batchings: tuple[BatchConfig, ...]
    load: LoadPlan
    server_warmup_s: float
    raw_budget_s: float
    perf_analyzer: tuple[tuple[str, str, str, int], ...] = field(default=())
    """(model, ferry batching label, protocol, concurrency) points measured with perf_analyzer."""
    perf_interval_ms: int = 2000
    servers: tuple[str, ...] = ("ferry", "mlserver", "torchserve", "pytriton", "kserve")
    """Servers measured unless ``--only`` names others."""
    noise_cpu_limit: float = 0.25
    """CPU (in cores) other processes may use during a cell before it is measured again."""
    noise_retries: int = 1
    retry_until_s: float = 1200.0
    """No noise retries once the run is this old, so a busy machine cannot stretch a run."""
    profile_points: tuple[tuple[str, str, str, int], ...] = field(
        default=(
            ("medium", "b32/5ms", "grpc", 1),
            ("medium", "b32/5ms", "grpc", 32),
            ("medium", "b32/5ms", "grpc", 64),
            ("medium", "b32/5ms", "http", 32),
            ("medium", "off", "grpc", 32),
        )
    )
    """(model, ferry batching label, protocol, concurrency) cells profiled with ``--profile``."""


OFF = BatchConfig(enabled=False)
ON_2MS = BatchConfig(enabled=True, max_batch_size=32, max_delay_ms=2.0)
ON_5MS = BatchConfig(enabled=True, max_batch_size=32, max_delay_ms=5.0)

FULL = Plan(
    mode="full",
    models=("noop", "tiny", "medium"),
    concurrencies=(1, 8, 32, 64),
    protocols=("grpc", "http"),
    ferry_batchings=(OFF, ON_2MS, ON_5MS),
    peer_batchings=(ON_2MS, ON_5MS),
    load=LoadPlan(warmup_requests=1000, warmup_s=0.8, requests=20000, duration_s=4.0),
    server_warmup_s=3.0,
    raw_budget_s=1.0,
    perf_analyzer=tuple(
        ("medium", label, protocol, c)
        for label in ("off", ON_5MS.label)
        for protocol in ("grpc", "http")
        for c in (1, 32, 64)
    ),
    perf_interval_ms=1500,
)

QUICK = Plan(
    mode="quick",
    models=("medium",),
    concurrencies=(1, 32, 64),
    protocols=("grpc", "http"),
    ferry_batchings=(OFF, ON_5MS),
    peer_batchings=(ON_5MS,),
    load=LoadPlan(warmup_requests=300, warmup_s=0.4, requests=5000, duration_s=1.2),
    server_warmup_s=1.0,
    raw_budget_s=0.3,
    perf_analyzer=(("medium", ON_5MS.label, "grpc", 32),),
    perf_interval_ms=1000,
    retry_until_s=100.0,
)

OVERHEAD = Plan(
    mode="overhead",
    models=("medium",),
    concurrencies=(1, 32, 64),
    protocols=("grpc", "http"),
    ferry_batchings=(OFF, ON_5MS),
    peer_batchings=(ON_5MS,),
    load=LoadPlan(warmup_requests=1000, warmup_s=0.8, requests=20000, duration_s=4.0),
    server_warmup_s=3.0,
    raw_budget_s=1.0,
    perf_analyzer=tuple(
        ("medium", ON_5MS.label, protocol, c)
        for protocol in ("grpc", "grpc-stream", "http")
        for c in (1, 32, 64)
    ),
    perf_interval_ms=1500,
    servers=("ferry", "pytriton", "kserve"),
    profile_points=(
        ("medium", ON_5MS.label, "grpc", 1),
        ("medium", ON_5MS.label, "grpc", 64),
        ("medium", ON_5MS.label, "http", 1),
        ("medium", ON_5MS.label, "http", 64),
    ),
)
"""Issue 13's cells: the medium MLP at concurrency 1/32/64 over both protocols with the full
plan's measurement lengths, for Ferry against Triton (PyTriton) and KServe."""

PLANS = {plan.mode: plan for plan in (FULL, QUICK, OVERHEAD)}
