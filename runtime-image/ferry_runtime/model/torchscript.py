"""TorchScript models: ``torch.jit.load`` archives (``model.pt``) driven with numpy in and out."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ferry_runtime.model.base import ModelLoadError
from ferry_runtime.model.tensors import TORCH_DTYPES, ModelOutputError, TorchModel
from ferry_runtime.protocol.types import TensorSpec

__all__ = ["TORCH_DTYPES", "ModelOutputError", "TorchScriptModel", "load_torchscript"]

log = logging.getLogger(__name__)

FREEZE_BATCH_SIZES = (1, 8, 32)
"""Batch sizes the plain and the frozen module are timed at before choosing one."""
FREEZE_ROUNDS = 3
FREEZE_CALLS = 3
FREEZE_MIN_SPEEDUP = 1.1
"""The frozen module must be at least this much faster (timing on a shared node is noisy)."""
FREEZE_RTOL, FREEZE_ATOL = 1e-4, 1e-5
"""Numerically equal: the tolerance ``ferry-runtime package`` also checks packages with."""


@contextmanager
def _torchscript_allowed() -> Iterator[None]:
    with warnings.catch_warnings():
        # torch ≥ 2.10 deprecates torch.jit.*; TorchScript stays a format Ferry serves for
        # existing models (new ones: torch.export, docs/contracts.md).
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        yield


@dataclass(frozen=True, slots=True)
class FreezeVerdict:
    """Whether the frozen module replaces the plain one, and why."""

    adopt: bool
    reason: str


def freeze_verdict(
    plain_s: float, frozen_s: float | None, max_diff: float | None, equal: bool
) -> FreezeVerdict:
    """Pure: adopt ``torch.jit.freeze`` + ``optimize_for_inference`` only when it is
    numerically equal to the plain module and clearly faster."""
    if frozen_s is None or max_diff is None:
        return FreezeVerdict(False, "freezing failed")
    if not equal:
        return FreezeVerdict(False, f"frozen outputs differ (max abs diff {max_diff:.3g})")
    speedup = plain_s / frozen_s if frozen_s > 0 else float("inf")
    if speedup < FREEZE_MIN_SPEEDUP:
        return FreezeVerdict(False, f"frozen is not faster ({speedup:.2f}x)")
    return FreezeVerdict(True, f"frozen is {speedup:.2f}x faster, max abs diff {max_diff:.3g}")


def _best_time(module: Callable[..., object], batches: list[list[torch.Tensor]]) -> float:
    """Sum over batch sizes of the best per-call time (the least disturbed round)."""
    total = 0.0
    for batch in batches:
        best = float("inf")
        for _ in range(FREEZE_ROUNDS):
            started = time.perf_counter()
            for _ in range(FREEZE_CALLS):
                module(*batch)
            best = min(best, (time.perf_counter() - started) / FREEZE_CALLS)
        total += best
    return total


def _random_batch(
    inputs: tuple[TensorSpec, ...], rows: int, device: torch.device
) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(rows)
    tensors = []
    for spec in inputs:
        shape = (rows, *(1 if dim == -1 else dim for dim in spec.shape))
        dtype = TORCH_DTYPES[spec.datatype]
        if dtype.is_floating_point:
            tensor = torch.randn(shape, generator=generator).to(dtype)
        else:
            tensor = torch.zeros(shape, dtype=dtype)
        tensors.append(tensor.to(device))
    return tensors


def _as_tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [item for item in value if isinstance(item, torch.Tensor)]
    return []


def choose_frozen(
    module: torch.jit.ScriptModule, inputs: tuple[TensorSpec, ...], device: torch.device
) -> tuple[torch.jit.ScriptModule, FreezeVerdict]:
    """Time the plain module against its frozen, inference-optimised copy on random batches
    and keep the frozen one only if it is numerically equal and faster (docs/performance.md)."""
    batches = [_random_batch(inputs, rows, device) for rows in FREEZE_BATCH_SIZES]
    frozen: torch.jit.ScriptModule | None = None
    frozen_s = max_diff = None
    equal = False
    with torch.inference_mode():
        plain_s = _best_time(module, batches)
        try:
            with _torchscript_allowed():
                frozen = torch.jit.optimize_for_inference(torch.jit.freeze(module))
            max_diff, equal = 0.0, True
            for batch in batches:
                want, got = _as_tensors(module(*batch)), _as_tensors(frozen(*batch))
                if len(want) != len(got) or not want:
                    equal = False
                    break
                for a, b in zip(want, got, strict=True):
                    if a.shape != b.shape or a.dtype != b.dtype:
                        equal = False
                        continue
                    if a.is_floating_point():
                        max_diff = max(max_diff, float((a - b).abs().max()) if a.numel() else 0.0)
                        equal = equal and torch.allclose(a, b, rtol=FREEZE_RTOL, atol=FREEZE_ATOL)
                    else:
                        equal = equal and torch.equal(a, b)
            frozen_s = _best_time(frozen, batches) if equal else None
        except Exception as error:  # freezing is an optimisation: any failure keeps the plain one
            log.info("torch.jit.freeze/optimize_for_inference failed: %s", first_line(error))
            frozen = None
    verdict = freeze_verdict(plain_s, frozen_s if equal else plain_s, max_diff, equal)
    if frozen is None:
        verdict = FreezeVerdict(False, "freezing failed")
    return (frozen if verdict.adopt and frozen is not None else module), verdict


class TorchScriptModel(TorchModel):
    """A ``torch.jit.ScriptModule`` whose ``forward`` takes the inputs positionally."""


def load_torchscript(
    path: Path,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    device: torch.device,
    *,
    freeze: bool = True,
) -> TorchScriptModel:
    """``torch.jit.load`` the archive at ``path`` onto ``device`` (no pickles: TorchScript's
    own format, checked by :func:`ferry_runtime.model.loader.detect_format` first).

    With ``freeze``, the frozen, inference-optimised module is served instead when it is
    numerically equal and faster on this machine (:func:`choose_frozen`)."""
    try:
        with _torchscript_allowed():
            # torch.jit.load is not annotated in torch's stubs.
            module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
    except Exception as error:  # torch raises RuntimeError and friends for bad archives
        raise ModelLoadError(f"torch.jit.load({path}) failed: {first_line(error)}") from None
    module.eval()
    if freeze:
        try:
            module, verdict = choose_frozen(module, inputs, device)
        except Exception as error:  # the plain module failed: warm-up reports it precisely
            verdict = FreezeVerdict(False, f"the module failed on random inputs ({error})")
        log.info(
            "TorchScript: %s %s",
            "serving the frozen module:" if verdict.adopt else "keeping the plain module:",
            verdict.reason,
        )
    return TorchScriptModel(module, inputs, outputs, device)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (torch's are often pages long)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
