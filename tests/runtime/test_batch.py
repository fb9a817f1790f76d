"""Pure batching functions: merge, split, batch selection and the fill goal."""

from __future__ import annotations

import numpy as np
import pytest
from ferry_runtime.batching.batch import choose_batch, fill_goal, merge, signature_of, split


def request(rows: int, width: int = 3, start: int = 0) -> list[np.ndarray]:
    data = np.arange(start, start + rows * width, dtype=np.float32).reshape(rows, width)
    return [data, data[:, :1].astype(np.int64)]


def test_merge_concatenates_each_input_in_request_order() -> None:
    parts = [request(1, start=0), request(2, start=100), request(3, start=200)]
    merged = merge(parts)
    assert [array.shape for array in merged] == [(6, 3), (6, 1)]
    np.testing.assert_array_equal(merged[0], np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(merged[1], np.concatenate([p[1] for p in parts]))


def test_merge_of_one_request_is_the_request_itself() -> None:
    part = request(2)
    merged = merge([part])
    assert merged[0] is part[0]
    assert merged[1] is part[1]


def test_merge_refuses_different_non_batch_shapes() -> None:
    with pytest.raises(ValueError, match="cannot merge"):
        merge([request(1, width=3), request(1, width=4)])


def test_merge_refuses_different_input_counts_and_empty_batches() -> None:
    with pytest.raises(ValueError, match="cannot merge"):
        merge([request(1), request(1)[:1]])
    with pytest.raises(ValueError, match="empty"):
        merge([])


def test_split_inverts_merge_with_views() -> None:
    rows = [1, 3, 2]
    parts = [request(count, start=10 * index) for index, count in enumerate(rows)]
    merged = merge(parts)
    outputs = [merged[0] * 2, merged[1]]
    pieces = split(outputs, rows)
    assert len(pieces) == 3
    for part, piece in zip(parts, pieces, strict=True):
        np.testing.assert_array_equal(piece[0], part[0] * 2)
        np.testing.assert_array_equal(piece[1], part[1])
        assert piece[0].base is not None  # a view into the batch output, no copy


def test_split_of_one_request_returns_the_outputs() -> None:
    outputs = [np.zeros((4, 2))]
    assert split(outputs, [4]) == [outputs]


@pytest.mark.parametrize("bad", [np.zeros((5, 2)), np.zeros(())])
def test_split_refuses_outputs_with_the_wrong_row_count(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="rows"):
        split([bad], [1, 3])


def test_signature_ignores_the_batch_dimension() -> None:
    assert signature_of(request(1)) == signature_of(request(5))
    assert signature_of(request(1, width=3)) != signature_of(request(1, width=4))


@pytest.mark.parametrize(
    ("rows", "max_batch", "preferred", "expected"),
    [
        ([1, 1, 1], 8, (), 3),  # everything fits
        ([1] * 10, 8, (), 8),  # capped at the max batch size
        ([3, 3, 3], 8, (), 2),  # whole requests only: 6 rows, the third would overflow
        ([8, 1], 8, (), 1),  # a full request alone
        ([1] * 10, 8, (4,), 4),  # cut at the preferred size
        ([1] * 10, 8, (2, 4, 6), 6),  # the largest preferred size reached
        ([3, 3, 3], 8, (4,), 2),  # no prefix reaches 4: take what fits
        ([2, 2, 2], 8, (4,), 2),  # 2, 4, 6: cut at 4
        ([1], 8, (4,), 1),
    ],
)
def test_choose_batch(
    rows: list[int], max_batch: int, preferred: tuple[int, ...], expected: int
) -> None:
    assert choose_batch(rows, max_batch, preferred) == expected


@pytest.mark.parametrize(
    ("concurrency", "max_batch", "preferred", "expected"),
    [
        (0, 32, (), 1),  # never below one row
        (1, 32, (), 1),  # a lone client: run at once
        (7.2, 32, (), 8),
        (100, 32, (), 32),  # capped at the max batch size
        (100, 32, (8, 16), 16),  # and at the largest preferred size
        (4, 32, (8, 16), 4),
    ],
)
def test_fill_goal(
    concurrency: float, max_batch: int, preferred: tuple[int, ...], expected: int
) -> None:
    assert fill_goal(concurrency, max_batch, preferred) == expected
