"""Pure: the format benchmark's ratios and its Markdown table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BASELINE = "torchscript"
BATCHES = ("1", "8", "32")


def ratio(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline``; None when either is missing or the baseline is 0."""
    if value is None or baseline is None or baseline <= 0:
        return None
    return value / baseline


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row plus ``*_vs_ts`` ratios against the TorchScript row of the same model."""
    baselines = {row["model"]: row for row in rows if row["format"] == BASELINE}
    result = []
    for row in rows:
        base = baselines.get(row["model"], {})
        extra: dict[str, Any] = {
            f"raw_b{batch}_vs_ts": ratio(
                row.get("raw", {}).get(batch), base.get("raw", {}).get(batch)
            )
            for batch in BATCHES
        }
        extra["served_rps_vs_ts"] = ratio(row.get("served_rps"), base.get("served_rps"))
        extra["served_p99_vs_ts"] = ratio(row.get("served_p99_ms"), base.get("served_p99_ms"))
        result.append(row | extra)
    return result


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def markdown(rows: list[dict[str, Any]], meta: Mapping[str, Any]) -> str:
    """The table docs/performance.md shows (raw rows/s and served figures, ratios vs TS)."""
    lines = [
        f"Format comparison, one run ({meta['started_at']}, torch {meta['torch']}, "
        f"{meta['cpu']}; server on CPU {meta['server_cpus']}, load generator on CPU "
        f"{meta['loadgen_cpus']}, {meta['threads']} torch thread; served: gRPC, concurrency "
        f"{meta['concurrency']}, dynamic batching b{meta['max_batch_size']}/"
        f"{meta['max_delay_ms']:g}ms, {meta['duration_s']:g}s per cell).",
        "",
        "| model | format | rows/s b1 | rows/s b8 | rows/s b32 | served req/s | served p99 ms "
        "| raw b1 / b8 / b32 vs TS | served req/s vs TS | p99 vs TS |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        raw = row.get("raw", {})
        lines.append(
            f"| {row['model']} | {row['format']} | {_num(raw.get('1'))} | {_num(raw.get('8'))} "
            f"| {_num(raw.get('32'))} | {_num(row.get('served_rps'))} "
            f"| {_num(row.get('served_p99_ms'), 1)} "
            f"| {' / '.join(_x(row.get(f'raw_b{b}_vs_ts')) for b in BATCHES)} "
            f"| {_x(row.get('served_rps_vs_ts'))} | {_x(row.get('served_p99_vs_ts'))} |"
        )
    return "\n".join(lines) + "\n"
