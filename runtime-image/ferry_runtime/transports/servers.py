"""The two network servers over one DataPlane: uvicorn (REST) and grpcio (gRPC), started and
drained together.

Used by the single-process runtime (``server.py``) and by each front-end process
(``frontends/``). With ``reuse_port`` every server binds with ``SO_REUSEPORT``, so several
processes listen on the same ports and the kernel spreads connections across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass

import grpc
import uvicorn

from ferry_runtime.dataplane import DataPlane
from ferry_runtime.protocol.limits import body_limits
from ferry_runtime.settings import RuntimeSettings
from ferry_runtime.transports import grpc as grpc_transport
from ferry_runtime.transports import rest as rest_transport
from ferry_runtime.transports.http_limits import HttpLimits, limited_protocol

log = logging.getLogger(__name__)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the process's server owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_tcp(
    host: str, port: int, *, reuse_port: bool = False, what: str = "HTTP"
) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening); ``port`` 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot bind {what} to {host}:{port}: {error.strerror or error}") from None
    sock.set_inheritable(True)
    return sock


def grpc_address(host: str, port: int) -> str:
    """grpcio's form of ``host:port`` (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class TransportServers:
    """REST and gRPC for ``dataplane`` on the ports the settings name."""

    dataplane: DataPlane
    settings: RuntimeSettings
    reuse_port: bool = False
    http_port: int = 0
    grpc_port: int = 0
    _uvicorn: _Uvicorn | None = None
    _uvicorn_task: asyncio.Task[None] | None = None
    _grpc: grpc.Server | None = None

    async def start(self) -> None:
        """Bind and start both servers (call on the event loop); raises ``OSError`` when a
        port cannot be bound."""
        settings = self.settings
        sock = bind_tcp(settings.host, settings.http_port, reuse_port=self.reuse_port)
        self.http_port = sock.getsockname()[1]
        app = rest_transport.build_app(
            self.dataplane,
            max_request_bytes=settings.max_request_bytes,
            max_json_request_bytes=settings.max_json_request_bytes,
        )
        limits = HttpLimits(
            max_header_bytes=settings.max_header_bytes,
            max_header_count=settings.max_header_count,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
        )
        config = uvicorn.Config(
            app,
            http=limited_protocol(limits),
            ws="none",
            lifespan="off",
            loop="none",
            access_log=False,
            log_config=None,
            log_level=settings.log_level,
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=max(1, round(settings.drain_timeout_s)),
            backlog=4096,
        )
        self._uvicorn = _Uvicorn(config)
        self._uvicorn_task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]))
        while not self._uvicorn.started:
            if self._uvicorn_task.done():
                self._uvicorn_task.result()
                raise RuntimeError("HTTP server exited during start-up")
            await asyncio.sleep(0.01)

        body = body_limits(
            self.dataplane.signature, settings.max_request_bytes, settings.max_json_request_bytes
        )
        server = grpc_transport.build_server(
            self.dataplane,
            max_request_bytes=body.grpc,
            # every request the batcher can hold (queued + one running batch) gets a thread
            workers=settings.max_queue_size + settings.max_batch_size,
            reuse_port=self.reuse_port,
        )
        address = grpc_address(settings.host, settings.grpc_port)
        try:
            self.grpc_port = server.add_insecure_port(address)
        except RuntimeError as error:
            raise OSError(f"cannot bind gRPC to {address}: {error}") from None
        if not self.grpc_port:
            raise OSError(f"cannot bind gRPC to {address}")
        server.start()
        self._grpc = server

    def force_exit(self) -> None:
        """Make a running drain stop waiting for open HTTP connections."""
        if self._uvicorn is not None:
            self._uvicorn.force_exit = True

    async def stop(self, grace_s: float, *, force: bool = False) -> None:
        """Stop taking connections and requests; wait up to ``grace_s`` for those in flight."""
        waits: list[Awaitable[object]] = []
        if self._uvicorn is not None and self._uvicorn_task is not None:
            self._uvicorn.should_exit = True
            if force:
                self._uvicorn.force_exit = True
            waits.append(self._uvicorn_task)
        if self._grpc is not None:
            stopped = self._grpc.stop(grace=grace_s)
            waits.append(asyncio.to_thread(stopped.wait))
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)
