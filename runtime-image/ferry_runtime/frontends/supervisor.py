"""The compute process's front ends: reserve the shared ports, start the processes, wait until
they listen, and stop them on shutdown.

The ports are reserved first by sockets bound with ``SO_REUSEPORT`` that never listen (so a
port of 0 becomes one concrete port every front end binds, and no other program takes it
meanwhile); once every front end listens the reservations close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ferry_runtime.frontends import channel as wire
from ferry_runtime.frontends.service import EngineService
from ferry_runtime.protocol.types import ModelSignature
from ferry_runtime.settings import RuntimeSettings
from ferry_runtime.transports.servers import bind_tcp

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
"""Longest wait for a front end to bind both ports."""

STOP_MARGIN_S = 5.0
"""How much longer than the drain timeout a front end may take to exit before it is killed."""


@dataclass
class FrontEnds:
    """``settings.frontend_processes`` front ends serving through ``service``."""

    settings: RuntimeSettings
    signature: ModelSignature
    service: EngineService
    http_port: int = 0
    grpc_port: int = 0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    async def start(self) -> None:
        """Start every front end and wait until all of them listen on both ports."""
        settings = self.settings
        http = bind_tcp(settings.host, settings.http_port, reuse_port=True)
        grpc = bind_tcp(settings.host, settings.grpc_port, reuse_port=True, what="gRPC")
        with http, grpc:
            self.http_port = http.getsockname()[1]
            self.grpc_port = grpc.getsockname()[1]
            shared = settings.model_copy(
                update={"http_port": self.http_port, "grpc_port": self.grpc_port}
            )
            for _ in range(settings.frontend_processes):
                await self._spawn(shared)
            await self._wait_listening()

    async def _spawn(self, settings: RuntimeSettings) -> None:
        data, data_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        control, control_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with data_theirs, control_theirs:
            self.processes.append(_launch(data_theirs.fileno(), control_theirs.fileno()))
        peer = await self.service.serve(data, control)
        assert peer.control is not None
        peer.control.send((wire.HELLO, self.signature, settings))

    async def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        for peer, process in zip(self.service.peers, self.processes, strict=True):
            while not peer.listening.is_set():
                if process.poll() is not None:
                    raise OSError(
                        f"front end {peer.index} exited with status {process.returncode} "
                        "before it listened"
                    )
                if time.monotonic() > deadline:
                    raise OSError(
                        f"front end {peer.index} did not listen within {START_TIMEOUT_S:.0f}s"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(peer.listening.wait(), 0.05)

    async def stop(self, grace_s: float) -> None:
        """Drain every front end (SIGTERM), killing those still there after the grace."""
        self.service.expect_exits()
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s + STOP_MARGIN_S
        for process in self.processes:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                await asyncio.to_thread(process.wait, remaining)
            except subprocess.TimeoutExpired:
                log.warning("front end (pid %d) did not stop in time; killing it", process.pid)
                process.kill()
                await asyncio.to_thread(process.wait)
        self.service.close()

    def kill(self) -> None:
        """End every front end at once (the compute process is failing)."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()


def _launch(data_fd: int, control_fd: int) -> subprocess.Popen[bytes]:
    """Start ``python -m ferry_runtime.frontends`` with its ends of the two socket pairs."""
    command = [sys.executable, "-m", "ferry_runtime.frontends"]
    command += ["--data-fd", str(data_fd), "--control-fd", str(control_fd)]
    return subprocess.Popen(command, pass_fds=(data_fd, control_fd), env=os.environ.copy())
