"""The DataPlane: the one place inference logic lives, under both transports.

It knows the served model's signature, validates requests against it (names, datatypes,
shapes, rows), resolves model name/version, hands validated inputs to the engine (the
batcher) and builds responses. It never imports torch, the model package or the batcher:
the engine is anything with ``submit`` and ``submit_threadsafe``; ``server.py`` wires the real
one in.

Threads: ``infer`` and ``predict`` run on the event loop (REST); ``infer_blocking`` runs on any
other thread (the gRPC handler threads) and blocks until the engine answers;
``begin_threadsafe`` queues from any thread and returns at once (gRPC streaming). The in-flight
count and the statistics are shared by both and updated under locks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Sequence
from importlib import metadata as distribution
from typing import Any, Protocol

import numpy as np

from ferry_runtime.metrics import Metrics
from ferry_runtime.protocol import metadata
from ferry_runtime.protocol.datatypes import DATATYPES, bf16_to_float
from ferry_runtime.protocol.errors import (
    InvalidInputError,
    NotFoundError,
    QueueFullError,
    UnavailableError,
    clip,
    clip_list,
)
from ferry_runtime.protocol.tensors import array_from_values
from ferry_runtime.protocol.types import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    ModelSignature,
    RequestedOutput,
    TensorSpec,
)
from ferry_runtime.stats import BatchTiming, InferenceStats, StatsKeeper


class Engine(Protocol):
    """What runs validated batches: the batcher."""

    @property
    def alive(self) -> bool:
        """Whether the engine can still run requests."""
        ...

    @property
    def full(self) -> bool:
        """Whether a request submitted now would be refused (queue full or stopping)."""
        ...

    def submit(self, inputs: Sequence[np.ndarray], rows: int) -> asyncio.Future[list[np.ndarray]]:
        """Queue one request from the event loop; resolves to one array per model output."""
        ...

    def submit_threadsafe(
        self, inputs: Sequence[np.ndarray], rows: int
    ) -> concurrent.futures.Future[list[np.ndarray]]:
        """Queue one request from any thread; resolves to one array per model output."""
        ...


@dataclasses.dataclass(slots=True)
class PendingInference:
    """A request queued by :meth:`DataPlane.begin_threadsafe`; ``result()`` waits for it."""

    dataplane: DataPlane
    request: InferRequest
    selected: list[tuple[int, TensorSpec, bool]]
    future: concurrent.futures.Future[list[np.ndarray]]
    started: int

    def result(self) -> InferResponse:
        """Block until answered; the response, or the error the forward pass raised.
        Call exactly once."""
        return self.dataplane._finish(self)


class DataPlane:
    """Inference logic shared by REST (event loop) and gRPC (handler threads)."""

    def __init__(
        self,
        signature: ModelSignature,
        metrics: Metrics | None = None,
        stats: StatsKeeper | None = None,
    ) -> None:
        self.signature = signature
        self.metrics = metrics or Metrics(signature.max_batch_size)
        self.stats: StatsKeeper = stats or InferenceStats()
        self._engine: Engine | None = None
        self._ready = False
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.metrics.in_flight.set_function(lambda: self._in_flight)
        self._inputs = signature.inputs
        self._input_index = {spec.name: index for index, spec in enumerate(signature.inputs)}
        self._outputs = {spec.name: (index, spec) for index, spec in enumerate(signature.outputs)}
        self._max_rows = signature.max_batch_size
        self._metadata = metadata.model_metadata(signature)
        self._config = metadata.model_config(signature)
        self._server_metadata = metadata.server_metadata(_runtime_version())

    # ---- lifecycle (server.py) -------------------------------------------------------------

    def attach(self, engine: Engine, device: str | None = None) -> None:
        """Serve through ``engine`` (the batcher) once the model is loaded on ``device``."""
        self._engine = engine
        if device is not None and device != self.signature.device:
            self.signature = dataclasses.replace(self.signature, device=device)
            self._config = metadata.model_config(self.signature)

    def set_ready(self, ready: bool) -> None:
        """Readiness: true once the model is loaded and warmed up, false when draining.

        Readiness only steers probes (traffic). Requests that still reach the server while it
        drains are served: the engine refuses work only once it is stopped.
        """
        self._ready = ready and self._engine is not None
        self.metrics.model_ready.set(1 if self._ready else 0)

    @property
    def in_flight(self) -> int:
        """Inference requests accepted by the engine and not yet answered."""
        return self._in_flight

    def record_batch(self, timing: BatchTiming, queue_ns: int) -> None:
        """Batcher callback (compute thread): account one executed batch."""
        self.stats.record_batch(timing, queue_ns)

    # ---- health and metadata ---------------------------------------------------------------

    def live(self) -> bool:
        """Liveness: the process serves, and the compute thread runs once started."""
        return self._engine is None or self._engine.alive

    def ready(self) -> bool:
        """Server readiness (the one model is ready)."""
        return self._ready and self.live()

    def model_ready(self, name: str, version: str = "") -> bool:
        """Readiness of one model version; unknown models raise ``NotFoundError``."""
        self.resolve(name, version)
        return self.ready()

    def server_metadata(self) -> dict[str, Any]:
        """``/v2`` document."""
        return self._server_metadata

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        """``/v2/models/{m}`` document."""
        self.resolve(name, version)
        return self._metadata

    def model_config(self, name: str, version: str = "") -> dict[str, Any]:
        """Triton model configuration (``/config``, gRPC ``ModelConfig``)."""
        self.resolve(name, version)
        return self._config

    def model_statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        """Triton statistics; an empty name means every model."""
        if name:
            self.resolve(name, version)
        signature = self.signature
        return {"model_stats": [self.stats.as_dict(signature.name, signature.version)]}

    def repository_index(self) -> list[dict[str, str]]:
        """The one model this server holds."""
        state = "READY" if self.ready() else "UNAVAILABLE"
        return [{"name": self.signature.name, "version": self.signature.version, "state": state}]

    def resolve(self, name: str, version: str = "") -> None:
        """Check that ``name``/``version`` is the served model (empty version: the default)."""
        signature = self.signature
        if name != signature.name:
            raise NotFoundError(
                f"unknown model {clip(name)}; this server serves {signature.name!r}"
            )
        if version and version != signature.version:
            raise NotFoundError(
                f"unknown version {clip(version)} of model {clip(name)}; served version is "
                f"{signature.version!r}"
            )

    # ---- inference -------------------------------------------------------------------------

    @property
    def full(self) -> bool:
        """Whether the engine would refuse a request now (queue full or stopping)."""
        engine = self._engine
        return engine is not None and engine.full

    def admit(self) -> None:
        """Refuse at once, before a request body is read or decoded, when the engine would.

        Under overload this keeps each refusal as cheap as it can be: no body parse, no
        validation, no allocation; the engine's own check still guards the submission.
        """
        engine = self._engine
        if engine is not None and engine.full:
            raise QueueFullError("inference queue is full; retry later")

    async def infer(self, request: InferRequest) -> InferResponse:
        """Validate, run through the engine, and build the response (event loop)."""
        self.resolve(request.model_name, request.model_version)
        arrays, rows = self._validate_inputs(request.inputs)
        selected = self._select_outputs(request.outputs, request.binary_output)
        results = await self._submit(arrays, rows)
        return self._response(request, selected, results)

    def infer_blocking(self, request: InferRequest) -> InferResponse:
        """``infer`` for a thread other than the event loop's: blocks until answered."""
        return self.begin_threadsafe(request).result()

    def begin_threadsafe(self, request: InferRequest) -> PendingInference:
        """Validate and queue ``request`` from any thread without waiting for the answer
        (gRPC streaming keeps many requests of one stream in flight); validation and
        admission errors raise here, the forward pass's when the result is taken."""
        self.resolve(request.model_name, request.model_version)
        arrays, rows = self._validate_inputs(request.inputs)
        selected = self._select_outputs(request.outputs, request.binary_output)
        engine = self._engine
        if engine is None:
            raise UnavailableError(f"model {self.signature.name!r} is not ready (loading)")
        started = time.perf_counter_ns()
        self._count_in_flight(1)
        try:
            future = engine.submit_threadsafe(arrays, rows)
        except BaseException:
            self._count_in_flight(-1)
            self.stats.record_request(False, time.perf_counter_ns() - started)
            raise
        return PendingInference(self, request, selected, future, started)

    def _finish(self, pending: PendingInference) -> InferResponse:
        ok = False
        try:
            results = pending.future.result()
            ok = True
        finally:
            self._count_in_flight(-1)
            self.stats.record_request(ok, time.perf_counter_ns() - pending.started)
        return self._response(pending.request, pending.selected, results)

    def _response(
        self,
        request: InferRequest,
        selected: list[tuple[int, TensorSpec, bool]],
        results: list[np.ndarray],
    ) -> InferResponse:
        signature = self.signature
        return InferResponse(
            model_name=signature.name,
            model_version=signature.version,
            id=request.id,
            outputs=[
                InferOutput(spec.name, spec.datatype, results[index], binary)
                for index, spec, binary in selected
            ],
        )

    async def predict(self, name: str, instances: object) -> list[Any] | np.ndarray:
        """The simple JSON route: ``instances`` are rows of the single input.

        Returns the predictions: for a one-output model the output rows, otherwise one
        ``{output name: row}`` object per instance.
        """
        self.resolve(name)
        if len(self._inputs) != 1:
            raise InvalidInputError(
                f"model {clip(name)} has {len(self._inputs)} inputs; the predict route serves "
                "single-input models, use /v2/models/{m}/infer"
            )
        if not isinstance(instances, list) or not instances:
            raise InvalidInputError("'instances' must be a non-empty list of rows")
        spec = self._inputs[0]
        dtype = DATATYPES[spec.datatype]
        try:
            shape = tuple(np.shape(instances))
        except ValueError:
            raise InvalidInputError("'instances' must be rows of equal shape") from None
        array = array_from_values(spec.name, dtype, shape, instances)
        arrays, rows = self._validate_inputs([InferInput(spec.name, spec.datatype, shape, array)])
        results = await self._submit(arrays, rows)
        outputs = self.signature.outputs
        if len(outputs) == 1:
            return _json_rows(outputs[0], results[0])
        columns = [_json_rows(spec, result) for spec, result in zip(outputs, results, strict=True)]
        return [
            {spec.name: column[row] for spec, column in zip(outputs, columns, strict=True)}
            for row in range(rows)
        ]

    async def _submit(self, arrays: list[np.ndarray], rows: int) -> list[np.ndarray]:
        engine = self._engine
        if engine is None:
            raise UnavailableError(f"model {self.signature.name!r} is not ready (loading)")
        started = time.perf_counter_ns()
        self._count_in_flight(1)
        try:
            results = await engine.submit(arrays, rows)
        except BaseException:
            self.stats.record_request(False, time.perf_counter_ns() - started)
            raise
        finally:
            self._count_in_flight(-1)
        self.stats.record_request(True, time.perf_counter_ns() - started)
        return results

    def _count_in_flight(self, change: int) -> None:
        with self._in_flight_lock:
            self._in_flight += change

    def _validate_inputs(self, inputs: list[InferInput]) -> tuple[list[np.ndarray], int]:
        specs = self._inputs
        if len(inputs) != len(specs):
            names = [spec.name for spec in specs]
            given = [tensor.name for tensor in inputs]
            raise InvalidInputError(f"model expects inputs {names}, got {clip_list(given)}")
        arrays: list[np.ndarray | None] = [None] * len(specs)
        rows = -1
        for tensor in inputs:
            index = self._input_index.get(tensor.name)
            if index is None:
                raise InvalidInputError(
                    f"unknown input {clip(tensor.name)}; model inputs are "
                    f"{[spec.name for spec in specs]}"
                )
            if arrays[index] is not None:
                raise InvalidInputError(f"input {clip(tensor.name)} is given twice")
            spec = specs[index]
            if tensor.datatype != spec.datatype:
                raise InvalidInputError(
                    f"input {clip(tensor.name)} has datatype {tensor.datatype}; the model expects "
                    f"{spec.datatype}"
                )
            shape = tensor.shape
            if len(shape) != len(spec.shape) + 1 or any(
                want not in (-1, got) for want, got in zip(spec.shape, shape[1:], strict=True)
            ):
                raise InvalidInputError(
                    f"input {clip(tensor.name)} has shape {clip(list(shape))}; the model expects "
                    f"{[-1, *spec.shape]} (batch first)"
                )
            if rows == -1:
                rows = shape[0]
            elif shape[0] != rows:
                raise InvalidInputError(
                    f"inputs disagree on the batch size: {clip(tensor.name)} has {shape[0]} rows, "
                    f"others {rows}"
                )
            if 0 in shape[1:]:
                raise InvalidInputError(f"input {clip(tensor.name)} has an empty dimension")
            arrays[index] = tensor.data
        if rows < 1:
            raise InvalidInputError("the batch dimension must be at least 1")
        if rows > self._max_rows:
            raise InvalidInputError(
                f"request has {rows} rows; the max batch size is {self._max_rows}"
            )
        return arrays, rows  # type: ignore[return-value]  # every slot was filled above

    def _select_outputs(
        self, requested: list[RequestedOutput] | None, binary_default: bool
    ) -> list[tuple[int, TensorSpec, bool]]:
        if requested is None:
            return [(index, spec, binary_default) for index, spec in self._outputs.values()]
        selected: list[tuple[int, TensorSpec, bool]] = []
        seen: set[str] = set()
        for output in requested:
            found = self._outputs.get(output.name)
            if found is None:
                raise InvalidInputError(
                    f"unknown output {clip(output.name)}; model outputs are {list(self._outputs)}"
                )
            if output.name in seen:
                raise InvalidInputError(f"output {clip(output.name)} is requested twice")
            seen.add(output.name)
            binary = binary_default if output.binary is None else output.binary
            selected.append((found[0], found[1], binary))
        return selected


def _runtime_version() -> str:
    try:
        return distribution.version("ferry")
    except distribution.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "0+unknown"


def _json_rows(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """Output rows as something orjson writes (BF16 widened to float)."""
    if spec.datatype == "BF16":
        return bf16_to_float(array).reshape(array.shape)
    return np.ascontiguousarray(array)
