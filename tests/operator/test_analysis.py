"""Analysis (pure): histogram quantiles, step verdicts, signature compatibility."""

from __future__ import annotations

import math

import pytest
from ferry_operator.analysis import (
    Figures,
    Signature,
    histogram_quantile,
    judge,
    signature_change,
)
from ferry_operator.spec import Analysis

INF = math.inf
# 100 requests: 90 under 10 ms, 9 between 10 and 100 ms, 1 between 100 ms and 1 s.
BUCKETS = ((0.01, 90.0), (0.1, 99.0), (1.0, 100.0), (INF, 100.0))


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, BUCKETS, 0.01 * 50 / 90),
        (0.9, BUCKETS, 0.01),
        (0.95, BUCKETS, 0.01 + 0.09 * (95 - 90) / 9),
        (0.99, BUCKETS, 0.1),
        (0.999, BUCKETS, 0.1 + 0.9 * (99.9 - 99) / 1),
        (0.99, ((0.5, 0.0), (1.0, 0.0), (INF, 10.0)), 1.0),  # all above the last finite bound
        (0.99, (), None),
        (0.99, ((0.5, 0.0), (INF, 0.0)), None),
    ],
)
def test_histogram_quantile(
    q: float, buckets: tuple[tuple[float, float], ...], expected: float | None
) -> None:
    found = histogram_quantile(q, buckets)
    if expected is None:
        assert found is None
    else:
        assert found == pytest.approx(expected)


def test_figures_add_bucket_by_bucket() -> None:
    a = Figures(requests=10, errors=1, buckets=((0.1, 8.0), (INF, 10.0)))
    b = Figures(requests=5, errors=0, buckets=((0.1, 5.0), (INF, 5.0)))
    total = a + b
    assert total == Figures(requests=15, errors=1, buckets=((0.1, 13.0), (INF, 15.0)))
    assert total.error_rate_percent == pytest.approx(100 / 15)
    assert Figures().error_rate_percent == 0.0
    assert Figures().p99_ms is None


ANALYSIS = Analysis(max_error_rate_percent=1.0, max_p99_latency_ms=200, min_requests=20)
GOOD = Figures(requests=100, errors=0, buckets=BUCKETS)  # p99 = 100 ms
ERRORS = Figures(requests=100, errors=100, buckets=BUCKETS)
SLOW = Figures(requests=100, errors=0, buckets=((0.1, 50.0), (1.0, 100.0), (INF, 100.0)))


@pytest.mark.parametrize(
    ("figures", "baseline", "elapsed", "verdict", "words"),
    [
        (None, 0, 100, "wait", "no metrics"),
        (ERRORS, 0, 0, "fail", "error rate too high: 100 of 100 requests failed (100.00%"),
        (SLOW, 0, 0, "fail", "p99 latency too high"),
        (GOOD, 0, 30, "wait", "30s of the step left"),
        (GOOD, 0, 60, "pass", "0 of 100 requests failed (0.00%, limit 1%); p99 latency 100.0 ms"),
        (GOOD, 90, 60, "wait", "waiting for requests: 10 of 20 in this step"),
        (GOOD, 500, 60, "pass", "0 of 100"),  # counters restarted: all 100 are this step's
        # Too few requests to judge errors: 5 of 5 failing is not yet a verdict.
        (Figures(requests=5, errors=5), 0, 10, "wait", "5 of 5 requests failed"),
        (Figures(requests=20, errors=1), 0, 0, "fail", "1 of 20 requests failed (5.00%"),
    ],
)
def test_judge(
    figures: Figures | None, baseline: int, elapsed: float, verdict: str, words: str
) -> None:
    judgement = judge(figures, ANALYSIS, baseline_requests=baseline, elapsed_s=elapsed, pause_s=60)
    assert judgement.verdict == verdict
    assert words in judgement.message


def test_judge_reports_the_figures() -> None:
    judgement = judge(GOOD, ANALYSIS, baseline_requests=40, elapsed_s=0, pause_s=60)
    assert judgement.figures == {
        "requests": 100,
        "errors": 0,
        "errorRatePercent": 0.0,
        "stepRequests": 60,
        "p99LatencyMs": 100.0,
    }


def test_latency_is_not_judged_without_a_limit() -> None:
    analysis = Analysis(min_requests=20)
    assert judge(SLOW, analysis, baseline_requests=0, elapsed_s=60, pause_s=60).verdict == "pass"


def test_zero_min_requests_still_needs_one_request_to_fail() -> None:
    analysis = Analysis(min_requests=0)
    empty = Figures()
    assert judge(empty, analysis, baseline_requests=0, elapsed_s=0, pause_s=0).verdict == "pass"
    one_error = Figures(requests=1, errors=1)
    assert judge(one_error, analysis, baseline_requests=0, elapsed_s=0, pause_s=0).verdict == "fail"


def _signature(inputs: list[dict[str, object]], outputs: list[dict[str, object]]) -> Signature:
    return Signature.from_metadata({"name": "m", "inputs": inputs, "outputs": outputs})


X = {"name": "x", "datatype": "FP32", "shape": [-1, 4]}
Y = {"name": "y", "datatype": "FP32", "shape": [-1, 3]}


@pytest.mark.parametrize(
    ("inputs", "outputs", "change"),
    [
        ([X], [Y], None),
        ([{**X, "shape": [-1, 5]}], [Y], "input x: FP32[-1, 4] -> FP32[-1, 5]"),
        ([{**X, "datatype": "FP16"}], [Y], "input x: FP32[-1, 4] -> FP16[-1, 4]"),
        ([X], [], "output y removed"),
        ([X, {"name": "z", "datatype": "INT64", "shape": [1]}], [Y], "input z added"),
        ([{**X, "name": "x2"}], [Y], "input x removed; input x2 added"),
    ],
)
def test_signature_change(
    inputs: list[dict[str, object]], outputs: list[dict[str, object]], change: str | None
) -> None:
    assert signature_change(_signature([X], [Y]), _signature(inputs, outputs)) == change


def test_signature_ignores_order_and_extra_fields() -> None:
    a = _signature([X, Y], [])
    b = Signature.from_metadata(
        {"inputs": [{**Y, "parameters": {}}, X], "outputs": [], "platform": "pytorch_torchscript"}
    )
    assert signature_change(a, b) is None
