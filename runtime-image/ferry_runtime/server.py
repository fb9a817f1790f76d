"""``ferry-runtime serve``: REST (uvicorn) on an event loop and gRPC on a thread pool in this
process, or, with ``frontend_processes``, in that many front-end processes that feed this one
(``frontends/``): then this process only loads the model and runs the batcher.

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
import logging
import signal
from collections.abc import Callable
from types import FrameType

from ferry_runtime import priority
from ferry_runtime.batching.batcher import Batcher, BatchingOptions
from ferry_runtime.dataplane import DataPlane
from ferry_runtime.frontends import channel as wire
from ferry_runtime.frontends.service import EngineService
from ferry_runtime.frontends.supervisor import FrontEnds
from ferry_runtime.gc_tuning import tune_gc_for_serving
from ferry_runtime.metrics import Metrics
from ferry_runtime.model.base import Model, ModelLoadError
from ferry_runtime.protocol.metadata import PLATFORM
from ferry_runtime.protocol.types import DynamicBatching, ModelSignature, TensorSpec
from ferry_runtime.settings import RuntimeSettings
from ferry_runtime.termination import report_load_failure
from ferry_runtime.transports.servers import TransportServers

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
SignalHandler = Callable[[int, FrameType | None], object] | int | None


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
        self._transports: TransportServers | None = None
        self._front_ends: FrontEnds | None = None
        self._service: EngineService | None = None
        self._failed = False
        self._serving_threads: set[int] = set()

    # ---- control ---------------------------------------------------------------------------

    def request_stop(self, *, force: bool = False) -> None:
        """Begin shutdown (call on the loop thread); ``force`` skips waiting for requests."""
        if self._stop.is_set():
            force = True
        self._force = self._force or force
        self._stop.set()
        if self._force and self._transports is not None:
            self._transports.force_exit()

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
        return 1 if self._failed and status == 0 else status

    # ---- start-up --------------------------------------------------------------------------

    async def _start_transports(self) -> None:
        settings = self.settings
        if settings.frontend_processes:
            await self._start_front_ends()
        else:
            transports = TransportServers(self.dataplane, settings)
            self._transports = transports
            await transports.start()
            self.http_port, self.grpc_port = transports.http_port, transports.grpc_port
        log.info(
            "serving model %r (version %s): REST on %s:%d, gRPC on %s:%d%s",
            settings.model_name,
            settings.model_version,
            settings.host,
            self.http_port,
            settings.host,
            self.grpc_port,
            f" ({settings.frontend_processes} front-end processes)"
            if settings.frontend_processes
            else "",
        )

    async def _start_front_ends(self) -> None:
        self._service = EngineService(
            self.dataplane.signature,
            self.dataplane.stats,
            self.metrics.exposition,
            self._front_end_lost,
        )
        self._front_ends = FrontEnds(self.settings, self.dataplane.signature, self._service)
        try:
            await self._front_ends.start()
        except BaseException:
            self._front_ends.kill()
            self._service.close()
            raise
        self.http_port, self.grpc_port = self._front_ends.http_port, self._front_ends.grpc_port

    def _front_end_lost(self, index: int) -> None:
        if self._stop.is_set():
            return
        log.error("front-end process %d ended; stopping so that the container restarts", index)
        self._failed = True
        self.request_stop(force=True)

    def _set_ready(self, ready: bool) -> None:
        self.dataplane.set_ready(ready)
        if self._service is not None:
            self._service.broadcast(
                (wire.STATE, self.dataplane.ready(), self.dataplane.signature.device)
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
        if self._service is not None:
            self._service.attach(batcher)
        if self._tune_gc:
            tune_gc_for_serving()
        self._set_ready(True)
        log.info("model %r is ready", self.settings.model_name)

    # ---- shutdown --------------------------------------------------------------------------

    async def _drain(self) -> None:
        timeout = 0.0 if self._force else self.settings.drain_timeout_s
        self._set_ready(False)
        log.info("draining (up to %.1fs)", timeout)
        if self._transports is not None:
            await self._transports.stop(timeout, force=self._force)
        if self._front_ends is not None:
            await self._front_ends.stop(timeout)
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
