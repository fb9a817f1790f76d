"""How the suite reaches pods: two ways, one interface.

- ``port-forward`` (kind, or any cluster with kube-proxy and cluster DNS): a Service is reached
  through ``kubectl port-forward``; pods fetch models from the store by its Service DNS name; the
  rollout load runs in a pod inside the cluster.
- ``endpoints`` (the local cluster kit of ``make test-cluster``: no kube-proxy, no DNS, no
  ``kubectl logs``/``port-forward``): a Service is followed through its ready EndpointSlice
  addresses, as kube-proxy would, straight to pod IPs; pods fetch models from the store's pod IP;
  the load runs here and re-reads the endpoints every few hundred milliseconds, so it only ever
  opens a connection to an endpoint the API server lists as ready. Only addresses inside
  ``--endpoint-cidr`` are ever contacted (the suite refuses any other).
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from e2e_kube import Kube, port_forward, wait_for
from kubernetes import client

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
STORE_SERVICE, STORE_PORT_NAME = "model-store", "http"


class Reach(Protocol):
    """One way of reaching Services and the model store."""

    name: str

    def service(
        self, kube: Kube, namespace: str, service: str, port: int
    ) -> contextlib.AbstractContextManager[str]:
        """``host:port`` reaching ``service``'s ``port``, for the time of the block."""

    def store_base(self, kube: Kube, namespace: str) -> str:
        """Base URL (no trailing slash) at which model pods reach the suite's model store."""


@dataclass(frozen=True)
class Endpoint:
    """One ready address of a Service port."""

    address: str
    port: int

    @property
    def authority(self) -> str:
        return f"{self.address}:{self.port}"


def service_port_name(kube: Kube, namespace: str, service: str, port: int) -> str:
    """The name of ``service``'s port number ``port`` (EndpointSlices list ports by name)."""
    spec = kube.core.read_namespaced_service(service, namespace).spec
    for item in spec.ports or ():
        if item.port == port:
            return str(item.name or "")
    raise AssertionError(f"service {namespace}/{service} has no port {port}")


def ready_endpoints(
    discovery: client.DiscoveryV1Api, namespace: str, service: str, port_name: str
) -> list[Endpoint]:
    """The ready addresses of ``service``'s port ``port_name`` across its EndpointSlices, as
    kube-proxy programs them (``ready`` unset counts as ready, per the EndpointSlice API)."""
    slices = discovery.list_namespaced_endpoint_slice(
        namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}", _request_timeout=10
    ).items
    found: list[Endpoint] = []
    for item in slices:
        ports = [p.port for p in item.ports or () if (p.name or "") == port_name and p.port]
        if not ports:
            continue
        for endpoint in item.endpoints or ():
            conditions = endpoint.conditions
            if conditions is not None and conditions.ready is False:
                continue
            found.extend(Endpoint(address, ports[0]) for address in endpoint.addresses or ())
    return sorted(found, key=lambda e: (e.address, e.port))


class PortForwardReach:
    """kubectl port-forward and cluster DNS (kind, clusters with kube-proxy)."""

    name = "port-forward"

    @contextlib.contextmanager
    def service(self, kube: Kube, namespace: str, service: str, port: int) -> Iterator[str]:
        with port_forward(kube, namespace, service, port) as local:
            yield f"127.0.0.1:{local}"

    def store_base(self, kube: Kube, namespace: str) -> str:
        return f"http://{STORE_SERVICE}.{namespace}.svc.cluster.local"


@dataclass
class EndpointsReach:
    """Ready EndpointSlice addresses (pod IPs), for clusters without kube-proxy or DNS."""

    allowed: ipaddress.IPv4Network | ipaddress.IPv6Network
    """Pod network the suite may send traffic to; anything else is refused."""
    timeout: float = 60.0
    name: str = field(default="endpoints", init=False)

    def check(self, endpoint: Endpoint) -> Endpoint:
        if ipaddress.ip_address(endpoint.address) not in self.allowed:
            raise AssertionError(
                f"endpoint {endpoint.address} is outside the pod network {self.allowed} the "
                "suite may contact (--endpoint-cidr)"
            )
        return endpoint

    def endpoints(self, kube: Kube, namespace: str, service: str, port: int) -> list[Endpoint]:
        name = service_port_name(kube, namespace, service, port)
        found = ready_endpoints(client.DiscoveryV1Api(kube.api), namespace, service, name)
        return [self.check(endpoint) for endpoint in found]

    @contextlib.contextmanager
    def service(self, kube: Kube, namespace: str, service: str, port: int) -> Iterator[str]:
        found = wait_for(
            lambda: self.endpoints(kube, namespace, service, port),
            timeout=self.timeout,
            what=f"a ready endpoint of service {namespace}/{service}:{port}",
            interval=0.5,
        )
        yield random.choice(found).authority

    def store_base(self, kube: Kube, namespace: str) -> str:
        found = wait_for(
            lambda: self.endpoints(kube, namespace, STORE_SERVICE, 80),
            timeout=self.timeout,
            what="a ready endpoint of the model store",
            interval=0.5,
        )
        return f"http://{found[0].authority}"


class EndpointFollower:
    """Keeps the ready endpoints of one Service port fresh in a thread (what kube-proxy does
    for a node); :meth:`pick` returns one of them for each new connection."""

    def __init__(
        self,
        reach: EndpointsReach,
        kube: Kube,
        namespace: str,
        service: str,
        port: int,
        *,
        interval: float = 0.2,
    ) -> None:
        self._read: Callable[[], list[Endpoint]] = lambda: reach.endpoints(
            kube, namespace, service, port
        )
        self._interval = interval
        self._current: list[Endpoint] = self._read()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh_errors = 0
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def _follow(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                fresh = self._read()
            except Exception:  # an API hiccup: keep the last known set, as kube-proxy does
                self.refresh_errors += 1
                continue
            with self._lock:
                self._current = fresh

    def pick(self) -> str:
        """``http://address:port`` of a ready endpoint (raises when there is none)."""
        with self._lock:
            current = list(self._current)
        if not current:
            raise ConnectionError("the Service has no ready endpoint")
        return f"http://{random.choice(current).authority}"

    def __enter__(self) -> EndpointFollower:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def wait_until(predicate: Callable[[], bool], seconds: float) -> bool:
    """Poll ``predicate`` for up to ``seconds``; whether it became true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()
