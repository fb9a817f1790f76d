"""The hardware limit: raw TorchScript forward throughput and batch-1 forward time.

Run as its own process, pinned to the server's CPUs with the server's torch thread count, so the
limit is measured on exactly the budget the servers get::

    taskset -c 1 python -m bench.runtime.rawtorch --model-dir DIR --threads 1

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


def measure(
    model_dir: Path, threads: int, batch_sizes: tuple[int, ...], budget_s: float, rounds: int = 3
) -> dict[str, object]:
    """Rows/s per batch size (time-bounded loops) and the median batch-1 forward time.

    The machine may be shared, so every figure is taken ``rounds`` times: the best rows/s per
    batch size and the lowest per-round median forward time are kept (the least disturbed
    round is the closest to the hardware limit).
    """
    import torch

    from bench.runtime.models import torchscript_allowed
    from bench.runtime.stats import median, percentile

    torch.set_num_threads(threads)
    with torchscript_allowed():
        # torch.jit.load is not annotated in torch's stubs.
        module = torch.jit.load(str(model_dir / "model.pt"))  # type: ignore[no-untyped-call]
    config = json.loads((model_dir / "model.json").read_text())
    width = int(config["inputs"][0]["shape"][0])
    per_batch: dict[str, float] = {}
    best_round: list[float] = []
    with torch.inference_mode():
        for _ in range(rounds):
            for batch in batch_sizes:
                x = torch.rand(batch, width)
                for _ in range(5):
                    module(x)
                iterations = 0
                started = time.perf_counter()
                deadline = started + budget_s / rounds
                while True:
                    module(x)
                    iterations += 1
                    if iterations >= 10 and time.perf_counter() >= deadline:
                        break
                rate = iterations * batch / (time.perf_counter() - started)
                per_batch[str(batch)] = max(rate, per_batch.get(str(batch), 0.0))
            x1 = torch.rand(1, width)
            samples: list[float] = []
            deadline = time.perf_counter() + budget_s * 2 / rounds
            while len(samples) < 100 or (time.perf_counter() < deadline and len(samples) < 10000):
                t0 = time.perf_counter_ns()
                module(x1)
                samples.append((time.perf_counter_ns() - t0) / 1e6)
            if not best_round or median(samples) < median(best_round):
                best_round = samples
    best_batch = max(per_batch, key=lambda k: per_batch[k])
    return {
        "threads": threads,
        "torch": torch.__version__,
        "rounds": rounds,
        "rows_per_s_by_batch": per_batch,
        "best_batch": int(best_batch),
        "best_rows_per_s": per_batch[best_batch],
        "forward_b1_ms": median(best_round),
        "forward_b1_p99_ms": percentile(best_round, 99.0),
        "forward_b1_samples": len(best_round),
    }


def main() -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--budget-s", type=float, default=1.0, help="seconds per batch size")
    parser.add_argument("--rounds", type=int, default=3, help="repeats; the best is kept")
    parser.add_argument("--batch-sizes", default=",".join(str(b) for b in BATCH_SIZES))
    args = parser.parse_args()
    sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    print(json.dumps(measure(args.model_dir, args.threads, sizes, args.budget_s, args.rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
