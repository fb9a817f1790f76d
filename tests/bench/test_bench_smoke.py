"""The benchmark's pure parts: statistics, ratios, target verdicts, payload codecs and table
rendering. No server, no peer venv, no timed assertion."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.peers.venvs import PEER_VENVS, TORCH_PIN, VenvSpec, is_ready
from bench.runtime import http1, payloads, perfanalyzer, report, stats
from bench.runtime.driver import merge_parts, split_concurrency
from bench.runtime.loadgen import Job, require_loopback, run_phase
from bench.runtime.models import MODELS, model_config, reference_output, write_model_dir

# --------------------------------------------------------------------------- stats


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 99.9, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    rng = random.Random(q)
    values = [rng.expovariate(1.0) for _ in range(1001)]
    assert stats.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_interpolates_between_ranks() -> None:
    assert stats.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert stats.percentile([10.0], 99) == 10.0
    assert stats.median([3.0, 1.0, 2.0]) == 2.0


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 100.5)])
def test_percentile_rejects_bad_input(values: list[float], q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        stats.percentile(values, q)


def test_summarize_latencies_converts_ns_to_ms() -> None:
    summary = stats.summarize_latencies_ns([1_000_000, 2_000_000, 3_000_000, 4_000_000])
    assert summary.count == 4
    assert summary.p50_ms == 2.5
    assert summary.mean_ms == 2.5
    assert summary.max_ms == 4.0
    assert summary.p99_ms == pytest.approx(3.97)
    with pytest.raises(ValueError, match="no latencies"):
        stats.summarize_latencies_ns([])


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (6.0, 2.0, 3.0),
        (None, 2.0, None),
        (1.0, None, None),
        (1.0, 0.0, None),
        (1.0, -1.0, None),
        (1.0, float("inf"), None),
        (float("nan"), 1.0, None),
    ],
)
def test_ratio(numerator: float | None, denominator: float | None, expected: float | None) -> None:
    assert stats.ratio(numerator, denominator) == expected


def test_throughput() -> None:
    assert stats.throughput(500, 2.0) == 250.0
    assert stats.throughput(0, 2.0) == 0.0
    assert stats.throughput(10, 0.0) == 0.0


# --------------------------------------------------------------------------- driver / loadgen


@pytest.mark.parametrize(
    ("concurrency", "processes", "expected"),
    [(1, 4, [1]), (8, 1, [8]), (32, 3, [11, 11, 10]), (64, 2, [32, 32]), (5, 0, [5])],
)
def test_split_concurrency(concurrency: int, processes: int, expected: list[int]) -> None:
    shares = split_concurrency(concurrency, processes)
    assert shares == expected
    assert sum(shares) == concurrency


def test_merge_parts_pools_latencies_over_the_union_window() -> None:
    parts = [
        {
            "latencies_ns": [1_000_000] * 100,
            "errors": 0,
            "first_error": None,
            "validation_error": None,
            "started": 10.0,
            "finished": 12.0,
            "cpu_s": 0.5,
        },
        {
            "latencies_ns": [3_000_000] * 100,
            "errors": 2,
            "first_error": "HTTP 503",
            "validation_error": None,
            "started": 10.5,
            "finished": 14.0,
            "cpu_s": 1.5,
        },
    ]
    merged = merge_parts(parts)
    assert merged["completed"] == 200
    assert merged["window_s"] == 4.0
    assert merged["throughput_rps"] == 50.0
    assert merged["errors"] == 2
    assert merged["first_error"] == "HTTP 503"
    assert merged["p50_ms"] == 2.0
    assert merged["loadgen_cpu"] == 0.5


def test_run_phase_stops_at_the_request_count_and_counts_errors() -> None:
    calls = {"n": 0}

    async def send() -> bytes:
        calls["n"] += 1
        number = calls["n"]
        await asyncio.sleep(0)
        if number % 10 == 0:
            raise RuntimeError("boom")
        return b"ok"

    result = asyncio.run(run_phase([send] * 4, max_requests=50, max_seconds=60.0))
    assert calls["n"] == 50
    assert result.errors == 5
    assert len(result.latencies_ns) == 45
    assert result.first_error == "RuntimeError: boom"
    assert result.finished >= result.started


def test_run_phase_stops_at_the_duration_bound() -> None:
    async def send() -> bytes:
        await asyncio.sleep(0.001)
        return b"ok"

    result = asyncio.run(run_phase([send] * 2, max_requests=10**9, max_seconds=0.05))
    assert 0 < len(result.latencies_ns) < 10**9
    assert result.errors == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "localhost"])
def test_loopback_targets_are_accepted(host: str) -> None:
    require_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.2", "8.8.8.8"])
def test_other_targets_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        require_loopback(host)


def test_job_file_round_trip() -> None:
    job = Job(
        "grpc", "127.0.0.1", 8081, "/x/ModelInfer", b"\x00\x01\xff", [1.0], 8, 10, 0.1, 100, 1
    )
    assert Job.from_json(job.to_json()) == job


# --------------------------------------------------------------------------- payloads


def test_grpc_request_round_trips_through_tritonclient_stubs() -> None:
    from tritonclient.grpc import service_pb2

    rows = [[0.5, -1.0, 2.0]]
    for raw in (True, False):
        body = payloads.grpc_infer_request("m", "INPUT__0", rows, raw=raw)
        request = service_pb2.ModelInferRequest.FromString(body)
        assert request.model_name == "m"
        assert list(request.inputs[0].shape) == [1, 3]
        assert request.inputs[0].datatype == "FP32"
        if raw:
            assert np.frombuffer(request.raw_input_contents[0], "<f4").tolist() == rows[0]
        else:
            assert list(request.inputs[0].contents.fp32_contents) == rows[0]


def test_grpc_response_decoding_raw_and_typed() -> None:
    from tritonclient.grpc import service_pb2

    raw = service_pb2.ModelInferResponse()
    out = raw.outputs.add()
    out.name, out.datatype = "OUTPUT__0", "FP32"
    raw.raw_output_contents.append(np.array([1.5, -2.0], "<f4").tobytes())
    assert payloads.decode_grpc_response(raw.SerializeToString()) == [1.5, -2.0]
    typed = service_pb2.ModelInferResponse()
    out = typed.outputs.add()
    out.name, out.datatype = "OUTPUT__0", "FP32"
    out.contents.fp32_contents.extend([0.25, 4.0])
    assert payloads.decode_grpc_response(typed.SerializeToString()) == [0.25, 4.0]
    with pytest.raises(ValueError, match="no outputs"):
        payloads.decode_grpc_response(service_pb2.ModelInferResponse().SerializeToString())


def test_http_payloads() -> None:
    body = payloads.http_infer_request("INPUT__0", [[1.0, 2.0]])
    assert body == (
        b'{"inputs":[{"name":"INPUT__0","shape":[1,2],"datatype":"FP32","data":[1.0,2.0]}]}'
    )
    nested = b'{"outputs":[{"name":"o","datatype":"FP32","shape":[1,2],"data":[[1,2.5]]}]}'
    assert payloads.decode_http_response(nested) == [1.0, 2.5]
    with pytest.raises(ValueError, match="no outputs"):
        payloads.decode_http_response(b'{"error":"nope"}')


def test_outputs_match_tolerates_fp32_noise_only() -> None:
    assert payloads.outputs_match([1.0, 2.0], [1.0 + 1e-6, 2.0])
    assert not payloads.outputs_match([1.0, 2.0], [1.0, 2.1])
    assert not payloads.outputs_match([1.0], [1.0, 2.0])


# --------------------------------------------------------------------------- models


def test_model_specs_and_config() -> None:
    assert MODELS["medium"].flops_per_row == 2 * (512 * 2048 + 2048 * 2048 + 2048 * 10)
    assert MODELS["noop"].flops_per_row == 0
    assert model_config(MODELS["tiny"]) == {
        "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [64]}],
        "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [10]}],
    }


def test_written_models_load_and_compute(tmp_path: Path) -> None:
    noop = write_model_dir(MODELS["noop"], tmp_path / "noop")
    rows = [[float(i) for i in range(16)]]
    assert reference_output(noop, rows) == rows
    tiny = write_model_dir(MODELS["tiny"], tmp_path / "tiny")
    assert len(reference_output(tiny, [[0.0] * 64, [1.0] * 64])[1]) == 10
    assert (tiny / "model.json").is_file()


# --------------------------------------------------------------------------- venvs


def test_venv_spec_digest_tracks_the_spec(tmp_path: Path) -> None:
    spec = PEER_VENVS["mlserver"]
    changed = VenvSpec(spec.name, (*spec.packages, "extra==1"), spec.probe)
    assert spec.digest() != changed.digest()
    assert not is_ready(tmp_path, spec)
    stamp_dir = tmp_path / ".bench-venvs" / spec.name
    stamp_dir.mkdir(parents=True)
    (stamp_dir / ".ferry-bench-installed").write_text(spec.digest() + "\n")
    assert is_ready(tmp_path, spec)
    assert not is_ready(tmp_path, changed)
    assert TORCH_PIN == "torch==2.13.0"


# --------------------------------------------------------------------------- perf_analyzer


def test_parse_perf_analyzer_csv() -> None:
    text = (
        "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
        "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
        "p50 latency,p90 latency,p95 latency,p99 latency\n"
        "32,2254.18,2,5886,2368,61,5805,35,0,13494,15657,16084,20908\n"
    )
    (row,) = perfanalyzer.parse_csv(text)
    assert row["concurrency"] == 32
    assert row["throughput_rps"] == 2254.18
    assert row["p50_ms"] == pytest.approx(13.494)
    assert row["p99_ms"] == pytest.approx(20.908)
    assert row["server_queue_ms"] == pytest.approx(2.368)


# --------------------------------------------------------------------------- report


def _cell(
    series: str, protocol: str, concurrency: int, *, rps: float, p50: float, p99: float
) -> dict[str, Any]:
    return {
        "series": series,
        "server": series.split(maxsplit=1)[0],
        "batching": series.split()[1],
        "model": "medium",
        "protocol": protocol,
        "concurrency": concurrency,
        "throughput_rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": 0,
        "validation_error": None,
    }


RAW = {"medium": {"best_rows_per_s": 1000.0, "forward_b1_ms": 0.7, "rows_per_s_by_batch": {}}}
BATCHINGS = ["off", "b32/2ms", "b32/5ms"]


def _cells(ferry_c32: float, ferry_p99: float, ferry_c1_p50: float) -> list[dict[str, Any]]:
    cells = []
    for batching in ("b32/2ms", "b32/5ms"):
        for protocol in ("grpc", "http"):
            cells += [
                _cell(f"ferry {batching}", protocol, 1, rps=500, p50=ferry_c1_p50, p99=2.0),
                _cell(f"ferry {batching}", protocol, 32, rps=ferry_c32, p50=10.0, p99=ferry_p99),
                _cell(f"ferry {batching}", protocol, 64, rps=850, p50=20.0, p99=30.0),
                _cell(f"mlserver {batching}", protocol, 32, rps=200, p50=50.0, p99=80.0),
                _cell(f"torchserve {batching}", protocol, 32, rps=250, p50=40.0, p99=70.0),
                _cell(f"triton {batching}", protocol, 32, rps=400, p50=15.0, p99=25.0),
                _cell(f"triton {batching}", protocol, 64, rps=420, p50=30.0, p99=45.0),
            ]
    for protocol in ("grpc", "http"):
        cells.append(_cell("kserve off", protocol, 32, rps=90, p50=350.0, p99=500.0))
        cells.append(_cell("ferry off", protocol, 32, rps=100, p50=300.0, p99=400.0))
        cells.append(_cell("ferry off", protocol, 1, rps=400, p50=0.9, p99=2.0))
    return cells


def _targets(cells: list[dict[str, Any]]) -> dict[str, report.Target]:
    derived = report.comparisons(cells, RAW, BATCHINGS)
    return {t.name: t for t in report.evaluate_targets(cells, RAW, derived, BATCHINGS)}


def test_comparisons_derive_efficiency_gain_and_peer_ratios() -> None:
    derived = report.comparisons(_cells(900, 20.0, 0.9), RAW, BATCHINGS)
    by = {(c.kind, c.protocol, c.concurrency, c.series, c.against): c for c in derived}
    eff = by[("efficiency", "grpc", 64, "ferry b32/5ms", "raw torch")]
    assert eff.value == pytest.approx(0.85)
    gain = by[("batching_gain", "grpc", 32, "ferry b32/5ms", "ferry off")]
    assert gain.value == pytest.approx(9.0)
    peer = by[("vs_peer", "http", 32, "ferry b32/2ms", "mlserver b32/2ms")]
    assert peer.value == pytest.approx(4.5)
    assert peer.p99_ratio == pytest.approx(0.25)
    triton = by[("vs_peer", "grpc", 64, "ferry b32/5ms", "triton b32/5ms")]
    assert triton.value == pytest.approx(850 / 420)
    assert triton.p99_ratio == pytest.approx(30.0 / 45.0)
    # KServe has no batcher: every Ferry configuration is compared with its "off"
    kserve = by[("vs_peer", "http", 32, "ferry b32/2ms", "kserve off")]
    assert kserve.value == pytest.approx(10.0)


def test_targets_met() -> None:
    targets = _targets(_cells(ferry_c32=900, ferry_p99=20.0, ferry_c1_p50=0.9))
    assert {name: t.status for name, t in targets.items()} == {
        "Ferry vs peers": "met",
        "Ferry vs Triton": "met",
        "Serving efficiency": "met",
        "Batching gain": "met",
        "Low-load latency": "met",
    }
    assert "3.60x" in targets["Ferry vs peers"].figure


def test_targets_missed() -> None:
    # 3.2x MLServer but p99 worse than TorchServe's; c=1 p50 above forward + 0.3 ms
    targets = _targets(_cells(ferry_c32=640, ferry_p99=75.0, ferry_c1_p50=1.5))
    assert targets["Ferry vs peers"].status == "missed"
    assert targets["Batching gain"].status == "met"
    assert targets["Low-load latency"].status == "missed"
    assert "1.500" in targets["Low-load latency"].figure
    # 1.6x Triton at concurrency 32 (< 2x) with a p99 three times Triton's
    assert targets["Ferry vs Triton"].status == "missed"
    assert "grpc c=32: 1.60x, p99 ratio 3.00" in targets["Ferry vs Triton"].figure


def test_triton_target_needs_both_protocols_and_concurrencies() -> None:
    cells = [
        c
        for c in _cells(ferry_c32=900, ferry_p99=20.0, ferry_c1_p50=0.9)
        if not (c["series"] == "triton b32/5ms" and c["protocol"] == "http")
    ]
    targets = _targets(cells)
    assert targets["Ferry vs Triton"].status == "not measured"
    assert "http c=64: not measured" in targets["Ferry vs Triton"].figure


def test_failed_or_missing_cells_are_not_measured() -> None:
    cells = _cells(ferry_c32=900, ferry_p99=20.0, ferry_c1_p50=0.9)
    for cell in cells:
        if cell["series"] == "torchserve b32/5ms":
            cell["errors"] = 3
    cells = [c for c in cells if c["series"] != "ferry off"]
    targets = _targets(cells)
    assert targets["Ferry vs peers"].status == "not measured"
    assert targets["Batching gain"].status == "not measured"
    assert targets["Serving efficiency"].status == "met"


def test_markdown_table_escapes_and_blanks() -> None:
    table = report.markdown_table(["a", "b|c"], [[1, None], ["x|y", "line\nbreak"]])
    assert table.splitlines() == [
        "| a | b\\|c |",
        "|---|---|",
        "| 1 |  |",
        "| x\\|y | line break |",
    ]


def test_render_markdown_holds_every_section() -> None:
    cells = _cells(900, 20.0, 0.9)
    derived = report.comparisons(cells, RAW, BATCHINGS)
    targets = report.evaluate_targets(cells, RAW, derived, BATCHINGS)
    document = {
        "meta": {
            "mode": "quick",
            "started": "2026-01-01 00:00 UTC",
            "duration_s": 90.0,
            "server_cpus": [1],
            "loadgen_cpus": [0],
            "threads": 1,
            "loadgen_processes": 1,
            "cpu_model": "test CPU",
            "torch": "2.13.0",
            "loadavg_start": "0.1 0.1 0.1",
            "loadavg_end": "0.2 0.2 0.2",
        },
        "raw": {"medium": RAW["medium"] | {"threads": 1, "best_batch": 64}},
        "cells": cells,
        "comparisons": report.to_jsonable(derived),
        "targets": report.to_jsonable(targets),
        "servers": [{"series": "ferry b32/5ms", "startup_s": 2.0, "knobs": {"env": {"X": "1"}}}],
        "perf_analyzer": [
            {
                "series": "ferry b32/5ms",
                "model": "medium",
                "protocol": "grpc",
                "concurrency": 32,
                "throughput_rps": 2000.0,
                "p50_ms": 14.0,
                "p99_ms": 20.0,
            }
        ],
        "skipped": ["torchserve b32/2ms did not start"],
    }
    text = report.render_markdown(document)
    for heading in (
        "### Targets (medium MLP)",
        "### Raw torch limit",
        "### medium: measurements",
        "### medium: ratios",
        "### Triton perf_analyzer against Ferry",
        "### Knobs",
        "### Skipped",
    ):
        assert heading in text
    assert "| Serving efficiency |" in text
    assert "MET" in text
    assert "- **ferry b32/5ms** (startup 2.0 s)" in text


# --------------------------------------------------------------------------- http1 client


def test_build_request_and_parse_head() -> None:
    request = http1.build_request(
        "127.0.0.1", 8080, "/v2/models/m/infer", b"{}", "application/json"
    )
    assert request.startswith(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    assert request.endswith(b"Content-Length: 2\r\nAccept-Encoding: identity\r\n\r\n{}")
    head = http1.parse_head(
        b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nConnection: keep-alive\r\n\r\n"
    )
    assert head == http1.ResponseHead(200, 12, chunked=False, close=False)
    head = http1.parse_head(
        b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    assert head == http1.ResponseHead(503, None, chunked=True, close=True)
    assert http1.parse_head(b"HTTP/1.0 200 OK\r\n\r\n").close
    with pytest.raises(ValueError, match="malformed"):
        http1.parse_head(b"garbage\r\n\r\n")


def test_connection_reads_every_body_framing_and_reconnects() -> None:
    replies = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nsec\r\n3;x=1\r\nond\r\n0\r\n\r\n",
        b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfail",
        b"HTTP/1.1 200 OK\r\n\r\nuntil-close",
    ]
    connections = []

    async def scenario() -> list[tuple[int, bytes]]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(writer)
            while replies:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    http1.parse_head(
                        b"HTTP/1.1 200 OK" + head[head.index(b"\r\n") :]
                    ).content_length
                    or 0
                )
                await reader.readexactly(length)
                reply = replies.pop(0)
                writer.write(reply)
                await writer.drain()
                if b"Connection: close" in reply or (
                    b"Content-Length" not in reply and b"chunked" not in reply
                ):
                    break
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        request = http1.build_request("127.0.0.1", port, "/p", b"body", "text/plain")
        connection = http1.Connection("127.0.0.1", port, request)
        try:
            return [await connection.post() for _ in range(4)]
        finally:
            await connection.close()
            server.close()
            await server.wait_closed()

    results = asyncio.run(scenario())
    assert results == [(200, b"first"), (200, b"second"), (500, b"fail"), (200, b"until-close")]
    assert len(connections) == 2  # reconnected once, after "Connection: close"


# --------------------------------------------------------------------------- formats


def test_format_ratios_are_against_torchscript_of_the_same_model() -> None:
    from bench.formats.report import markdown, with_ratios

    rows = with_ratios(
        [
            {
                "model": "m",
                "format": "torchscript",
                "raw": {"1": 100.0, "8": 400.0, "32": 800.0},
                "served_rps": 1000.0,
                "served_p99_ms": 10.0,
            },
            {
                "model": "m",
                "format": "aot-inductor",
                "raw": {"1": 150.0, "8": 400.0, "32": 400.0},
                "served_rps": 1500.0,
                "served_p99_ms": 5.0,
            },
            {"model": "m", "format": "torchscript frozen (raw only)", "raw": {"1": 200.0}},
        ]
    )
    aoti = rows[1]
    assert (aoti["raw_b1_vs_ts"], aoti["raw_b8_vs_ts"], aoti["raw_b32_vs_ts"]) == (1.5, 1.0, 0.5)
    assert (aoti["served_rps_vs_ts"], aoti["served_p99_vs_ts"]) == (1.5, 0.5)
    assert rows[2]["raw_b8_vs_ts"] is None
    assert rows[2]["served_rps_vs_ts"] is None
    meta = {
        "started_at": "t",
        "torch": "2.13.0",
        "cpu": "c",
        "server_cpus": "0",
        "loadgen_cpus": "1",
        "threads": 1,
        "concurrency": 32,
        "max_batch_size": 32,
        "max_delay_ms": 5.0,
        "duration_s": 10.0,
    }
    table = markdown(rows, meta)
    assert (
        "| m | aot-inductor | 150 | 400 | 400 | 1,500 | 5.0 "
        "| 1.50x / 1.00x / 0.50x | 1.50x | 0.50x |" in table
    )


def test_cores_summary_takes_medians_and_compares_with_one_cpu() -> None:
    from bench.runtime.cores import markdown, summarize

    def row(config: str, rps: float, compute: float, front: float) -> dict[str, Any]:
        return {
            "protocol": "http",
            "concurrency": 64,
            "config": config,
            "rps": rps,
            "p99_ms": 30.0,
            "server_cores": compute + front,
            "loadgen_cores": 0.2,
            "compute_cores": compute,
            "front_end_cores": front,
        }

    rows = [row("1 cpu", rps, 1.0, 0.0) for rps in (2000.0, 2500.0, 1000.0)]
    rows += [row("2 cpus + 1 front end", rps, 0.8, 0.6) for rps in (3000.0, 3200.0, 3100.0)]
    summary = {entry["config"]: entry for entry in summarize(rows)}
    assert summary["1 cpu"]["rps"] == 2000.0
    assert summary["1 cpu"]["front_end_us"] == 0.0
    with_front_end = summary["2 cpus + 1 front end"]
    assert with_front_end["vs_1_cpu"] == pytest.approx(3100.0 / 2000.0)
    assert with_front_end["compute_us"] == pytest.approx(0.8 / 3100.0 * 1e6)
    assert with_front_end["front_end_us"] == pytest.approx(0.6 / 3100.0 * 1e6)
    meta = {
        "started": "now",
        "rounds": 3,
        "seconds": 4,
        "cpus": [0, 1],
        "loadgen_cpus": [0],
        "loadavg_start": "0",
        "loadavg_end": "0",
    }
    table = markdown(list(summary.values()), meta)
    assert "| http | 64 | 2 cpus + 1 front end | 3,100 | 1.55 |" in table
