"""TorchScript at load time: the frozen, inference-optimised module is served only when it is
numerically equal to the plain one and clearly faster (the decision is pure and tested alone;
the timing itself is the benchmark's job, bench/formats)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ferry_runtime.model.torchscript import (
    FREEZE_MIN_SPEEDUP,
    FreezeVerdict,
    choose_frozen,
    freeze_verdict,
)
from ferry_runtime.protocol.types import TensorSpec
from runtime_helpers import torchscript_allowed
from torch import nn


@pytest.mark.parametrize(
    ("measured", "adopt", "reason"),
    [
        ((1.0, 0.5, 1e-7, True), True, "2.00x faster"),
        ((1.0, 1.0 / FREEZE_MIN_SPEEDUP * 1.01, 0.0, True), False, "not faster"),
        ((1.0, 0.1, 0.5, False), False, "frozen outputs differ"),
        ((1.0, None, None, False), False, "freezing failed"),
    ],
)
def test_freeze_verdict(
    measured: tuple[float, float | None, float | None, bool], adopt: bool, reason: str
) -> None:
    verdict = freeze_verdict(*measured)
    assert verdict.adopt is adopt
    assert reason in verdict.reason


class ConvBn(nn.Module):
    """Conv + batch norm: freezing folds the batch norm (not bitwise equal, numerically so)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x.reshape(-1, 3, 8, 8))).flatten(1)


def scripted(module: nn.Module) -> torch.jit.ScriptModule:
    with torchscript_allowed():
        result: torch.jit.ScriptModule = torch.jit.script(module.eval())
    return result


def test_whichever_module_is_chosen_answers_like_the_plain_one() -> None:
    plain = scripted(ConvBn())
    spec = (TensorSpec("x", "FP32", (192,)),)
    chosen, verdict = choose_frozen(plain, spec, torch.device("cpu"))
    assert isinstance(verdict, FreezeVerdict)
    assert (chosen is not plain) is verdict.adopt
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((4, 192), dtype=np.float32))
    with torch.inference_mode():
        torch.testing.assert_close(chosen(x), plain(x), rtol=1e-4, atol=1e-5)


def test_a_module_whose_frozen_copy_differs_keeps_the_plain_one() -> None:
    class Noisy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.rand_like(x)

    plain = scripted(Noisy())
    chosen, verdict = choose_frozen(plain, (TensorSpec("x", "FP32", (4,)),), torch.device("cpu"))
    assert chosen is plain
    assert not verdict.adopt
    assert "differ" in verdict.reason
