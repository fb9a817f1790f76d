"""The only module that talks to the Kubernetes API server.

One ``aiohttp`` session (``Connection``) carries every request of the process: Kopf's own
(lists, watches, peering) through :meth:`Connection.kopf_session`, and Ferry's writes through
:class:`Cluster`. Sharing it means one connection pool, one place that authenticates (the token
is re-read when the kubelet rotates it and after a 401) and one place that counts requests,
which is how the benchmark and the tests prove "requests per object" and "no writes".

Ferry's writes:

* children: server-side apply (``PATCH`` with ``application/apply-patch+yaml``,
  ``fieldManager=ferry-operator``, ``force=true``): create-or-update in one request, no
  get-then-create race, and fields Ferry stops setting are removed by the API server;
* pruning: ``DELETE`` with the child's uid as precondition (never a same-named newcomer);
* status: a merge patch of the ``status`` subresource (never the spec);
* Events, and the Kopf peering object when it is missing.

:data:`REQUIRED_PERMISSIONS` lists every permission this process needs, Kopf's included; the
Helm chart's RBAC is generated from the same list and the kmock tests check every request the
operator makes against it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import aiohttp
import kopf

from ferry_operator import constants
from ferry_operator.errors import ApiError
from ferry_operator.reconcile import ChildRef
from ferry_operator.render import CHILD_KINDS

logger = logging.getLogger(__name__)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_PATCH_CONTENT_TYPE = "application/merge-patch+json"
USER_AGENT = f"{constants.FIELD_MANAGER}/0.1"
PEERING_GROUP = "kopf.dev"


# ---------------------------------------------------------------------------------------------
# Resources and permissions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The collection or object URL path."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            root += f"/namespaces/{namespace}"
        root += f"/{self.plural}"
        return f"{root}/{name}" if name is not None else root


MODEL_DEPLOYMENTS = Resource(constants.GROUP, constants.VERSION, constants.PLURAL)
EVENTS = Resource("", "v1", "events")
PODS = Resource("", "v1", "pods")
CLUSTER_PEERINGS = Resource(PEERING_GROUP, "v1", "clusterkopfpeerings", namespaced=False)
NAMESPACED_PEERINGS = Resource(PEERING_GROUP, "v1", "kopfpeerings")
CHILD_RESOURCES: dict[str, Resource] = {
    kind.kind: Resource(kind.group, kind.version, kind.plural) for kind in CHILD_KINDS
}

Needed = Literal["always", "some-namespaces", "peering-clusterwide", "peering-namespaced"]


@dataclass(frozen=True)
class Permission:
    """One RBAC rule's worth of access: verbs on a resource of an API group."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    cluster_scoped: bool = False
    """Kept by Kubernetes at cluster scope (needs a ClusterRole even for some namespaces)."""
    needed: Needed = "always"
    """``always``; ``some-namespaces`` (only when specific namespaces are watched);
    ``peering-clusterwide`` / ``peering-namespaced`` (only with peering, per watch mode)."""
    why: str = ""

    def allows(self, verb: str, api_group: str, resource: str) -> bool:
        """Whether this permission grants ``verb`` on ``api_group``/``resource``."""
        return self.api_group == api_group and self.resource == resource and verb in self.verbs


REQUIRED_PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        constants.GROUP,
        constants.PLURAL,
        ("list", "watch"),
        why="Kopf lists and watches ModelDeployments (Ferry never writes their spec)",
    ),
    Permission(
        constants.GROUP,
        f"{constants.PLURAL}/status",
        ("patch",),
        why="the status is merge-patched through the status subresource",
    ),
    *(
        Permission(
            kind.group,
            kind.plural,
            ("list", "watch", "create", "patch", "delete"),
            why=(
                f"{kind.kind} children: Kopf watches them (label managed-by=ferry); server-side "
                "apply is a patch, authorized as create when the object is new; pruning deletes"
            ),
        )
        for kind in CHILD_KINDS
    ),
    Permission("", "pods", ("list", "watch"), why="pod states explain why replicas are not ready"),
    Permission("", "events", ("create",), why="Events about ModelDeployments"),
    Permission(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        cluster_scoped=True,
        why="Kopf discovers and watches CRDs (the ModelDeployment CRD may appear later)",
    ),
    Permission(
        "",
        "namespaces",
        ("list", "watch"),
        cluster_scoped=True,
        needed="some-namespaces",
        why="Kopf observes the watched namespaces when it does not watch all of them",
    ),
    Permission(
        PEERING_GROUP,
        CLUSTER_PEERINGS.plural,
        ("list", "watch", "create", "patch"),
        cluster_scoped=True,
        needed="peering-clusterwide",
        why="Kopf peering (all namespaces watched): keep-alives; created at start-up if missing",
    ),
    Permission(
        PEERING_GROUP,
        NAMESPACED_PEERINGS.plural,
        ("list", "watch", "create", "patch"),
        needed="peering-namespaced",
        why="Kopf peering (some namespaces watched): one object per watched namespace",
    ),
)
"""Every permission the operator can need, Kopf's included; filter with
:func:`required_permissions`. Discovery (``/api``, ``/apis``) is granted to every
authenticated user by the built-in ``system:discovery`` ClusterRole."""


def required_permissions(*, clusterwide: bool, standalone: bool) -> tuple[Permission, ...]:
    """The permissions one mode of operation needs."""
    wanted: set[Needed] = {"always"}
    if not clusterwide:
        wanted.add("some-namespaces")
    if not standalone:
        wanted.add("peering-clusterwide" if clusterwide else "peering-namespaced")
    return tuple(permission for permission in REQUIRED_PERMISSIONS if permission.needed in wanted)


@dataclass(frozen=True)
class ApiRequest:
    """What the API server's authorizer sees in one request."""

    verbs: tuple[str, ...]
    """Verbs that must all be allowed (an apply that creates needs patch and create)."""
    api_group: str
    resource: str
    """Plural, with ``/subresource`` when there is one."""
    namespace: str | None
    name: str | None


def describe_request(
    method: str, path: str, query: Mapping[str, str], content_type: str = ""
) -> ApiRequest | None:
    """Authorization attributes of a resource request; ``None`` for non-resource URLs."""
    parts = [unquote(part) for part in urlsplit(path).path.strip("/").split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None  # discovery of a group version
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    plural, name = rest[0], rest[1] if len(rest) > 1 else None
    resource = "/".join([plural, *rest[2:]])
    method = method.upper()
    verbs: tuple[str, ...]
    if method == "GET":
        verbs = (
            ("watch",) if query.get("watch") in {"true", "1"} else ("get",) if name else ("list",)
        )
    elif method == "POST":
        verbs = ("create",)
    elif method == "PATCH":
        verbs = ("patch", "create") if content_type.startswith(APPLY_CONTENT_TYPE) else ("patch",)
    elif method == "PUT":
        verbs = ("update",)
    elif method == "DELETE":
        verbs = ("delete",) if name else ("deletecollection",)
    else:
        return None
    return ApiRequest(verbs, group, resource, namespace, name)


def covered(request: ApiRequest, permissions: Iterable[Permission]) -> bool:
    """Whether ``permissions`` allow every verb ``request`` needs."""
    granted = list(permissions)
    return all(
        any(permission.allows(verb, request.api_group, request.resource) for permission in granted)
        for verb in request.verbs
    )


# ---------------------------------------------------------------------------------------------
# The connection
# ---------------------------------------------------------------------------------------------


class RequestStats:
    """Counts of the requests sent through the connection (Kopf's and Ferry's)."""

    def __init__(self, keep: int = 10_000) -> None:
        self.total = 0
        self.writes = 0
        self.by_verb: collections.Counter[str] = collections.Counter()
        self.recent: collections.deque[tuple[str, str, str]] = collections.deque(maxlen=keep)

    def record(self, method: str, url: str, content_type: str) -> None:
        """Count one request."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        described = describe_request(method, parts.path, query, content_type)
        self.total += 1
        if method.upper() not in {"GET", "HEAD"}:
            self.writes += 1
        verb = described.verbs[0] if described else "other"
        self.by_verb[f"{verb} {described.resource if described else parts.path}"] += 1
        self.recent.append((method.upper(), parts.path, content_type))

    def snapshot(self) -> dict[str, Any]:
        """The counters, for logs and the benchmark."""
        return {"total": self.total, "writes": self.writes, "by_verb": dict(self.by_verb)}


Login = Callable[[], kopf.ConnectionInfo]


def _has_credentials(info: kopf.ConnectionInfo) -> bool:
    return bool(
        info.token or info.password or info.certificate_path or info.certificate_data or info.scheme
    )


def default_login() -> kopf.ConnectionInfo:
    """Credentials of the in-cluster ServiceAccount, else of the current kubeconfig context.

    Uses Kopf's own minimal loaders (no Kubernetes client library is imported, which keeps the
    operator small). Only a kubeconfig whose user needs an exec plugin or auth provider falls
    back to the official client library to run it.
    """
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings)
    if info is None:
        info = kopf.login_with_kubeconfig(settings=settings)
    if info is not None and not _has_credentials(info):
        info = kopf.login_via_client(logger=logger, settings=settings) or info
    if info is None:
        raise kopf.LoginError("no in-cluster service account and no kubeconfig to log in with")
    return info


class Connection:
    """The process's one authenticated HTTP session to the API server."""

    def __init__(
        self,
        login: Login = default_login,
        *,
        request_timeout_s: float = 30.0,
        refresh_interval_s: float = 60.0,
    ) -> None:
        self._login = login
        self._refresh_interval_s = refresh_interval_s
        self.request_timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self.stats = RequestStats()
        self._info: kopf.ConnectionInfo | None = None
        self._loaded_at = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._refreshing = asyncio.Lock()

    @property
    def info(self) -> kopf.ConnectionInfo:
        """Current credentials."""
        if self._info is None:
            raise RuntimeError("the connection is not open")
        return self._info

    @property
    def server(self) -> str:
        """API server base URL."""
        return self.info.server.rstrip("/")

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session (opened on first use)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, ssl=self.info.as_ssl_context()),
                headers={"User-Agent": USER_AGENT},
                middlewares=(self._middleware,),
                trust_env=self.info.trust_env,
            )
        return self._session

    async def open(self) -> None:
        """Log in (blocking file reads happen in a thread)."""
        self._info = await asyncio.to_thread(self._login)
        self._loaded_at = time.monotonic()

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def kopf_session(self) -> kopf.AiohttpSession:
        """The shared session, for Kopf's login handler."""
        return kopf.AiohttpSession(
            aiohttp_session=self.session,
            server=self.server,
            default_namespace=self.info.default_namespace,
        )

    async def _refresh(self, *, force: bool) -> None:
        async with self._refreshing:
            if not force and time.monotonic() - self._loaded_at < self._refresh_interval_s:
                return
            try:
                self._info = await asyncio.to_thread(self._login)
            except Exception as error:  # keep the old credentials; the request will tell
                logger.warning("re-reading credentials failed: %s", error)
            self._loaded_at = time.monotonic()

    async def _middleware(
        self,
        request: aiohttp.ClientRequest,
        handler: Callable[[aiohttp.ClientRequest], Any],
    ) -> aiohttp.ClientResponse:
        if time.monotonic() - self._loaded_at >= self._refresh_interval_s:
            await self._refresh(force=False)
        content_type = request.headers.get("Content-Type", "")
        self.stats.record(request.method, str(request.url), content_type)
        request.headers.update(self.info.as_http_headers())
        response: aiohttp.ClientResponse = await handler(request)
        if response.status == 401:
            # Rotated token, expired exec credentials: log in again, then try once more.
            await self._refresh(force=True)
            response.release()
            self.stats.record(request.method, str(request.url), content_type)
            request.headers.update(self.info.as_http_headers())
            response = await handler(request)
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One API request; the JSON answer, or :class:`ApiError`."""
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        try:
            async with self.session.request(
                method,
                self.server + path,
                params=dict(params or {}),
                data=data,
                headers=headers,
                timeout=self.request_timeout,
            ) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise _api_error(method, path, response.status, response.headers, raw)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ApiError(
                0, str(error) or type(error).__name__, method=method, path=path
            ) from None
        except RuntimeError as error:  # aiohttp: "Session is closed"
            raise ApiError(0, str(error), method=method, path=path) from None
        if not raw:
            return {}
        decoded = json.loads(raw)
        return decoded if isinstance(decoded, dict) else {}


def _api_error(
    method: str, path: str, status: int, headers: Mapping[str, str], raw: bytes
) -> ApiError:
    try:
        decoded = json.loads(raw) if raw else {}
    except ValueError:
        decoded = {}
    payload = decoded if isinstance(decoded, dict) else {}
    details = payload.get("details") if isinstance(payload.get("details"), dict) else {}
    retry_after: float | None = None
    header = headers.get("Retry-After")
    if header:
        try:
            retry_after = float(header)
        except ValueError:
            retry_after = None
    if retry_after is None and details and details.get("retryAfterSeconds"):
        retry_after = float(details["retryAfterSeconds"])
    message = str(payload.get("message") or raw[:500].decode(errors="replace") or status)
    return ApiError(
        status,
        message,
        reason=str(payload.get("reason") or ""),
        method=method,
        path=path,
        retry_after=retry_after,
    )


# ---------------------------------------------------------------------------------------------
# Ferry's writes
# ---------------------------------------------------------------------------------------------


class Cluster:
    """Ferry's API operations (the :class:`ferry_operator.reconcile.Writer` protocol)."""

    def __init__(self, connection: Connection, *, discovery_ttl_s: float = 60.0) -> None:
        self.connection = connection
        self.discovery_ttl_s = discovery_ttl_s
        self._served: dict[str, tuple[float, frozenset[str]]] = {}

    async def serves(self, api_version: str, plural: str) -> bool:
        """Whether the API server serves ``plural`` in ``api_version`` (discovery, remembered
        for a minute: an optional API such as the Gateway API may be installed later)."""
        now = time.monotonic()
        known = self._served.get(api_version)
        if known is None or now - known[0] > self.discovery_ttl_s:
            try:
                document = await self.connection.request("GET", f"/apis/{api_version}")
                names = frozenset(str(item.get("name")) for item in document.get("resources") or ())
            except ApiError as error:
                if not error.not_found:
                    raise
                names = frozenset()
            known = self._served[api_version] = (now, names)
        return plural in known[1]

    async def apply(
        self, manifest: Mapping[str, Any], field_manager: str = constants.FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply one child as ``field_manager``, taking over conflicting fields."""
        resource = CHILD_RESOURCES[str(manifest["kind"])]
        metadata = manifest["metadata"]
        return await self.connection.request(
            "PATCH",
            resource.path(metadata["namespace"], metadata["name"]),
            params={"fieldManager": field_manager, "force": "true"},
            body=manifest,
            content_type=APPLY_CONTENT_TYPE,
        )

    async def delete(self, child: ChildRef) -> None:
        """Delete exactly ``child`` (uid precondition); an already missing one is fine."""
        resource = CHILD_RESOURCES[child.kind]
        try:
            await self.connection.request(
                "DELETE",
                resource.path(child.namespace, child.name),
                body={
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "propagationPolicy": "Background",
                    "preconditions": {"uid": child.uid},
                },
            )
        except ApiError as error:
            if not error.not_found:
                raise

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch ``status`` into the ModelDeployment's status subresource."""
        return await self.connection.request(
            "PATCH",
            MODEL_DEPLOYMENTS.path(namespace, name) + "/status",
            body={"status": dict(status)},
            content_type=MERGE_PATCH_CONTENT_TYPE,
        )

    async def post_event(self, event: Mapping[str, Any]) -> None:
        """Create a core/v1 Event."""
        namespace = event["metadata"]["namespace"]
        await self.connection.request("POST", EVENTS.path(namespace), body=event)

    async def ensure_peering(self, name: str, namespaces: Iterable[str] | None) -> None:
        """Create Kopf's peering object(s) when missing (all namespaces: one cluster object)."""
        targets: list[tuple[Resource, str | None]] = (
            [(CLUSTER_PEERINGS, None)]
            if namespaces is None
            else [(NAMESPACED_PEERINGS, namespace) for namespace in namespaces]
        )
        for resource, namespace in targets:
            kind = "ClusterKopfPeering" if namespace is None else "KopfPeering"
            metadata: dict[str, Any] = {"name": name}
            if namespace is not None:
                metadata["namespace"] = namespace
            try:
                await self.connection.request(
                    "POST",
                    resource.path(namespace),
                    body={"apiVersion": f"{PEERING_GROUP}/v1", "kind": kind, "metadata": metadata},
                )
                logger.info("created %s %r", kind, name)
            except ApiError as error:
                if error.status != 409:  # 409: it exists, as it should
                    raise
