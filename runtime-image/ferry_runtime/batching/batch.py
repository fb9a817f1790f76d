"""Pure batching functions: merge requests into a batch, split results, choose batch sizes.

A request is a list of arrays, one per model input, each with the batch dimension first.
Requests are merged only when every input has the same non-batch shape (their *signature*):
rows of different shapes are never padded or concatenated together.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil

import numpy as np

Signature = tuple[tuple[int, ...], ...]


def signature_of(inputs: Sequence[np.ndarray]) -> Signature:
    """The non-batch shape of every input."""
    return tuple(array.shape[1:] for array in inputs)


def merge(parts: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Concatenate the requests' inputs along the batch dimension.

    A single request is passed through unchanged (no copy). Raises ``ValueError`` when the
    requests do not share a signature or an input count.
    """
    if not parts:
        raise ValueError("cannot merge an empty batch")
    first = parts[0]
    if len(parts) == 1:
        return list(first)
    signature = signature_of(first)
    for part in parts[1:]:
        if len(part) != len(first) or signature_of(part) != signature:
            raise ValueError(
                f"cannot merge requests with shapes {signature} and {signature_of(part)}"
            )
    return [np.concatenate([part[index] for part in parts], axis=0) for index in range(len(first))]


def split(outputs: Sequence[np.ndarray], rows: Sequence[int]) -> list[list[np.ndarray]]:
    """Cut each batched output back into per-request slices (views, no copies)."""
    total = sum(rows)
    for output in outputs:
        if output.ndim == 0 or output.shape[0] != total:
            raise ValueError(
                f"output has shape {list(output.shape)}; expected {total} rows, one per input row"
            )
    if len(rows) == 1:
        return [list(outputs)]
    pieces: list[list[np.ndarray]] = []
    start = 0
    for count in rows:
        end = start + count
        pieces.append([output[start:end] for output in outputs])
        start = end
    return pieces


def choose_batch(rows: Sequence[int], max_batch_size: int, preferred: Sequence[int] = ()) -> int:
    """How many of the leading requests (in queue order, same signature) form the next batch.

    Takes whole requests while they fit in ``max_batch_size`` rows. With preferred sizes, the
    batch is cut at the largest preferred size some prefix reaches, if any. Always at least 1
    (a request never holds more than ``max_batch_size`` rows).
    """
    total = 0
    count = 0
    preferred_count = 0
    wanted = set(preferred)
    for request_rows in rows:
        if total + request_rows > max_batch_size and count:
            break
        total += request_rows
        count += 1
        if total in wanted:
            preferred_count = count
    return preferred_count or count


def fill_goal(concurrency: float, max_batch_size: int, preferred: Sequence[int] = ()) -> int:
    """Rows worth waiting for: the recent concurrency, capped at the largest useful size."""
    goal = min(max_batch_size, max(1, ceil(concurrency)))
    if preferred:
        goal = min(goal, max(preferred))
    return goal
