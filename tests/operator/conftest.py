"""Fixtures for the operator's wiring tests: a kmock API server and the operator in-process.

kmock (by Kopf's author) emulates the Kubernetes API as an in-memory store with lists and watch
streams. It does not emulate server-side apply, garbage collection, resourceVersion,
generation, selectors or the status subresource. :class:`FakeApiServer` adds only the minimum
the operator cannot run without, and no more:

* a server-side apply of a missing object creates it (the API server's documented upsert);
* server-stamped metadata: uid, creationTimestamp, an increasing resourceVersion, generation
  (bumped when ``spec`` changes) and, for applies, the applier's ``managedFields`` entry
  (computed from the applied body with the list merge keys of the Kubernetes API);
* injectable faults (status code, headers, a dropped watch) that leave the state untouched.

What server-side apply *merges*, what garbage collection deletes, how label selectors filter:
none of that is tested here; it comes from the Kubernetes documentation and is checked by the
e2e suite on a real cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.test_utils
import aiohttp.web
import attrs
import kmock
import kopf
import pytest
import yaml
from ferry_operator import constants
from ferry_operator.cluster import APPLY_CONTENT_TYPE
from ferry_operator.handlers import Operator
from ferry_operator.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

MD_RESOURCE = f"{constants.GROUP}/{constants.VERSION}/{constants.PLURAL}"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
PDBS = "policy/v1/poddisruptionbudgets"
PODS = "v1/pods"
EVENTS = "v1/events"

# List merge keys of the fields Ferry's manifests use (the Kubernetes API's
# x-kubernetes-list-map-keys); every other list is atomic.
_LIST_MAP_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "env": ("name",),
    "volumeMounts": ("mountPath",),
    "volumes": ("name",),
    "ownerReferences": ("uid",),
    "imagePullSecrets": ("name",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
}


# What the API server strips from every field set (structured-merge-diff's stripMetaManager).
_STRIPPED_METADATA = {
    "name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName", "generation",
    "managedFields", "resourceVersion",
}  # fmt: skip


def fields_v1(value: Any, *, top: bool = True) -> dict[str, Any]:
    """The ``fieldsV1`` set an applier of ``value`` owns (every field it sets)."""
    result: dict[str, Any] = {}
    for key, item in value.items():
        if (top and key in {"apiVersion", "kind"}) or item is None:
            continue
        if top and key == "metadata":
            kept = {k: v for k, v in item.items() if k not in _STRIPPED_METADATA}
            result[f"f:{key}"] = _field_node(key, kept)
        else:
            result[f"f:{key}"] = _field_node(key, item)
    return result


def _field_node(key: str, item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return fields_v1(item, top=False)
    if isinstance(item, list) and item and all(isinstance(x, Mapping) for x in item):
        merge_keys = _LIST_MAP_KEYS.get(key)
        if key == "ports":
            merge_keys = (
                ("containerPort", "protocol")
                if "containerPort" in item[0]
                else ("port", "protocol")
            )
        if merge_keys is None:
            return {}  # atomic list
        node: dict[str, Any] = {}
        for entry in item:
            merge = {name: entry.get(name, "TCP") for name in merge_keys}
            key_json = json.dumps(merge, separators=(",", ":"))
            node[f"k:{key_json}"] = {".": {}, **fields_v1(entry, top=False)}
        return node
    return {}


TEST_USER_AGENT = "ferry-tests"


@dataclass(frozen=True)
class Sent:
    """One request the API server received."""

    method: str
    path: str
    params: dict[str, str]
    content_type: str
    data: Any
    at: float
    user_agent: str

    @property
    def by_operator(self) -> bool:
        """Sent by the operator (Kopf's requests included), not by the test itself."""
        return self.user_agent.startswith("ferry-operator/")


@dataclass
class Fault:
    """A canned failure for matching requests, served ``times`` times (state untouched)."""

    method: str
    path: re.Pattern[str]
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    watch: bool | None = None
    content_type: str | None = None
    hits: int = 0


@attrs.define(kw_only=True)
class FakeApiServer(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator plus apply-creates, stamped metadata and faults."""

    faults: list[Fault] = attrs.field(factory=list)
    bodies: dict[int, Any] = attrs.field(factory=dict)
    """Request bodies exactly as sent, by request id."""
    arrivals: dict[int, float] = attrs.field(factory=dict)
    """Event-loop time each request arrived at, by request id."""
    namespaces: list[str] = attrs.field(factory=list)
    """Namespaces listed at ``/api/v1/namespaces`` (kmock cannot parse that path itself)."""
    namespace_requests: list[Sent] = attrs.field(factory=list)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.path.rstrip("/").startswith("/api/v1/namespaces") and (
            raw_request.path.count("/") <= 4
        ):
            return await self._serve_namespaces(raw_request)
        return await super().__call__(raw_request)

    async def _serve_namespaces(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw.json() if raw.can_read_body else None
        self.namespace_requests.append(
            Sent(raw.method, raw.path, dict(raw.query), raw.headers.get("Content-Type", ""), body,
                 asyncio.get_running_loop().time(), raw.headers.get("User-Agent", ""))
        )  # fmt: skip
        name = raw.path.rstrip("/").rsplit("/", 1)[-1]
        if raw.method == "POST":
            name = body["metadata"]["name"]
            if name in self.namespaces:
                return aiohttp.web.json_response({"kind": "Status", "code": 409}, status=409)
            self.namespaces.append(name)
            return aiohttp.web.json_response(body)
        if raw.method == "DELETE":
            if name not in self.namespaces:
                return aiohttp.web.json_response({"kind": "Status", "code": 404}, status=404)
            self.namespaces.remove(name)
            return aiohttp.web.json_response({"metadata": {"name": name}})
        if raw.query.get("watch") == "true":
            response = aiohttp.web.StreamResponse()
            await response.prepare(raw)
            await asyncio.Event().wait()  # nothing changes; cancelled when the client leaves
        items = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            for name in self.namespaces
        ]
        body = {"kind": "NamespaceList", "metadata": {"resourceVersion": "1"}, "items": items}
        return aiohttp.web.json_response(body)

    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1000))

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        watch: bool | None = None,
        content_type: str | None = None,
    ) -> Fault:
        """Answer the next ``times`` matching requests with ``status`` (a regex ``path``)."""
        fault = Fault(
            method.upper(), re.compile(path), status, headers or {}, times, watch, content_type
        )
        self.faults.append(fault)
        return fault

    def _matching_fault(self, request: kmock.Request) -> Fault | None:
        watching = request.params.get("watch") == "true"
        for fault in self.faults:
            if fault.hits >= fault.times or fault.method != request.method.value:
                continue
            if not fault.path.search(request.url.path):
                continue
            if fault.watch is not None and fault.watch != watching:
                continue
            content_type = request.headers.get("Content-Type", "")
            if fault.content_type is not None and not content_type.startswith(fault.content_type):
                continue
            fault.hits += 1
            return fault
        return None

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        fault = self._matching_fault(request)
        if fault is not None:
            if fault.status == 200:  # a watch stream the server closes at once
                return aiohttp.web.Response(status=200, body=b"", headers=fault.headers)
            body = {
                "apiVersion": "v1",
                "kind": "Status",
                "status": "Failure",
                "code": fault.status,
                "reason": "Injected",
                "message": f"injected {fault.status}",
            }
            return aiohttp.web.json_response(body, status=fault.status, headers=fault.headers)
        self.bodies[request.id] = copy.deepcopy(request.data)  # as sent, before any stamping
        self.arrivals[request.id] = asyncio.get_running_loop().time()
        if request.resource is not None and request.subresource is None:
            request = self._stamp(request)
            if request.action == kmock.action.CREATE and request.method == kmock.method.PATCH:
                return await self._apply_create(request)
        elif request.resource is not None and request.action == kmock.action.UPDATE:
            request.data.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
        return await super()._handle(request)

    async def _apply_create(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """Store an object created by server-side apply and tell the watchers (ADDED)."""
        assert request.resource is not None
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key in self.objects:
                self.objects[key].create(request.data)
            else:
                self.objects[key] = request.data
            raw = self.objects[key].raw
            await self._buses[request.resource].put({"type": "ADDED", "object": raw})
        return aiohttp.web.json_response(raw)

    def _stored(self, request: kmock.Request) -> Mapping[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            raw = self.objects[key].raw
            return raw if isinstance(raw, Mapping) else None
        return None

    def _stamp(self, request: kmock.Request) -> kmock.Request:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        version = str(next(self._versions))
        applying = request.headers.get("Content-Type", "").startswith(APPLY_CONTENT_TYPE)
        if request.action == kmock.action.UPDATE and isinstance(request.data, dict):
            stored = self._stored(request)
            data = request.data
            if applying:
                data["metadata"] = {
                    **data.get("metadata", {}),
                    "managedFields": [
                        {
                            "manager": request.params.get("fieldManager"),
                            "operation": "Apply",
                            "apiVersion": data.get("apiVersion"),
                            "fieldsType": "FieldsV1",
                            "fieldsV1": fields_v1(data),
                        }
                    ],
                }
            if stored is None and applying:  # apply creates
                data["metadata"].update(
                    uid=str(uuid.uuid4()),
                    creationTimestamp=now,
                    resourceVersion=version,
                    generation=1,
                )
                return attrs.evolve(request, action=kmock.action.CREATE)
            if stored is not None:
                metadata = data.setdefault("metadata", {})
                metadata["resourceVersion"] = version
                if "spec" in data and data["spec"] != stored.get("spec"):
                    metadata["generation"] = (
                        int(stored.get("metadata", {}).get("generation", 1)) + 1
                    )
        elif request.action == kmock.action.CREATE and isinstance(request.data, dict):
            metadata = request.data.setdefault("metadata", {})
            if "generateName" in metadata and "name" not in metadata:
                metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.update(creationTimestamp=now, resourceVersion=version)
            metadata.setdefault("generation", 1)
        return request

    # Helpers for tests -------------------------------------------------------------------

    def object(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object, or ``None``."""
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(dict(self.objects[key].raw))

    def names(self, resource: str) -> list[str]:
        """Names of the live objects of ``resource``."""
        wanted = kmock.resource(resource)
        return sorted(
            name
            for (res, _, name), obj in self.objects.items()
            if res == wanted and not obj.deleted
        )


def sent(server: FakeApiServer) -> list[Sent]:
    """Every request received so far, in order."""
    recorded = [
        Sent(
            request.method.value,
            request.url.path,
            dict(request.params),
            request.headers.get("Content-Type", ""),
            server.bodies.get(request.id, request.data),
            server.arrivals.get(request.id, 0.0),
            request.headers.get("User-Agent", ""),
        )
        for request in server
    ]
    return sorted(recorded + server.namespace_requests, key=lambda request: request.at)


def writes(server: FakeApiServer, since: int = 0) -> list[Sent]:
    """Requests that change something (everything but GET)."""
    return [request for request in sent(server)[since:] if request.method not in {"GET", "HEAD"}]


def declare_resources(server: FakeApiServer, *, peering: bool = False) -> None:
    """Discovery information for every resource the operator watches."""
    info = kmock.ResourceInfo
    server.resources[MD_RESOURCE] = info(
        kind=constants.KIND,
        singular=constants.SINGULAR,
        namespaced=True,
        verbs={"list", "watch", "get", "patch"},
        subresources={"status", "scale"},
    )
    server.resources[DEPLOYMENTS] = info(
        kind="Deployment", namespaced=True, verbs={"list", "watch"}
    )
    server.resources[SERVICES] = info(kind="Service", namespaced=True, verbs={"list", "watch"})
    server.resources[HPAS] = info(
        kind="HorizontalPodAutoscaler", namespaced=True, verbs={"list", "watch"}
    )
    server.resources[PDBS] = info(
        kind="PodDisruptionBudget", namespaced=True, verbs={"list", "watch"}
    )
    server.resources[PODS] = info(kind="Pod", namespaced=True, verbs={"list", "watch"})
    server.resources[EVENTS] = info(kind="Event", namespaced=True, verbs={"create"})
    server.resources["v1/namespaces"] = info(
        kind="Namespace", namespaced=False, verbs={"list", "watch"}
    )
    server.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
        kind="CustomResourceDefinition", namespaced=False, verbs={"list", "watch"}
    )
    if peering:
        server.resources["kopf.dev/v1/clusterkopfpeerings"] = info(
            kind="ClusterKopfPeering", namespaced=False, verbs={"list", "watch", "patch", "create"}
        )


def load_example(
    name: str = "modeldeployment.yaml", *, namespace: str = "default"
) -> dict[str, Any]:
    """An example ModelDeployment as a dict."""
    body = yaml.safe_load((EXAMPLES / name).read_text())
    body["metadata"]["namespace"] = namespace
    return dict(body)


def make_settings(**overrides: Any) -> OperatorSettings:
    """Operator settings for tests (standalone, fast retries)."""
    values: dict[str, Any] = {
        "standalone": True,
        "runtime_image": "registry.test/ferry-runtime:test",
        "retry_base_delay_s": 0.05,
        "retry_max_delay_s": 0.5,
        "workers": 4,
    }
    values.update(overrides)
    return OperatorSettings(**values)


@dataclass
class Running:
    """An operator running in the test's event loop."""

    operator: Operator
    task: asyncio.Task[None]
    stop: asyncio.Event

    async def halt(self) -> None:
        """Stop it gracefully and wait for it."""
        self.stop.set()
        await asyncio.wait_for(self.task, timeout=15)


@dataclass
class Kube:
    """The fake API server and the helpers tests drive it with."""

    server: FakeApiServer

    @staticmethod
    def example(
        name: str = "modeldeployment.yaml", *, namespace: str = "default"
    ) -> dict[str, Any]:
        """An example ModelDeployment (from examples/) as a dict."""
        return load_example(name, namespace=namespace)

    @staticmethod
    def settings(**overrides: Any) -> OperatorSettings:
        """Operator settings for tests (standalone, fast retries)."""
        return make_settings(**overrides)

    def sent(self, since: int = 0) -> list[Sent]:
        """Requests received (from index ``since``)."""
        return sent(self.server)[since:]

    def writes(self, since: int = 0) -> list[Sent]:
        """Requests that change something (everything but GET) from index ``since``."""
        return writes(self.server, since)

    def mark(self) -> int:
        """A position in the request log (for :meth:`writes`)."""
        return len(sent(self.server))

    def object(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A stored object."""
        return self.server.object(resource, namespace, name)

    def names(self, resource: str) -> list[str]:
        """Names of the stored objects of ``resource``."""
        return self.server.names(resource)

    async def request(
        self, method: str, path: str, body: Mapping[str, Any] | None, content_type: str
    ) -> dict[str, Any]:
        """One request as a user would send it, on a connection closed right after (an idle
        keep-alive connection is a server task Kopf's shutdown would wait 5 s for)."""
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(
                method,
                f"{str(self.server.url).rstrip('/')}{path}",
                data=json.dumps(body).encode() if body is not None else None,
                headers={"Content-Type": content_type, "User-Agent": TEST_USER_AGENT},
            ) as response,
        ):
            assert response.status == 200, await response.text()
            result: dict[str, Any] = await response.json()
            return result

    async def create(self, resource: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create an object through the API (watchers see it)."""
        group_version, plural = resource.rsplit("/", 1)
        prefix = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
        namespace = body["metadata"]["namespace"]
        path = f"{prefix}/namespaces/{namespace}/{plural}"
        return await self.request("POST", path, body, "application/json")

    async def create_md(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a ModelDeployment."""
        return await self.create(MD_RESOURCE, body)

    async def patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A merge patch by someone other than Ferry."""
        return await self.request("PATCH", path, patch, "application/merge-patch+json")

    async def delete(self, path: str) -> None:
        """Delete an object (as a user would)."""
        await self.request("DELETE", path, None, "application/json")

    @staticmethod
    async def wait_for(
        condition: Callable[[], bool | Awaitable[bool]], *, within: float = 10.0
    ) -> None:
        """Poll ``condition`` until true; fail after ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            if loop.time() > deadline:
                raise AssertionError(f"condition not met within {within}s")
            await asyncio.sleep(0.02)

    @contextlib.asynccontextmanager
    async def operator(self, settings: OperatorSettings | None = None) -> AsyncIterator[Running]:
        """Run the operator against the fake API server until the block ends."""
        url = str(self.server.url).rstrip("/")
        operator = Operator(
            settings or make_settings(),
            login=lambda: kopf.ConnectionInfo(server=url, default_namespace="default"),
            identity="test-operator",
        )
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(operator.run(stop_flag=stop, ready_flag=ready))
        await asyncio.wait_for(ready.wait(), timeout=15)
        handle = Running(operator, task, stop)
        try:
            yield handle
        finally:
            if not task.done():
                await handle.halt()


class _CancellingTestServer(aiohttp.test_utils.RawTestServer):
    """A test server that cancels a request's handler when its client disconnects, so the
    watch streams the operator closes end at once (instead of lingering until Kopf's
    shutdown cancels them as hung tasks after 5 s)."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, handler_cancellation=True, **kwargs)


@pytest.fixture
def owned_fields() -> Callable[[Any], dict[str, Any]]:
    """Builds the ``fieldsV1`` an API server records for an applier of a manifest."""
    return fields_v1


@pytest.fixture
async def kube() -> AsyncIterator[Kube]:
    """A running fake API server on 127.0.0.1 (random port) with the operator's resources."""
    async with FakeApiServer() as server, kmock.Server(server, server_cls=_CancellingTestServer):
        declare_resources(server)
        yield Kube(server)
