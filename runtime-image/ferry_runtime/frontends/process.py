"""One front-end process: REST and gRPC over a DataPlane whose engine is the compute process.

Started by the compute process (``supervisor.py``) as ``python -m ferry_runtime.frontends
--data-fd FD --control-fd FD``; everything else (settings with the ports to share, the model
signature) arrives in the first message on the control channel. SIGTERM drains like the
single-process server: readiness turns false, the servers stop taking connections, requests in
flight finish (bounded by the drain timeout). Losing the compute process ends the front end at
once with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Sequence

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ferry_runtime.dataplane import DataPlane
from ferry_runtime.frontends import channel as wire
from ferry_runtime.frontends.channel import BlockingChannel
from ferry_runtime.frontends.remote import RemoteEngine, RemoteStats
from ferry_runtime.gc_tuning import tune_gc_for_serving
from ferry_runtime.metrics import Metrics
from ferry_runtime.protocol.errors import UnavailableError
from ferry_runtime.protocol.types import ModelSignature
from ferry_runtime.settings import RuntimeSettings
from ferry_runtime.transports.servers import TransportServers

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
"""Longest wait for the compute process's first message."""


def outstanding_share(settings: RuntimeSettings) -> int:
    """Requests one front end keeps in flight before it sheds new ones before their body is
    read: its share of the compute process's queue, plus one running batch. Together the front
    ends never send more than the queue holds, so overload is refused as cheaply as in one
    process."""
    share = -(-settings.max_queue_size // max(1, settings.frontend_processes))
    return share + settings.max_batch_size


class FrontEndMetrics(Metrics):
    """This process's series, rendered for ``/metrics`` summed with every other process's."""

    def __init__(self, max_batch_size: int, engine: RemoteEngine) -> None:
        super().__init__(max_batch_size)
        self._engine = engine

    def render(self) -> tuple[bytes, str]:
        """Every process's series, summed by the compute process."""
        try:
            merged = self._engine.call("metrics", self.exposition())
        except UnavailableError:
            merged = None
        if not isinstance(merged, bytes):
            return self.exposition(), CONTENT_TYPE_LATEST
        return merged, CONTENT_TYPE_LATEST


class FrontEnd:
    """The transports of one front-end process and their lifecycle."""

    def __init__(
        self, settings: RuntimeSettings, signature: ModelSignature, control: BlockingChannel
    ) -> None:
        self.settings = settings
        self.engine = RemoteEngine(
            control,
            outstanding_share(settings),
            on_state=self._state,
            on_lost=self._lost,
            exposition=self._exposition,
        )
        self.metrics = FrontEndMetrics(settings.max_batch_size, self.engine)
        self.dataplane = DataPlane(signature, self.metrics, RemoteStats(self.engine))
        self.servers = TransportServers(self.dataplane, settings, reuse_port=True)
        self._attached = False
        self._stop = asyncio.Event()
        self._status = 0

    async def run(self, data: socket.socket) -> int:
        """Serve until SIGTERM/SIGINT or until the compute process is gone."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await self.engine.connect(data)
        await self.servers.start()
        self.engine.announce_listening()
        await self._stop.wait()
        self.dataplane.set_ready(False)
        force = self._status != 0
        await self.servers.stop(0.0 if force else self.settings.drain_timeout_s, force=force)
        return self._status

    def _exposition(self) -> bytes:
        return self.metrics.exposition()

    def _state(self, ready: bool, device: str) -> None:
        if ready and not self._attached:
            self.dataplane.attach(self.engine, device)
            self._attached = True
        self.dataplane.set_ready(ready)

    def _lost(self) -> None:
        if not self._stop.is_set():
            log.error("the compute process is gone; stopping")
            self._status = 1
            self._stop.set()


def _hello(message: wire.Message) -> tuple[ModelSignature, RuntimeSettings]:
    if (
        len(message) != 3
        or message[0] != wire.HELLO
        or not isinstance(message[1], ModelSignature)
        or not isinstance(message[2], RuntimeSettings)
    ):
        raise OSError(f"expected {wire.HELLO!r} from the compute process, got {message[0]!r}")
    return message[1], message[2]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ferry_runtime.frontends``."""
    parser = argparse.ArgumentParser(prog="python -m ferry_runtime.frontends")
    parser.add_argument("--data-fd", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    data = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=args.data_fd)
    control = BlockingChannel(
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=args.control_fd)
    )
    try:
        signature, settings = _hello(control.recv(timeout=START_TIMEOUT_S))
    except (EOFError, OSError) as error:
        print(f"ferry-runtime front end: no start message: {error}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[frontend]: %(message)s",
    )
    import uvloop

    async def serve() -> int:
        front_end = FrontEnd(settings, signature, control)
        tune_gc_for_serving()
        return await front_end.run(data)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve())
