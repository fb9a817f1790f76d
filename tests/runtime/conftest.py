"""Shared runtime fixtures: tiny TorchScript model directories and real servers on loopback.

- ``model_dir_factory(module=None, inputs=..., outputs=...)`` writes ``model.pt`` (scripted
  TorchScript) and ``model.json`` into a fresh temp directory.
- ``start_server(model_dir=None, model=None, **settings)`` starts a real server on 127.0.0.1
  (port 0 for HTTP and gRPC), waits until it is ready and returns a ``RunningServer`` with the
  addresses (``http_url``, ``grpc_url``). Every server started is stopped at teardown.
- ``runtime_server`` is one such server for the default model (``y = 2x + 1``).

The helpers live in ``runtime_helpers.py`` so test modules can import them by a unique name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from runtime_helpers import RunningServer, launch_server, write_model_dir
from torch import nn

# Property-based tests (test_fuzz.py): few examples, the same ones every run, in the default
# suite; ``make fuzz`` selects the long random profile.
settings.register_profile("ferry", max_examples=25, derandomize=True, database=None)
settings.register_profile("ferry-fuzz", max_examples=1500, database=None)
settings.load_profile(os.environ.get("FERRY_HYPOTHESIS_PROFILE", "ferry"))


@pytest.fixture
def model_dir_factory(tmp_path: Path) -> Callable[..., Path]:
    """Make model directories: ``factory(module=None, inputs=None, outputs=None)``."""
    count = 0

    def make(module: nn.Module | None = None, **config: Any) -> Path:
        nonlocal count
        count += 1
        return write_model_dir(tmp_path / f"model-{count}", module, **config)

    return make


@pytest.fixture
def start_server() -> Iterator[Callable[..., RunningServer]]:
    """Start real servers: ``start_server(model_dir=None, model=None, **settings)``."""
    servers: list[RunningServer] = []

    def start(model_dir: Path | None = None, **kwargs: Any) -> RunningServer:
        running = launch_server(model_dir, **kwargs)
        servers.append(running)
        return running

    yield start
    for running in servers:
        running.stop()


@pytest.fixture
def runtime_server(
    start_server: Callable[..., RunningServer], model_dir_factory: Callable[..., Path]
) -> RunningServer:
    """A server for the default model (``INPUT__0`` FP32 [4] → ``OUTPUT__0`` = 2x + 1)."""
    return start_server(model_dir_factory())


@pytest.fixture(scope="session")
def pt2_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model packaged once per session in both PyTorch 2 formats (AOTInductor
    compiles C++: tens of seconds on two cores, so every test shares these directories)."""
    from pt2_helpers import package_dir

    root = tmp_path_factory.mktemp("pt2")
    dirs = {}
    for model_format in ("exported-program", "aot-inductor"):
        dirs[model_format] = root / model_format
        package_dir(dirs[model_format], model_format)
    return dirs
