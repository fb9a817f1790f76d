"""API failures are survived: 409, 429 with Retry-After, 5xx, a dropped watch."""

from __future__ import annotations

from typing import Any

from ferry_operator import constants

MD = f"{constants.GROUP}/{constants.VERSION}/{constants.PLURAL}"
STATUS_PATH = (
    f"/apis/{constants.GROUP}/{constants.VERSION}/namespaces/default/{constants.PLURAL}/mlp/status"
)


def observed_generation(kube: Any) -> Any:
    return ((kube.object(MD, "default", "mlp") or {}).get("status") or {}).get("observedGeneration")


async def test_conflict_on_apply_is_retried(kube: Any) -> None:
    fault = kube.server.fail("PATCH", r"/deployments/mlp$", 409)
    async with kube.operator():
        await kube.create_md(kube.example())
        await kube.wait_for(lambda: observed_generation(kube) == 1)
    assert fault.hits == 1
    assert kube.names("apps/v1/deployments") == ["mlp"]


async def test_server_errors_are_retried_with_backoff(kube: Any) -> None:
    fault = kube.server.fail("PATCH", r"/services/mlp$", 500, times=3)
    async with kube.operator():
        await kube.create_md(kube.example())
        await kube.wait_for(lambda: observed_generation(kube) == 1)
    assert fault.hits == 3
    times = [r for r in kube.sent() if r.path.endswith("/services/mlp")]
    assert len(times) == 4


async def test_throttling_honours_retry_after(kube: Any) -> None:
    kube.server.fail("PATCH", r"/mlp/status$", 429, headers={"Retry-After": "1"})
    async with kube.operator():
        await kube.create_md(kube.example())
        await kube.wait_for(lambda: observed_generation(kube) == 1)
    stamps = [r.at for r in kube.sent() if r.path == STATUS_PATH]
    assert len(stamps) == 2
    assert stamps[1] - stamps[0] >= 0.95  # not the 0.05 s the test settings' backoff would give


async def test_a_dropped_watch_is_resumed(kube: Any) -> None:
    dropped = kube.server.fail("GET", r"/modeldeployments$", 200, watch=True, times=2)
    async with kube.operator():
        await kube.wait_for(lambda: dropped.hits == 2)
        await kube.create_md(kube.example())
        await kube.wait_for(lambda: observed_generation(kube) == 1)
    watches = [
        r for r in kube.sent() if r.path.endswith("/modeldeployments") and r.params.get("watch")
    ]
    assert len(watches) >= 3
