"""py-spy profiles of a server under load, and a pure summary of the sampled stacks.

``run.py --profile`` records Ferry (headline batching, medium MLP) during chosen cells with
``py-spy record --format raw --nonblocking`` (the server is never paused), pinned to the load
generator's CPUs, and writes the collapsed stacks plus the top frames by self and inclusive time.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.runtime.procs import pinned


def pyspy_command(
    pyspy: Path, pid: int, duration_s: float, output: Path, rate: int = 200
) -> list[str]:
    """The ``py-spy record`` command line for ``pid`` (all threads, subprocesses, no pausing)."""
    return [
        str(pyspy),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(duration_s))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--nonblocking",
        "--subprocesses",
        "--output",
        str(output),
    ]


def start_recording(
    pyspy: Path, pid: int, duration_s: float, output: Path, cpus: list[int]
) -> subprocess.Popen[bytes]:
    """Start py-spy on ``pid`` in the background, pinned to ``cpus``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        pinned(pyspy_command(pyspy, pid, duration_s, output), cpus),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@dataclass(frozen=True)
class Hotspot:
    """One frame's share of the samples."""

    frame: str
    self_share: float
    total_share: float


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """Collapsed stacks (``frame;frame;frame COUNT``, root first) to (frames, count) pairs."""
    out: list[tuple[list[str], int]] = []
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        out.append((stack.split(";"), int(count)))
    return out


def _clean(frame: str) -> str:
    """Drop the ``(path:line)`` location noise that differs per call site: ``fn (file.py)``."""
    name, _, rest = frame.partition(" (")
    location = rest.rstrip(")")
    path = location.rsplit(":", 1)[0]
    short = "/".join(path.split("/")[-2:]) if path else ""
    return f"{name} ({short})" if short else name


def hotspots(stacks: list[tuple[list[str], int]], top: int = 25) -> list[Hotspot]:
    """The ``top`` frames by self samples, with their inclusive share as well."""
    total = sum(count for _, count in stacks)
    if total == 0:
        return []
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        cleaned = [_clean(f) for f in frames]
        own[cleaned[-1]] += count
        for frame in set(cleaned):
            inclusive[frame] += count
    return [
        Hotspot(frame, count / total, inclusive[frame] / total)
        for frame, count in own.most_common(top)
    ]


def inclusive_share(stacks: list[tuple[list[str], int]], needle: str) -> float:
    """Share of samples whose stack contains a frame mentioning ``needle``."""
    total = sum(count for _, count in stacks)
    if total == 0:
        return 0.0
    hit = sum(count for frames, count in stacks if any(needle in f for f in frames))
    return hit / total
