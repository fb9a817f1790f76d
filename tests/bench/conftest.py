"""The benchmark code lives in ``bench/`` at the repository root, which is not an installed
package: make the root importable for these tests however pytest was started."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])


def pytest_configure() -> None:
    """Put the repository root on ``sys.path`` once, before collection."""
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
