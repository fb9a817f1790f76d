"""Load on a model's Service while something changes (a rollout, a canary step, a scale), with
every failed request counted. One interface, two runners matching the reach mode:

- :class:`HostLoad` (endpoints mode): ``load_client.run_load`` in a thread here, each request
  sent to a ready endpoint of the Service picked from its EndpointSlices, refreshed every 200 ms;
- :class:`PodLoad` (port-forward mode): ``load_client.py`` in a pod inside the cluster, through
  the Service's DNS name and kube-proxy; its progress is read from the pod's log.

    with start_load(kube, reach, settings, ns, service="mlp", port=8080, model="mlp",
                    expect_version="2") as load:
        load.wait_sending()
        ...change something...
        summary = load.summary(timeout=300)   # {"failures": 0, "versions": {...}, ...}
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from e2e_kube import Kube, Settings, wait_for
from e2e_manifests import load_pod
from e2e_reach import EndpointFollower, EndpointsReach, Reach
from load_client import run_load

LOAD_SCRIPT = Path(__file__).resolve().parent / "load_client.py"


@dataclass(frozen=True)
class LoadPlan:
    """What to load and when to stop."""

    service: str
    port: int
    model: str
    expect_version: str | None
    """Stop once only this version answered for ``settle`` seconds; ``None``: run until stopped
    or ``max_seconds``."""
    concurrency: int = 4
    settle: float = 10.0
    max_seconds: float = 420.0


class Load(Protocol):
    """A running load."""

    def progress(self) -> dict[str, Any] | None:
        """The latest progress line (``requests``, ``failures``, ``versions``...)."""

    def stop(self) -> None:
        """Ask it to finish now (it still reports a summary)."""

    def summary(self, timeout: float) -> dict[str, Any]:
        """Wait for and return the final summary."""

    def wait_sending(self, timeout: float = 120) -> None:
        """Wait until at least one request was answered or failed."""


@dataclass
class HostLoad:
    """The load, run here against ready endpoints (endpoints mode)."""

    follower: EndpointFollower
    plan: LoadPlan
    _stop: threading.Event = field(default_factory=threading.Event)
    _latest: dict[str, Any] | None = None
    _summary: dict[str, Any] | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        def record(line: dict[str, Any]) -> None:
            if line["event"] == "summary":
                self._summary = line
            elif line["event"] == "progress":
                self._latest = line

        def body() -> None:
            run_load(
                self.follower.pick,
                model=self.plan.model,
                expect_version=self.plan.expect_version,
                concurrency=self.plan.concurrency,
                settle=self.plan.settle,
                max_seconds=self.plan.max_seconds,
                stop=self._stop,
                report=record,
            )

        self._thread = threading.Thread(target=body, daemon=True, name="e2e-load")
        self._thread.start()

    def progress(self) -> dict[str, Any] | None:
        return self._latest

    def stop(self) -> None:
        self._stop.set()

    def summary(self, timeout: float) -> dict[str, Any]:
        return wait_for(lambda: self._summary, timeout=timeout, what="the load to finish")

    def wait_sending(self, timeout: float = 120) -> None:
        wait_for(
            lambda: (self._latest or {}).get("requests", 0) > 0,
            timeout=timeout,
            what="the load to send requests",
        )


@dataclass
class PodLoad:
    """The load, run in a pod through the Service (port-forward mode)."""

    kube: Kube
    namespace: str
    name: str

    def _lines(self) -> list[dict[str, Any]]:
        try:
            log = self.kube.core.read_namespaced_pod_log(self.name, self.namespace)
        except Exception:  # the container has not started yet
            return []
        return [json.loads(line) for line in log.splitlines() if line.startswith("{")]

    def progress(self) -> dict[str, Any] | None:
        progress = [line for line in self._lines() if line.get("event") == "progress"]
        return progress[-1] if progress else None

    def stop(self) -> None:
        self.kube.core.delete_namespaced_pod(self.name, self.namespace, grace_period_seconds=5)

    def summary(self, timeout: float) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            pod = self.kube.core.read_namespaced_pod(self.name, self.namespace)
            if pod.status.phase not in {"Succeeded", "Failed"}:
                return None
            summaries = [line for line in self._lines() if line.get("event") == "summary"]
            assert summaries, f"the load pod ended ({pod.status.phase}) without a summary"
            return summaries[-1]

        return wait_for(finished, timeout=timeout, what="the load pod to finish")

    def wait_sending(self, timeout: float = 120) -> None:
        wait_for(
            lambda: (self.progress() or {}).get("requests", 0) > 0,
            timeout=timeout,
            what="the load pod to send requests",
        )


@contextlib.contextmanager
def start_load(
    kube: Kube,
    reach: Reach,
    settings: Settings,
    namespace: str,
    plan: LoadPlan,
    *,
    pod_name: str = "e2e-load",
) -> Iterator[Load]:
    """Run ``plan`` for the time of the block (stopped at its end if still running)."""
    if isinstance(reach, EndpointsReach):
        with EndpointFollower(reach, kube, namespace, plan.service, plan.port) as follower:
            load = HostLoad(follower, plan)
            load.start()
            try:
                yield load
            finally:
                load.stop()
                if load._thread is not None:
                    load._thread.join(timeout=30)
        return
    args = [
        "--url", f"http://{plan.service}.{namespace}.svc.cluster.local:{plan.port}",
        "--model", plan.model, "--concurrency", str(plan.concurrency),
        "--settle", str(plan.settle), "--max-seconds", str(int(plan.max_seconds)),
    ]  # fmt: skip
    if plan.expect_version is not None:
        args += ["--expect-version", plan.expect_version]
    kube.apply(load_pod(namespace, pod_name, settings.runtime_image, LOAD_SCRIPT.read_text(), args))
    yield PodLoad(kube, namespace, pod_name)
