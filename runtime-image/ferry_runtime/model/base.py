"""The model interface the batcher drives."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np

from ferry_runtime.protocol.types import TensorSpec


class ModelLoadError(Exception):
    """The model directory cannot be served (missing files, bad config, digest mismatch...)."""


class Model(ABC):
    """A loaded model: batched numpy inputs in, batched numpy outputs out.

    ``forward`` is only ever called from the batcher's one compute thread, inside
    ``thread_context()`` (entered once by that thread).
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    device: str = "cpu"

    @abstractmethod
    def forward(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run one batch: one array per input (batch dimension first), in config order.

        Returns one array per output, in config order, with the same number of rows.
        """

    def thread_context(self) -> AbstractContextManager[object]:
        """Context the compute thread runs every forward pass in."""
        return nullcontext()
