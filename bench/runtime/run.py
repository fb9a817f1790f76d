"""Entry point of ``make bench`` / ``make bench-quick``: Ferry's runtime vs raw torch, MLServer
and TorchServe. See docs/performance.md.

    .venv/bin/python bench/runtime/run.py [--quick] [--only ferry,mlserver] [--models medium]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # run as a script: make the repository root importable so ``bench`` resolves
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.runtime.orchestrate import main

if __name__ == "__main__":
    raise SystemExit(main())
