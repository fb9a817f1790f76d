"""bench/operator_scale.py at small N against kmock: it runs end to end (not timed)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench() -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # bench/ is not an installed package
    return importlib.import_module("bench.operator_scale")


def kubeconfig(tmp_path: Path, server: str, context: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": context,
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "bench-token"}}],
                "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    return path


def test_refuses_a_context_that_is_not_a_test_cluster(bench: Any, tmp_path: Path) -> None:
    options = bench.Options(count=1, kubeconfig=kubeconfig(tmp_path, "https://prod:6443", "prod"))
    with pytest.raises(SystemExit, match="refusing kube context 'prod'"):
        bench.main(["--count", "1", "--kubeconfig", str(options.kubeconfig)])
    bench.check_context("prod", ["prod"])  # named explicitly: allowed
    bench.check_context("kind-ferry-dev", [])


async def test_smoke_against_kmock(bench: Any, kube: Any, tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, str(kube.server.url).rstrip("/"), "kind-ferry-smoke")
    output = tmp_path / "result.json"
    options = bench.Options(
        count=5, kubeconfig=path, timeout_s=60, workers=4, output=output, wait_all_ready=False
    )
    results = await bench.run_benchmark(options)
    output.write_text(json.dumps(results))
    assert results["count"] == 5
    assert results["context"] == "kind-ferry-smoke"
    assert results["converge_seconds"] > 0
    # Each object: a Deployment and a Service applied, one status write (no Deployment
    # controller runs in kmock, so no second status change).
    assert results["requests_by_verb"]["patch deployments"] == 5
    assert results["requests_by_verb"]["patch services"] == 5
    assert results["requests_by_verb"]["patch modeldeployments/status"] == 5
    assert results["requests_per_object"] <= 5
    assert results["resume_writes"] == 0
    assert results["meets_targets"]["resume_writes"]
    assert results["meets_targets"]["requests_per_object"]
    assert results["peak_rss_mib"] is None or results["peak_rss_mib"] > 10
    assert kube.server.namespaces == []  # the namespace was deleted afterwards
    assert "requests per object" in bench.report(results)
