"""Helpers for the runtime tests (imported by conftest.py and by test modules).

- ``write_model_dir(dir, module=None, inputs=..., outputs=...)`` scripts a tiny TorchScript
  model into ``dir`` with its ``model.json`` (docs/contracts.md).
- ``launch_server(model_dir=None, model=None, **settings)`` starts a real ``RuntimeServer``
  (uvicorn + the thread-pool gRPC server) on 127.0.0.1 with port 0 for HTTP and gRPC, in a
  background thread with its own event loop, and waits until the model is ready.
- ``GatedModel`` wraps a loaded model and holds its first forward pass until released, so a
  test can fill the queue behind it deterministically.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ferry_runtime.model.base import Model
from torch import nn

DEFAULT_INPUTS = [{"name": "INPUT__0", "datatype": "FP32", "shape": [4]}]
DEFAULT_OUTPUTS = [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [4]}]


class AffineRows(nn.Module):
    """``y = 2x + 1``: exact in FP32, so every row can be checked against its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 + 1.0


@contextmanager
def torchscript_allowed() -> Iterator[None]:
    """torch ≥ 2.10 deprecates torch.jit.*; TorchScript is still the format Ferry serves."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        yield


def write_model_dir(
    directory: Path,
    module: nn.Module | None = None,
    *,
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[dict[str, Any]] | None = None,
) -> Path:
    """Script ``module`` (default ``AffineRows``) into ``directory`` with its model.json."""
    directory.mkdir(parents=True, exist_ok=True)
    with torchscript_allowed():
        scripted = torch.jit.script((module or AffineRows()).eval())
        torch.jit.save(scripted, str(directory / "model.pt"))
    config = {"inputs": inputs or DEFAULT_INPUTS, "outputs": outputs or DEFAULT_OUTPUTS}
    (directory / "model.json").write_text(json.dumps(config))
    return directory


def load_torchscript(directory: Path) -> Model:
    """Load a model directory with the runtime's loader (sha256 unchecked, CPU)."""
    from ferry_runtime.model.loader import LoadOptions, load_model

    return load_model(LoadOptions(model_dir=directory, device="cpu"))


class GatedModel(Model):
    """Holds its first forward pass until ``release`` is set; then behaves like ``inner``."""

    def __init__(self, inner: Model) -> None:
        self.inner = inner
        self.inputs = inner.inputs
        self.outputs = inner.outputs
        self.device = inner.device
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def thread_context(self) -> AbstractContextManager[object]:
        return self.inner.thread_context()

    def forward(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            assert self.release.wait(30), "the test never released the gate"
        return self.inner.forward(inputs)


@dataclass
class RunningServer:
    """A runtime server running in a background thread."""

    http_url: str
    """``127.0.0.1:PORT`` of the REST server (tritonclient.http form)."""
    grpc_url: str
    """``127.0.0.1:PORT`` of the gRPC server."""
    server: Any
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    exit_codes: list[int] = field(default_factory=list)

    @property
    def http_base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.http_url}"

    def call(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the server's event loop and return its result."""
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            try:
                box.append(function())
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(10), "server loop did not answer"
        return box[0] if box else None

    def stop(self, timeout: float = 30.0) -> int | None:
        """Ask the server to drain and stop; return its exit status."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.server.request_stop)
            self.thread.join(timeout)
        assert not self.thread.is_alive(), "server did not stop"
        return self.exit_codes[0] if self.exit_codes else None


FRONT_END_MODES = [
    pytest.param(0, id="one-process"),
    pytest.param(2, id="two-front-ends"),
]
"""``frontend_processes`` for server fixtures whose tests must pass both ways: the single
process, and two front-end processes feeding the compute process (the protocol, the errors
and the statistics must not tell them apart)."""


def serve_process(model_dir: Path, *, capture: bool = True, **settings: object) -> Any:
    """``python -m ferry_runtime serve`` on 127.0.0.1 as a subprocess (a ``subprocess.Popen``),
    configured by ``FERRY_RUNTIME_*`` variables only: the caller's own are dropped, ``settings``
    (``http_port=...``) added. With ``capture`` its output is a text pipe, else discarded."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_RUNTIME_")}
    values: dict[str, object] = {"model_dir": model_dir, "host": "127.0.0.1", "threads": 1}
    for key, value in (values | settings).items():
        env[f"FERRY_RUNTIME_{key.upper()}"] = str(value)
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "ferry_runtime", "serve"],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT if capture else subprocess.DEVNULL,
        text=True,
    )


def free_port() -> int:
    """A TCP port that was free a moment ago (for servers run as subprocesses)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def launch_server(
    model_dir: Path | None = None,
    *,
    model: Any = None,
    model_loader: Callable[[Any], Model] | None = None,
    wait_ready: bool = True,
    **settings: Any,
) -> RunningServer:
    """Start a ``RuntimeServer`` on 127.0.0.1:0 (HTTP and gRPC) in a background thread."""
    import uvloop
    from ferry_runtime.server import RuntimeServer
    from ferry_runtime.settings import RuntimeSettings

    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "http_port": 0,
        "grpc_port": 0,
        "drain_timeout_s": 10,
        "log_level": "warning",
    }
    if model_dir is not None:
        values["model_dir"] = model_dir
    values.update(settings)
    runtime_settings = RuntimeSettings(**values)
    started = threading.Event()
    failure: list[BaseException] = []
    holder: dict[str, Any] = {}
    exit_codes: list[int] = []

    def main() -> None:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        holder["loop"] = loop
        try:
            if model_loader is None:
                server = RuntimeServer(runtime_settings, model=model)
            else:
                server = RuntimeServer(runtime_settings, model_loader=model_loader)
            holder["server"] = server
            exit_codes.append(
                loop.run_until_complete(
                    server.run(handle_signals=False, on_started=lambda _: started.set())
                )
            )
        except BaseException as error:
            failure.append(error)
        finally:
            started.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=main, name="ferry-test-server", daemon=True)
    thread.start()
    assert started.wait(30), "server did not start"
    if failure:
        raise failure[0]
    server = holder["server"]
    running = RunningServer(
        http_url=f"127.0.0.1:{server.http_port}",
        grpc_url=f"127.0.0.1:{server.grpc_port}",
        server=server,
        loop=holder["loop"],
        thread=thread,
        exit_codes=exit_codes,
    )
    if wait_ready:
        deadline = time.monotonic() + 60
        while not server.dataplane.ready():
            assert thread.is_alive(), f"server exited while loading (status {exit_codes})"
            assert time.monotonic() < deadline, "model did not become ready"
            time.sleep(0.02)
    return running
