"""The dynamic batcher with real TorchScript models: batching, errors, overload, drain."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ferry_runtime.batching.batcher import Batcher, BatchingOptions
from ferry_runtime.model.base import Model
from ferry_runtime.model.torchscript import TorchScriptModel
from ferry_runtime.protocol.errors import (
    InferenceFailedError,
    QueueFullError,
    UnavailableError,
)
from ferry_runtime.stats import BatchTiming
from runtime_helpers import GatedModel, load_torchscript, write_model_dir
from torch import nn


class FailsOnNegative(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise RuntimeError("negative input")
        return x * 2.0 + 1.0


VARIABLE = [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1]}]
VARIABLE_OUT = [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1]}]


def torchscript(directory: Path, module: nn.Module | None = None, **config: Any) -> Model:
    return load_torchscript(write_model_dir(directory, module, **config))


class Recorder:
    """Collects the batch sizes the batcher reports."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, timing: BatchTiming, queue_ns: int) -> None:
        self.batches.append(timing.batch_rows)


def rows(count: int, start: float, width: int = 4) -> np.ndarray:
    return (np.arange(count * width, dtype=np.float32) + start).reshape(count, width)


async def started(model: Model, recorder: Recorder | None = None, **options: object) -> Batcher:
    batcher = Batcher(model, BatchingOptions(**options), on_batch=recorder)  # type: ignore[arg-type]
    batcher.start()
    return batcher


async def hold(gate: GatedModel, batcher: Batcher) -> asyncio.Future[list[np.ndarray]]:
    """Submit a first request and wait until the compute thread is stuck in it."""
    first = batcher.submit([rows(1, -1000)], 1)
    assert await asyncio.to_thread(gate.entered.wait, 10)
    return first


async def test_concurrent_requests_each_get_exactly_their_own_rows(tmp_path: Path) -> None:
    recorder = Recorder()
    batcher = await started(
        torchscript(tmp_path / "m"), recorder, max_batch_size=16, max_queue_delay_s=0.002
    )
    generator = random.Random(7)
    submitted: list[tuple[np.ndarray, asyncio.Future[list[np.ndarray]]]] = []

    async def client(index: int) -> None:
        for step in range(10):
            count = generator.randint(1, 4)
            data = rows(count, start=10_000 * index + 100 * step)
            future = batcher.submit([data], count)
            submitted.append((data, future))
            await future

    await asyncio.gather(*(client(index) for index in range(24)))
    for data, future in submitted:
        (output,) = future.result()
        np.testing.assert_array_equal(output, data * 2 + 1)
    assert sum(recorder.batches) == sum(len(data) for data, _ in submitted)
    assert max(recorder.batches) > 4, "requests were never merged"
    assert max(recorder.batches) <= 16
    await batcher.stop()


async def test_forward_runs_on_one_thread_in_inference_mode(tmp_path: Path) -> None:
    seen: list[tuple[int, bool]] = []

    class Watching(TorchScriptModel):
        def forward(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            seen.append((threading.get_ident(), torch.is_inference_mode_enabled()))
            return super().forward(inputs)

    loaded = torchscript(tmp_path / "m")
    assert isinstance(loaded, TorchScriptModel)
    model = Watching(loaded.module, loaded.inputs, loaded.outputs, torch.device("cpu"))
    batcher = await started(model, max_batch_size=4)
    await asyncio.gather(*(batcher.submit([rows(1, i)], 1) for i in range(20)))
    await batcher.stop()
    assert len({ident for ident, _ in seen}) == 1
    assert threading.get_ident() not in {ident for ident, _ in seen}
    assert all(inference for _, inference in seen)


async def test_a_lone_request_does_not_wait_for_the_queue_delay(tmp_path: Path) -> None:
    batcher = await started(torchscript(tmp_path / "m"), max_queue_delay_s=5.0)
    begun = time.perf_counter()
    (output,) = await batcher.submit([rows(1, 0)], 1)
    assert time.perf_counter() - begun < 2.5, "a lone request sat out the queue delay"
    np.testing.assert_array_equal(output, rows(1, 0) * 2 + 1)
    await batcher.stop()


async def test_requests_queued_behind_a_batch_form_the_next_batch(tmp_path: Path) -> None:
    recorder = Recorder()
    gate = GatedModel(torchscript(tmp_path / "m"))
    batcher = await started(gate, recorder, max_batch_size=8, max_queue_delay_s=0.05)
    first = await hold(gate, batcher)
    waiting = [batcher.submit([rows(1, i)], 1) for i in range(7)]
    assert batcher.queue_depth == 7
    gate.release.set()
    await asyncio.gather(first, *waiting)
    assert recorder.batches == [1, 7]
    await batcher.stop()


async def test_batches_never_exceed_the_max_batch_size(tmp_path: Path) -> None:
    recorder = Recorder()
    gate = GatedModel(torchscript(tmp_path / "m"))
    batcher = await started(gate, recorder, max_batch_size=4, max_queue_delay_s=0.01)
    first = await hold(gate, batcher)
    sizes = [3, 2, 2, 1, 4]
    waiting = [batcher.submit([rows(size, 10 * i)], size) for i, size in enumerate(sizes)]
    gate.release.set()
    results = await asyncio.gather(first, *waiting)
    for size, index, (output,) in zip(sizes, range(5), results[1:], strict=True):
        np.testing.assert_array_equal(output, rows(size, 10 * index) * 2 + 1)
    # whole requests in arrival order while they fit: [3], [2, 2], [1], [4]
    assert recorder.batches == [1, 3, 4, 1, 4]
    await batcher.stop()


async def test_preferred_batch_sizes_shape_the_batches(tmp_path: Path) -> None:
    recorder = Recorder()
    gate = GatedModel(torchscript(tmp_path / "m"))
    batcher = await started(
        gate, recorder, max_batch_size=8, max_queue_delay_s=0.02, preferred_batch_sizes=(4,)
    )
    first = await hold(gate, batcher)
    waiting = [batcher.submit([rows(1, i)], 1) for i in range(7)]
    gate.release.set()
    await asyncio.gather(first, *waiting)
    assert recorder.batches == [1, 4, 3]
    await batcher.stop()


async def test_different_non_batch_shapes_are_never_merged(tmp_path: Path) -> None:
    recorder = Recorder()
    gate = GatedModel(torchscript(tmp_path / "m", inputs=VARIABLE, outputs=VARIABLE_OUT))
    batcher = await started(gate, recorder, max_batch_size=8, max_queue_delay_s=0.01)
    first = await hold(gate, batcher)
    widths = [3, 5, 3, 5, 3]
    data = [rows(1, 100 * i, width) for i, width in enumerate(widths)]
    waiting = [batcher.submit([array], 1) for array in data]
    gate.release.set()
    results = await asyncio.gather(first, *waiting)
    for array, (output,) in zip(data, results[1:], strict=True):
        np.testing.assert_array_equal(output, array * 2 + 1)
    # the head's shape first (all three width-3 rows), then the width-5 rows
    assert recorder.batches == [1, 3, 2]
    await batcher.stop()


async def test_an_error_fails_every_request_of_its_batch_with_the_cause(tmp_path: Path) -> None:
    recorder = Recorder()
    gate = GatedModel(torchscript(tmp_path / "m", FailsOnNegative()))
    batcher = await started(gate, recorder, max_batch_size=8)
    first = batcher.submit([rows(1, 5)], 1)
    assert await asyncio.to_thread(gate.entered.wait, 10)
    poisoned = [batcher.submit([rows(1, 0)], 1), batcher.submit([rows(1, -50)], 1)]
    poisoned.append(batcher.submit([rows(2, 7)], 2))
    gate.release.set()
    (output,) = await first
    np.testing.assert_array_equal(output, rows(1, 5) * 2 + 1)
    for future in poisoned:
        with pytest.raises(InferenceFailedError) as failed:
            await future
        message = str(failed.value)
        assert "batch of 3 request(s), 4 row(s)" in message
        assert "negative input" in message
    # the compute thread carries on
    (after,) = await batcher.submit([rows(1, 1)], 1)
    np.testing.assert_array_equal(after, rows(1, 1) * 2 + 1)
    assert batcher.alive
    await batcher.stop()


async def test_a_full_queue_refuses_at_once(tmp_path: Path) -> None:
    gate = GatedModel(torchscript(tmp_path / "m"))
    batcher = await started(gate, max_batch_size=8, max_queue_size=2)
    first = await hold(gate, batcher)
    queued = [batcher.submit([rows(1, i)], 1) for i in range(2)]
    begun = time.perf_counter()
    with pytest.raises(QueueFullError, match="queue is full"):
        batcher.submit([rows(1, 9)], 1)
    assert time.perf_counter() - begun < 0.5
    gate.release.set()
    await asyncio.gather(first, *queued)
    await batcher.submit([rows(1, 3)], 1)  # room again
    await batcher.stop()


async def test_batching_disabled_runs_one_request_per_forward(tmp_path: Path) -> None:
    recorder = Recorder()
    gate = GatedModel(torchscript(tmp_path / "m"))
    batcher = await started(gate, recorder, enabled=False, max_batch_size=8)
    first = await hold(gate, batcher)
    waiting = [batcher.submit([rows(2, i)], 2) for i in range(3)]
    gate.release.set()
    await asyncio.gather(first, *waiting)
    assert recorder.batches == [1, 2, 2, 2]
    await batcher.stop()


async def test_stop_finishes_queued_requests_then_refuses(tmp_path: Path) -> None:
    gate = GatedModel(torchscript(tmp_path / "m"))
    batcher = await started(gate, max_batch_size=2, max_queue_delay_s=1.0)
    first = await hold(gate, batcher)
    queued = [batcher.submit([rows(1, i)], 1) for i in range(5)]
    stopping = asyncio.ensure_future(batcher.stop(grace_s=20))
    await asyncio.sleep(0.05)
    with pytest.raises(UnavailableError, match="shutting down"):
        batcher.submit([rows(1, 0)], 1)
    gate.release.set()
    await stopping
    results = await asyncio.gather(first, *queued)
    assert len(results) == 6
    assert not batcher.alive


async def test_stop_timeout_fails_what_is_still_queued(tmp_path: Path) -> None:
    gate = GatedModel(torchscript(tmp_path / "m"))
    batcher = await started(gate)
    first = await hold(gate, batcher)
    queued = batcher.submit([rows(1, 0)], 1)
    await batcher.stop(grace_s=0.1)
    with pytest.raises(UnavailableError, match="shut down"):
        await queued
    gate.release.set()
    await first  # the batch that was running still completes
