"""Derived figures, target verdicts and rendering (Markdown, PNG) of a benchmark run.

Everything here except :func:`plot` is pure: it takes the result document's parts and returns
new values, so it is unit-tested without running anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.runtime.stats import ratio

Cell = Mapping[str, Any]
CellKey = tuple[str, str, str, int]

FERRY = "ferry"
PEERS = ("mlserver", "torchserve")
"""Peers of the "Ferry vs peers" target (issue 3: ≥ 3x at concurrency 32)."""
TRITON = "triton"
"""NVIDIA Triton through PyTriton: C++ front ends and dynamic batcher, the model in Python."""
BATCHING_PEERS = (*PEERS, TRITON)
"""Peers compared with Ferry under the same batching configuration."""
UNBATCHED_PEERS = ("kserve",)
"""Peers without a dynamic batcher: every Ferry configuration is compared with their ``off``."""
TARGET_MODEL = "medium"
HEADLINE_BATCHING = "b32/5ms"
"""Ferry's default batching (contracts.md: maxBatchSize 32, maxQueueDelayMs 5): the headline
configuration every target is judged on; other configurations are shown beside it."""

SPEEDUP_MIN = 3.0
TRITON_SPEEDUP_MIN = 2.0
TRITON_CONCURRENCIES = (32, 64)
EFFICIENCY_MIN = 0.8
BATCHING_GAIN_MIN = 5.0
P50_OVERHEAD_MAX_MS = 0.3


def cell_key(cell: Cell) -> CellKey:
    """The identity of a cell: series, model, protocol, concurrency."""
    return (
        str(cell["series"]),
        str(cell["model"]),
        str(cell["protocol"]),
        int(cell["concurrency"]),
    )


def index_cells(cells: Iterable[Cell]) -> dict[CellKey, Cell]:
    """Cells by :func:`cell_key` (a later duplicate replaces an earlier one)."""
    return {cell_key(c): c for c in cells}


def series_name(server: str, batching: str) -> str:
    """The series key of a server under one batching configuration."""
    return f"{server} {batching}"


def _rps(cell: Cell | None) -> float | None:
    if cell is None or cell.get("errors", 0) or cell.get("validation_error"):
        return None
    value = cell.get("throughput_rps")
    return float(value) if value else None


def _p99(cell: Cell | None) -> float | None:
    if cell is None or "p99_ms" not in cell:
        return None
    return float(cell["p99_ms"])


@dataclass(frozen=True)
class Comparison:
    """One derived ratio between two measurements of the same model/protocol/concurrency."""

    kind: str
    """``efficiency`` (÷ raw torch best-batch rows/s), ``batching_gain`` (on ÷ off) or
    ``vs_peer`` (Ferry ÷ peer, same batching)."""
    model: str
    protocol: str
    concurrency: int
    series: str
    against: str
    value: float | None
    p99_ratio: float | None = None
    """``vs_peer`` only: Ferry's p99 ÷ the peer's p99 (≤ 1 means no worse)."""


def comparisons(
    cells: Iterable[Cell], raw: Mapping[str, Mapping[str, Any]], batchings: Sequence[str]
) -> list[Comparison]:
    """Efficiency of every cell, and for every Ferry batching-on cell its gain over batching
    off and its ratio to each peer under the same batching."""
    index = index_cells(cells)
    out: list[Comparison] = []
    for (series, model, protocol, concurrency), cell in sorted(index.items()):
        limit = raw.get(model, {}).get("best_rows_per_s")
        out.append(
            Comparison(
                "efficiency",
                model,
                protocol,
                concurrency,
                series,
                "raw torch",
                ratio(_rps(cell), limit),
            )
        )
    for batching in batchings:
        if batching == "off":
            continue
        ferry = series_name(FERRY, batching)
        for (series, model, protocol, concurrency), cell in sorted(index.items()):
            if series != ferry:
                continue
            off = index.get((series_name(FERRY, "off"), model, protocol, concurrency))
            if off is not None:
                out.append(
                    Comparison(
                        "batching_gain",
                        model,
                        protocol,
                        concurrency,
                        ferry,
                        series_name(FERRY, "off"),
                        ratio(_rps(cell), _rps(off)),
                    )
                )
            against = [series_name(p, batching) for p in BATCHING_PEERS]
            against += [series_name(p, "off") for p in UNBATCHED_PEERS]
            for peer_series in against:
                other = index.get((peer_series, model, protocol, concurrency))
                if other is None:
                    continue
                out.append(
                    Comparison(
                        "vs_peer",
                        model,
                        protocol,
                        concurrency,
                        ferry,
                        peer_series,
                        ratio(_rps(cell), _rps(other)),
                        ratio(_p99(cell), _p99(other)),
                    )
                )
    return out


@dataclass(frozen=True)
class Target:
    """One of the issue's targets, judged on the headline configuration."""

    name: str
    requirement: str
    status: str
    """``met``, ``missed`` or ``not measured``."""
    figure: str
    """The headline figure(s) behind the verdict."""
    other: str = ""
    """The same figure under the other Ferry batching configurations."""


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def _find(
    items: Iterable[Comparison], kind: str, protocol: str, concurrency: int, series: str
) -> list[Comparison]:
    return [
        c
        for c in items
        if c.kind == kind
        and c.model == TARGET_MODEL
        and c.protocol == protocol
        and c.concurrency == concurrency
        and c.series == series
    ]


def _status(checks: Sequence[bool | None]) -> str:
    if not checks or any(c is None for c in checks):
        return "not measured"
    return "met" if all(checks) else "missed"


def _target_vs_peers(derived: Sequence[Comparison], batching: str) -> tuple[str, str]:
    ferry = series_name(FERRY, batching)
    found = [
        c for protocol in ("grpc", "http") for c in _find(derived, "vs_peer", protocol, 32, ferry)
    ]
    checks: list[bool | None] = []
    parts: list[str] = []
    for peer in PEERS:
        mine = [c for c in found if c.against.startswith(peer + " ")]
        if not mine:
            checks.append(None)
            parts.append(f"{peer}: not measured")
        for c in mine:
            ok = (
                None
                if c.value is None or c.p99_ratio is None
                else c.value >= SPEEDUP_MIN and c.p99_ratio <= 1.0
            )
            checks.append(ok)
            parts.append(
                f"{c.against} {c.protocol}: {_fmt(c.value)}x, p99 ratio {_fmt(c.p99_ratio)}"
            )
    return _status(checks), "; ".join(parts)


def _target_vs_triton(derived: Sequence[Comparison], batching: str) -> tuple[str, str]:
    ferry, triton = series_name(FERRY, batching), series_name(TRITON, batching)
    checks: list[bool | None] = []
    parts: list[str] = []
    for protocol in ("grpc", "http"):
        for concurrency in TRITON_CONCURRENCIES:
            found = [
                c
                for c in _find(derived, "vs_peer", protocol, concurrency, ferry)
                if c.against == triton
            ]
            value, p99 = (found[0].value, found[0].p99_ratio) if found else (None, None)
            if value is None or p99 is None:
                checks.append(None)
                parts.append(f"{protocol} c={concurrency}: not measured")
                continue
            checks.append(value >= TRITON_SPEEDUP_MIN and p99 <= 1.0)
            parts.append(f"{protocol} c={concurrency}: {_fmt(value)}x, p99 ratio {_fmt(p99)}")
    return _status(checks), "; ".join(parts)


def _target_single(
    derived: Sequence[Comparison],
    kind: str,
    protocol: str,
    concurrency: int,
    *,
    batching: str,
    minimum: float,
) -> tuple[str, str]:
    found = _find(derived, kind, protocol, concurrency, series_name(FERRY, batching))
    if not found or found[0].value is None:
        return "not measured", "n/a"
    value = found[0].value
    return ("met" if value >= minimum else "missed"), _fmt(value)


def _target_p50(
    cells: Iterable[Cell], raw: Mapping[str, Mapping[str, Any]], batching: str, protocol: str
) -> tuple[str, str]:
    index = index_cells(cells)
    cell = index.get((series_name(FERRY, batching), TARGET_MODEL, protocol, 1))
    forward = raw.get(TARGET_MODEL, {}).get("forward_b1_ms")
    if cell is None or forward is None or "p50_ms" not in cell or _rps(cell) is None:
        return "not measured", "n/a"
    p50 = float(cell["p50_ms"])
    bound = float(forward) + P50_OVERHEAD_MAX_MS
    status = "met" if p50 <= bound else "missed"
    return status, f"p50 {p50:.3f} ms vs bound {bound:.3f} ms (forward {float(forward):.3f} + 0.3)"


def evaluate_targets(
    cells: Sequence[Cell],
    raw: Mapping[str, Mapping[str, Any]],
    derived: Sequence[Comparison],
    batchings: Sequence[str],
) -> list[Target]:
    """The four targets on the medium MLP, judged on Ferry's headline batching; the other
    batching-on configurations are listed beside each verdict."""
    others = [b for b in batchings if b not in ("off", HEADLINE_BATCHING)]
    targets: list[Target] = []

    status, figure = _target_vs_peers(derived, HEADLINE_BATCHING)
    other = " | ".join(f"{b}: {_target_vs_peers(derived, b)[1]}" for b in others)
    targets.append(
        Target(
            "Ferry vs peers",
            "Ferry ≥ 3x MLServer and ≥ 3x TorchServe at concurrency 32, p99 no worse",
            status,
            figure,
            other,
        )
    )

    status, figure = _target_vs_triton(derived, HEADLINE_BATCHING)
    other = " | ".join(f"{b}: {_target_vs_triton(derived, b)[1]}" for b in others)
    targets.append(
        Target(
            "Ferry vs Triton",
            "Ferry ≥ 2x Triton (PyTriton, same batching) at concurrency 32 and 64 over gRPC "
            "and REST, p99 no worse",
            status,
            figure,
            other,
        )
    )

    status, figure = _target_single(
        derived, "efficiency", "grpc", 64, batching=HEADLINE_BATCHING, minimum=EFFICIENCY_MIN
    )
    http_efficiency = _target_single(
        derived, "efficiency", "http", 64, batching=HEADLINE_BATCHING, minimum=EFFICIENCY_MIN
    )[1]
    figure = f"{figure} (HTTP: {http_efficiency})"
    other = " | ".join(
        f"{b}: {_target_single(derived, 'efficiency', 'grpc', 64, batching=b, minimum=0.8)[1]}"
        for b in others
    )
    targets.append(
        Target(
            "Serving efficiency",
            "served ÷ raw best-batch throughput ≥ 0.8 at concurrency 64 over gRPC",
            status,
            figure,
            other,
        )
    )

    status, figure = _target_single(
        derived, "batching_gain", "grpc", 32, batching=HEADLINE_BATCHING, minimum=BATCHING_GAIN_MIN
    )
    http = _target_single(
        derived, "batching_gain", "http", 32, batching=HEADLINE_BATCHING, minimum=BATCHING_GAIN_MIN
    )[1]
    other = " | ".join(
        f"{b}: {_target_single(derived, 'batching_gain', 'grpc', 32, batching=b, minimum=5.0)[1]}"
        for b in others
    )
    targets.append(
        Target(
            "Batching gain",
            "batching on ÷ off ≥ 5x at concurrency 32 (gRPC)",
            status,
            f"{figure}x (HTTP: {http}x)",
            other,
        )
    )

    status, figure = _target_p50(cells, raw, HEADLINE_BATCHING, "grpc")
    other = " | ".join(
        f"{b}: {_target_p50(cells, raw, b, 'grpc')[1]}" for b in [*others, "off"] if b in batchings
    )
    targets.append(
        Target(
            "Low-load latency",
            "p50 at concurrency 1 ≤ forward time at batch 1 + 0.3 ms (gRPC)",
            status,
            figure,
            other,
        )
    )
    return targets


# --------------------------------------------------------------------------- Markdown


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; ``None`` renders as an empty cell, pipes escaped."""

    def text(value: object) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(text(h) for h in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines.extend("| " + " | ".join(text(v) for v in row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def _num(value: object, digits: int) -> str | None:
    if value is None:
        return None
    # value is a number or a numeric string here (checked by the caller).
    return f"{float(value):,.{digits}f}"  # type: ignore[arg-type]


def _per_request_us(cell: Cell) -> str | None:
    """Server CPU time per request, in microseconds (cores used ÷ requests per second)."""
    value = ratio(cell.get("server_cpu"), cell.get("throughput_rps"))
    return None if value is None else f"{value * 1e6:,.0f}"


def _efficiency(value: float | None) -> str | None:
    return None if value is None else f"{value:.3g}"


def results_table(cells: Sequence[Cell], model: str, derived: Sequence[Comparison]) -> str:
    """Every cell of one model: throughput, latency, efficiency and CPU diagnostics."""
    efficiency = {
        (c.series, c.protocol, c.concurrency): c.value
        for c in derived
        if c.kind == "efficiency" and c.model == model
    }
    rows = []
    ordered = sorted(
        (c for c in cells if c["model"] == model),
        key=lambda c: (c["protocol"], c["concurrency"], c["series"]),
    )
    for c in ordered:
        note = c.get("validation_error") or c.get("first_error") or ""
        rows.append(
            [
                c["protocol"],
                c["concurrency"],
                c["series"],
                _num(c.get("throughput_rps"), 0),
                _num(c.get("p50_ms"), 2),
                _num(c.get("p99_ms"), 2),
                _efficiency(efficiency.get((c["series"], c["protocol"], c["concurrency"]))),
                _num(c.get("server_cpu"), 2),
                _per_request_us(c),
                _num(c.get("loadgen_cpu"), 2),
                _num(c.get("other_cpu"), 2),
                f"{c.get('errors', 0)} {note}".strip(),
            ]
        )
    return markdown_table(
        [
            "protocol",
            "conc.",
            "server",
            "req/s",
            "p50 ms",
            "p99 ms",
            "efficiency",
            "server CPU",
            "server µs/req",
            "loadgen CPU",
            "other CPU",
            "errors",
        ],
        rows,
    )


def comparison_table(derived: Sequence[Comparison], model: str) -> str:
    """Batching gain and Ferry ÷ peer ratios of one model."""
    rows = []
    for c in sorted(
        (c for c in derived if c.model == model and c.kind != "efficiency"),
        key=lambda c: (c.protocol, c.concurrency, c.kind, c.series, c.against),
    ):
        label = "batching on ÷ off" if c.kind == "batching_gain" else "Ferry ÷ peer"
        rows.append(
            [
                c.protocol,
                c.concurrency,
                label,
                c.series,
                c.against,
                _num(c.value, 2),
                _num(c.p99_ratio, 2),
            ]
        )
    return markdown_table(
        ["protocol", "conc.", "ratio", "Ferry", "against", "throughput x", "p99 ratio"], rows
    )


def raw_table(raw: Mapping[str, Mapping[str, Any]]) -> str:
    """The raw torch limit of each model."""
    rows = []
    for model, r in raw.items():
        by_batch = r.get("rows_per_s_by_batch", {})
        rows.append(
            [
                model,
                r.get("threads"),
                r.get("best_batch"),
                _num(r.get("best_rows_per_s"), 0),
                _num(by_batch.get("32"), 0),
                _num(by_batch.get("1"), 0),
                _num(r.get("forward_b1_ms"), 4),
            ]
        )
    return markdown_table(
        [
            "model",
            "torch threads",
            "best batch",
            "best rows/s",
            "rows/s @32",
            "rows/s @1",
            "forward @1 (median ms)",
        ],
        rows,
    )


def targets_table(targets: Sequence[Target]) -> str:
    """The verdict of every target."""
    return markdown_table(
        ["target", "requirement", f"status (ferry {HEADLINE_BATCHING})", "figure", "other configs"],
        [[t.name, t.requirement, t.status.upper(), t.figure, t.other] for t in targets],
    )


def perf_analyzer_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Triton perf_analyzer's own figures against Ferry (and Triton); ``grpc-stream`` rows use
    gRPC ``ModelStreamInfer`` (``--streaming``)."""
    return markdown_table(
        [
            "series",
            "model",
            "protocol",
            "conc.",
            "infer/s",
            "p50 ms",
            "p99 ms",
            "server queue ms",
            "server compute ms",
            "note",
        ],
        [
            [
                r.get("series"),
                r.get("model"),
                r.get("protocol"),
                r.get("concurrency"),
                _num(r.get("throughput_rps"), 0),
                _num(r.get("p50_ms"), 2),
                _num(r.get("p99_ms"), 2),
                _num(r.get("server_queue_ms"), 2),
                _num(r.get("server_compute_ms"), 2),
                r.get("error", ""),
            ]
            for r in rows
        ],
    )


def profile_section(entry: Mapping[str, Any], top: int = 12) -> str:
    """One profiled cell: its figures and the frames with the most own samples."""
    head = (
        f"**{entry['series']} {entry['model']} {entry['protocol']} c={entry['concurrency']}** "
        f"({_num(entry.get('throughput_rps'), 0)} req/s while profiled, "
        f"{entry['samples']} samples, stacks in `{entry['stacks_file']}`)\n\n"
    )
    rows = [
        [h["frame"], f"{100 * h['self_share']:.1f}%", f"{100 * h['total_share']:.1f}%"]
        for h in entry["hotspots"][:top]
    ]
    return head + markdown_table(["frame", "own", "inclusive"], rows)


def knobs_section(servers: Sequence[Mapping[str, Any]]) -> str:
    """Every knob each server ran with, one bullet list per series."""
    lines: list[str] = []
    for server in servers:
        lines.append(f"- **{server['series']}** (startup {_num(server.get('startup_s'), 1)} s)")
        if server.get("error"):
            lines.append(f"  - failed: `{server['error']}`")
        for key, value in (server.get("knobs") or {}).items():
            lines.append(f"  - {key}: `{value}`")
    return "\n".join(lines) + "\n"


def _noise_warning(meta: Mapping[str, Any]) -> list[str]:
    noisy = meta.get("noisy_cells") or 0
    if not noisy:
        return []
    return [
        f"> **Warning:** {noisy} cell(s) were measured while other processes on the machine used "
        "more than 0.25 cores (see the `other CPU` column); their figures, and any ratio or "
        "target built on them, understate the servers. Re-run on a quiet machine.\n"
    ]


def render_markdown(document: Mapping[str, Any]) -> str:
    """The whole report of one run as Markdown."""
    meta = document["meta"]
    derived = [Comparison(**c) for c in document["comparisons"]]
    targets = [Target(**t) for t in document["targets"]]
    parts = [
        f"Run `{meta['mode']}` on {meta['started']}, {meta['duration_s']:.0f} s; "
        f"server CPUs {meta['server_cpus']} ({meta['threads']} torch thread(s)), "
        f"load generator CPUs {meta['loadgen_cpus']} ({meta['loadgen_processes']} process(es)); "
        f"{meta['cpu_model']}; torch {meta['torch']}; load average at start "
        f"{meta['loadavg_start']}, at end {meta['loadavg_end']}; other processes' CPU during "
        f"cells: median {_fmt(meta.get('other_cpu_median'))} cores, "
        f"{meta.get('noisy_cells', 'n/a')} cell(s) above the noise limit after retries.\n",
        *_noise_warning(meta),
        "### Targets (medium MLP)\n",
        targets_table(targets),
        "### Raw torch limit\n",
        raw_table(document["raw"]),
    ]
    models = list(dict.fromkeys(c["model"] for c in document["cells"]))
    for model in models:
        parts.append(f"### {model}: measurements\n")
        parts.append(results_table(document["cells"], model, derived))
        parts.append(f"### {model}: ratios\n")
        parts.append(comparison_table(derived, model))
    if document.get("perf_analyzer"):
        parts.append("### Triton perf_analyzer against Ferry\n")
        parts.append(perf_analyzer_table(document["perf_analyzer"]))
    if document.get("profiles"):
        parts.append("### Ferry profiles (py-spy, top frames by own time)\n")
        parts.extend(profile_section(p) for p in document["profiles"])
    parts.append("### Knobs\n")
    parts.append(knobs_section(document["servers"]))
    if document.get("skipped"):
        parts.append("### Skipped\n")
        parts.extend(f"- {s}\n" for s in document["skipped"])
    return "\n".join(parts)


def to_jsonable(items: Iterable[Comparison | Target]) -> list[dict[str, Any]]:
    """Dataclasses to plain dicts for the JSON document."""
    return [asdict(i) for i in items]


# --------------------------------------------------------------------------- plot


def plot(cells: Sequence[Cell], path: Path, title: str) -> None:
    """Throughput vs p99 for every series: one panel per model and protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(c["model"] for c in cells))
    protocols = ["grpc", "http"]
    fig, axes = plt.subplots(
        len(models), len(protocols), figsize=(13, 4.2 * len(models)), squeeze=False
    )
    series_all = sorted({c["series"] for c in cells})
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(series_all)}
    for row, model in enumerate(models):
        for col, protocol in enumerate(protocols):
            ax = axes[row][col]
            for series in series_all:
                points = sorted(
                    (
                        (c["concurrency"], c["throughput_rps"], c["p99_ms"])
                        for c in cells
                        if c["model"] == model
                        and c["protocol"] == protocol
                        and c["series"] == series
                        and "p99_ms" in c
                    ),
                )
                if not points:
                    continue
                xs = [p[1] for p in points]
                ys = [p[2] for p in points]
                colour: Any
                if series.startswith(FERRY):
                    style, colour = "-", colours[series]
                elif series.startswith("grpc.aio-floor"):
                    style, colour = ":", "black"
                else:
                    style, colour = "--", colours[series]
                ax.plot(xs, ys, style, marker="o", color=colour, label=series)
                for conc, x, y in points:
                    ax.annotate(
                        str(conc), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
                    )
            ax.set_yscale("log")
            ax.set_title(f"{model} · {protocol}")
            ax.set_xlabel("throughput (requests/s)")
            ax.set_ylabel("p99 latency (ms, log)")
            ax.grid(True, which="both", alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
