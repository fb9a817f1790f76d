"""Raw forward throughput of one model directory through Ferry's ``Model`` interface (numpy in,
numpy out, the runtime's own loader), in its own pinned process::

    taskset -c 0 python -m bench.formats.raw --model-dir DIR --threads 1 [--variant V]

``--variant`` (TorchScript only): ``plain`` (the module as saved, the baseline), ``frozen``
(``torch.jit.optimize_for_inference(torch.jit.freeze(m))``, with its largest difference from
the plain module and the verdict of the runtime's own load-time choice) or ``ferry`` (what
the runtime's loader serves; the default, and the only variant of the PyTorch 2 formats).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

BATCH_SIZES = (1, 8, 32)


def measure(
    model_dir: Path, threads: int, variant: str, budget_s: float, rounds: int
) -> dict[str, object]:
    """Best rows/s per batch size over ``rounds`` time-bounded loops (shared machine: the
    least disturbed round is kept)."""
    import numpy as np
    import torch
    from ferry_runtime.model.loader import LoadOptions, load_model, locate_model

    located = locate_model(model_dir)
    verdict = None
    max_diff = None
    if variant == "ferry":
        model = load_model(LoadOptions(model_dir, device="cpu", threads=threads))
    else:
        from ferry_runtime.model.loader import declared_signature
        from ferry_runtime.model.torchscript import choose_frozen, load_torchscript

        if located.format != "torchscript":
            raise SystemExit(f"--variant {variant} is for TorchScript only")
        torch.set_num_threads(threads)
        signature = declared_signature(model_dir)
        assert signature is not None
        device = torch.device("cpu")
        model = load_torchscript(located.path, *signature, device, freeze=False)
        if variant == "frozen":
            plain = model.module
            _, chosen = choose_frozen(plain, model.inputs, device)
            verdict = {"adopt": chosen.adopt, "reason": chosen.reason}
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning
                )
                frozen = torch.jit.optimize_for_inference(torch.jit.freeze(plain))
            check = np.random.default_rng(1).standard_normal(
                (32, model.inputs[0].shape[0]), dtype=np.float32
            )
            with torch.inference_mode():
                want = plain(torch.from_numpy(check))
                got = frozen(torch.from_numpy(check))
            max_diff = float((want - got).abs().max())
            model.module = frozen
    width = model.inputs[0].shape[0]
    rates: dict[str, float] = {}
    with model.thread_context():
        for _ in range(rounds):
            for batch in BATCH_SIZES:
                x = np.random.default_rng(batch).standard_normal((batch, width), dtype=np.float32)
                for _ in range(5):
                    model.forward([x])
                iterations = 0
                started = time.perf_counter()
                deadline = started + budget_s
                while iterations < 5 or time.perf_counter() < deadline:
                    model.forward([x])
                    iterations += 1
                rate = iterations * batch / (time.perf_counter() - started)
                rates[str(batch)] = max(rate, rates.get(str(batch), 0.0))
    return {
        "format": located.format,
        "variant": variant,
        "threads": threads,
        "rows_per_s": rates,
        "max_abs_diff_vs_plain": max_diff,
        "load_time_verdict": verdict,
    }


def main() -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variant", choices=["ferry", "plain", "frozen"], default="ferry")
    parser.add_argument("--budget-s", type=float, default=0.6, help="seconds per cell per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = measure(args.model_dir, args.threads, args.variant, args.budget_s, args.rounds)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
