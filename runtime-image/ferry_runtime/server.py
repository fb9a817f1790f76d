"""``ferry-runtime serve``: one process: REST (uvicorn) on an event loop, gRPC on a thread pool.

Start-up: both servers bind and answer liveness at once; the model loads and warms up in a
worker thread, then the compute thread starts and readiness turns true. A model that cannot
load ends the process with status 1 (the pod restarts and says why in its log).

Shutdown (SIGTERM or SIGINT): readiness turns false, both servers stop taking new requests
and connections, queued and in-flight requests finish (bounded by the drain timeout), the
compute thread ends, the signal handlers that were there before are restored and ``run``
returns 0. A second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from types import FrameType

import grpc
import uvicorn

from ferry_runtime import priority
from ferry_runtime.batching.batcher import Batcher, BatchingOptions
from ferry_runtime.dataplane import DataPlane
from ferry_runtime.metrics import Metrics
from ferry_runtime.model.base import Model, ModelLoadError
from ferry_runtime.protocol.limits import body_limits
from ferry_runtime.protocol.metadata import PLATFORM
from ferry_runtime.protocol.types import DynamicBatching, ModelSignature, TensorSpec
from ferry_runtime.settings import RuntimeSettings
from ferry_runtime.termination import report_load_failure
from ferry_runtime.transports import grpc as grpc_transport
from ferry_runtime.transports import rest as rest_transport
from ferry_runtime.transports.http_limits import HttpLimits, limited_protocol

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
SignalHandler = Callable[[int, FrameType | None], object] | int | None


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: ``RuntimeServer`` owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def batching_options(settings: RuntimeSettings) -> BatchingOptions:
    """The batcher's view of the settings."""
    return BatchingOptions(
        enabled=settings.batching_enabled,
        max_batch_size=settings.max_batch_size,
        max_queue_delay_s=settings.max_queue_delay_ms / 1000.0,
        preferred_batch_sizes=tuple(settings.preferred_batch_sizes),
        max_queue_size=settings.max_queue_size,
    )


def model_signature(
    settings: RuntimeSettings,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    device: str = "cpu",
) -> ModelSignature:
    """What the DataPlane advertises and validates against."""
    batching = None
    if settings.batching_enabled:
        batching = DynamicBatching(
            max_queue_delay_us=round(settings.max_queue_delay_ms * 1000),
            preferred_batch_sizes=tuple(settings.preferred_batch_sizes),
            max_queue_size=settings.max_queue_size,
        )
    return ModelSignature(
        name=settings.model_name,
        version=settings.model_version,
        platform=PLATFORM,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=settings.max_batch_size,
        dynamic_batching=batching,
        device=device,
    )


def default_model_loader(settings: RuntimeSettings) -> Model:
    """Load (and warm up) the model the settings name. Blocking: runs in a worker thread."""
    from ferry_runtime.model.loader import LoadOptions, load_model, warm_up

    model = load_model(
        LoadOptions(
            model_dir=settings.model_dir,
            model_format=settings.model_format,
            sha256=settings.model_sha256,
            device=settings.device,
            threads=settings.threads,
        )
    )
    warm_up(model, settings.max_batch_size)
    return model


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot bind HTTP to {host}:{port}: {error.strerror or error}") from None
    sock.set_inheritable(True)
    return sock


def _grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


GC_THRESHOLDS = (50_000, 20, 100)
"""Collector thresholds while serving: gen-0 runs every 50k allocations instead of 700."""


def tune_gc_for_serving() -> None:
    """Keep the cyclic garbage collector off the request path once the model is warm.

    Everything alive after warm-up (torch, the model, the servers) is long-lived: freezing it
    takes it out of every future collection, and a higher gen-0 threshold makes the remaining
    collections rare. Under load this cut the gRPC p99 at concurrency 64 from ~110 ms to ~40 ms
    in the benchmark (bench/). Requests create few reference cycles, so memory stays flat.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class RuntimeServer:
    """The runtime: transports, DataPlane, batcher and their lifecycle.

    ``model`` injects an already-built model (tests); by default the model directory in the
    settings is loaded with ``default_model_loader``. ``tune_gc`` (the CLI sets it) applies
    :func:`tune_gc_for_serving` once the model is warm; tests leave the process's GC alone.
    ``prioritize_compute`` (the CLI sets it too) lowers the priority of the serving threads
    below the compute thread's and shortens the GIL switch interval (``priority.py``).
    """

    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        model: Model | None = None,
        model_loader: Callable[[RuntimeSettings], Model] = default_model_loader,
        tune_gc: bool = False,
        prioritize_compute: bool = False,
    ) -> None:
        self.settings = settings
        self._tune_gc = tune_gc
        self._prioritize_compute = prioritize_compute
        self._model = model
        self._model_loader = model_loader
        if model is not None:
            inputs, outputs, device = model.inputs, model.outputs, model.device
        else:
            from ferry_runtime.model.loader import model_signature_of

            inputs, outputs = model_signature_of(settings.model_dir, settings.model_format)
            device = "cpu" if settings.device == "auto" else settings.device
        self.metrics = Metrics(settings.max_batch_size)
        self.dataplane = DataPlane(model_signature(settings, inputs, outputs, device), self.metrics)
        self.batcher: Batcher | None = None
        self.http_port = 0
        self.grpc_port = 0
        self._stop = asyncio.Event()
        self._force = False
        self._uvicorn: _Uvicorn | None = None
        self._uvicorn_task: asyncio.Task[None] | None = None
        self._grpc: grpc.Server | None = None
        self._serving_threads: set[int] = set()

    # ---- control ---------------------------------------------------------------------------

    def request_stop(self, *, force: bool = False) -> None:
        """Begin shutdown (call on the loop thread); ``force`` skips waiting for requests."""
        if self._stop.is_set():
            force = True
        self._force = self._force or force
        self._stop.set()
        if self._force and self._uvicorn is not None:
            self._uvicorn.force_exit = True

    async def run(
        self,
        *,
        handle_signals: bool = True,
        on_started: Callable[[RuntimeServer], None] | None = None,
    ) -> int:
        """Serve until stopped; returns the process exit status."""
        previous = self._install_signal_handlers() if handle_signals else {}
        try:
            await self._start_transports()
            if self._prioritize_compute:
                self._serving_threads = priority.thread_ids()
            if on_started is not None:
                on_started(self)
            return await self._serve()
        finally:
            self._restore_signal_handlers(previous)

    async def _serve(self) -> int:
        loading = asyncio.create_task(self._load())
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        status = 0
        if loading.done() and loading.exception() is not None:
            error = loading.exception()
            if isinstance(error, ModelLoadError):
                log.error("cannot serve the model: %s", error)
                status = report_load_failure(str(error))
            else:
                log.error("cannot serve the model", exc_info=error)
                status = 1
        elif not loading.done():
            log.warning("stopped while the model was loading")
            loading.cancel()
        else:
            await stopping
        stopping.cancel()
        await self._drain()
        return status

    # ---- start-up --------------------------------------------------------------------------

    async def _start_transports(self) -> None:
        settings = self.settings
        sock = _bind(settings.host, settings.http_port)
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
        )
        address = _grpc_address(settings.host, settings.grpc_port)
        try:
            self.grpc_port = server.add_insecure_port(address)
        except RuntimeError as error:
            raise OSError(f"cannot bind gRPC to {address}: {error}") from None
        if not self.grpc_port:
            raise OSError(f"cannot bind gRPC to {address}")
        server.start()
        self._grpc = server
        log.info(
            "serving model %r (version %s): REST on %s:%d, gRPC on %s:%d",
            settings.model_name,
            settings.model_version,
            settings.host,
            self.http_port,
            settings.host,
            self.grpc_port,
        )

    async def _load(self) -> None:
        model = self._model
        if model is None:
            model = await asyncio.to_thread(self._model_loader, self.settings)
            self._model = model
        batcher = Batcher(
            model,
            batching_options(self.settings),
            metrics=self.metrics,
            on_batch=self.dataplane.record_batch,
        )
        batcher.start()
        self.batcher = batcher
        if self._prioritize_compute:
            # the compute thread keeps the process's niceness; what serves requests yields to it
            priority.deprioritize(self._serving_threads, self.settings.serving_thread_nice)
            priority.shorten_switch_interval()
        self.dataplane.attach(batcher, model.device)
        if self._tune_gc:
            tune_gc_for_serving()
        self.dataplane.set_ready(True)
        log.info("model %r is ready", self.settings.model_name)

    # ---- shutdown --------------------------------------------------------------------------

    async def _drain(self) -> None:
        timeout = 0.0 if self._force else self.settings.drain_timeout_s
        self.dataplane.set_ready(False)
        log.info("draining (up to %.1fs)", timeout)
        waits = []
        if self._uvicorn is not None and self._uvicorn_task is not None:
            self._uvicorn.should_exit = True
            if self._force:
                self._uvicorn.force_exit = True
            waits.append(self._uvicorn_task)
        if self._grpc is not None:
            stopped = self._grpc.stop(grace=timeout)
            waits.append(asyncio.ensure_future(asyncio.to_thread(stopped.wait)))
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)
        if self.batcher is not None:
            await self.batcher.stop(grace_s=0.0 if self._force else timeout)
        log.info("stopped")

    # ---- signals ---------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, SignalHandler]:
        loop = asyncio.get_running_loop()
        previous: dict[int, SignalHandler] = {}
        for sig in SIGNALS:
            previous[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, self._on_signal, sig)
        return previous

    def _on_signal(self, sig: int) -> None:
        log.info("received %s", signal.Signals(sig).name)
        self.request_stop()

    def _restore_signal_handlers(self, previous: dict[int, SignalHandler]) -> None:
        if not previous:
            return
        loop = asyncio.get_running_loop()
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def run(settings: RuntimeSettings) -> int:
    """Run the server on a uvloop event loop until SIGTERM/SIGINT; returns the exit status."""
    import uvloop

    async def main() -> int:
        return await RuntimeServer(settings, tune_gc=True, prioritize_compute=True).run()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())
