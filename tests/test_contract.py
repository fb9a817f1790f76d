"""The operator ↔ runtime contract (docs/contracts.md), checked from both sides.

The two packages never import each other; this test imports both. Every ``FERRY_RUNTIME_*``
variable the operator renders must be a field of ``ferry_runtime.settings.RuntimeSettings``
and load into it with the spec's values; every rendered port must be the one the runtime
serves on; every probe path must be a GET route of the runtime's REST app, answering 503 until
the model is ready and 200 after; the container commands must be ``ferry-runtime``
subcommands.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from ferry_operator import constants
from ferry_operator.render import RenderOptions, render_children
from ferry_operator.render.env import ENV_PREFIX
from ferry_operator.spec import ModelDeployment, parse_model_deployment
from ferry_runtime.settings import RuntimeSettings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
PROBE_KINDS = ("startupProbe", "readinessProbe", "livenessProbe")

# The spec at the edges of what the CRD accepts: the runtime must accept all of it.
EXTREME_SPEC: dict[str, Any] = {
    "model": {
        "uri": "https://models.example.com/m/model.tar.gz",
        "sha256": "f" * 64,
        "name": "M" + "a" * 127,
        "version": "v" * 64,
    },
    "runtime": {
        "device": "cuda",
        "threads": 256,
        "frontendProcesses": 64,
        "protocols": {"httpPort": 65535, "grpcPort": 1024},
    },
    "resources": {"gpu": {"count": 16}},
    "batching": {
        "enabled": False,
        "maxBatchSize": 4096,
        "maxQueueDelayMs": 10000,
        "preferredBatchSizes": list(range(4081, 4097)),
        "maxQueueSize": 1_000_000,
    },
}


def model_deployment(spec: dict[str, Any], name: str = "contract") -> ModelDeployment:
    return parse_model_deployment(
        {
            "apiVersion": constants.API_VERSION,
            "kind": constants.KIND,
            "metadata": {"name": name, "namespace": "default", "uid": "u-1"},
            "spec": spec,
        }
    )


def all_cases() -> dict[str, ModelDeployment]:
    cases = {
        path.stem: parse_model_deployment(yaml.safe_load(path.read_text(encoding="utf-8")))
        for path in EXAMPLES
    }
    cases["extreme"] = model_deployment(EXTREME_SPEC)
    cases["minimal"] = model_deployment({"model": {"uri": "s3://b/k/"}})
    return cases


CASES = all_cases()


def pod_of(md: ModelDeployment) -> dict[str, Any]:
    deployment = render_children(md, RenderOptions(require_owner=False))[0]
    assert deployment["kind"] == "Deployment"
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def server_of(md: ModelDeployment) -> dict[str, Any]:
    (container,) = pod_of(md)["containers"]
    return container


def runtime_env(container: dict[str, Any]) -> dict[str, str]:
    return {
        var["name"]: var["value"]
        for var in container.get("env", [])
        if var["name"].startswith(ENV_PREFIX)
    }


def settings_env_names() -> set[str]:
    prefix = RuntimeSettings.model_config.get("env_prefix", "")
    assert prefix == ENV_PREFIX, "operator and runtime disagree on the env prefix"
    return {f"{prefix}{name}".upper() for name in RuntimeSettings.model_fields}


def load_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> RuntimeSettings:
    """RuntimeSettings as the runtime builds them at start-up, from exactly ``env``."""
    import os

    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return RuntimeSettings()


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rendered_runtime_variable_is_a_runtime_setting(case: str) -> None:
    known = settings_env_names()
    pod = pod_of(CASES[case])
    for container in [*pod["containers"], *pod.get("initContainers", [])]:
        unknown = set(runtime_env(container)) - known
        assert not unknown, f"{container['name']} sets variables the runtime ignores: {unknown}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_env_loads_into_runtime_settings_with_the_spec_values(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    md = CASES[case]
    settings = load_settings(runtime_env(server_of(md)), monkeypatch)
    spec = md.spec
    assert settings.model_dir == Path(constants.MODEL_MOUNT_PATH)
    assert settings.model_name == md.served_name
    assert settings.model_version == spec.model.version
    assert settings.model_format == spec.model.format
    assert settings.model_sha256 == spec.model.sha256
    assert settings.device == spec.runtime.device
    assert settings.threads == spec.runtime.threads
    assert settings.frontend_processes == spec.runtime.frontend_processes
    assert settings.http_port == spec.runtime.protocols.http_port
    assert settings.grpc_port == spec.runtime.protocols.grpc_port
    assert settings.batching_enabled is spec.batching.enabled
    assert settings.max_batch_size == spec.batching.max_batch_size
    assert settings.max_queue_delay_ms == spec.batching.max_queue_delay_ms
    assert settings.preferred_batch_sizes == sorted(set(spec.batching.preferred_batch_sizes))
    assert settings.max_queue_size == spec.batching.max_queue_size
    assert settings.drain_timeout_s == RenderOptions().drain_timeout_seconds


def test_drain_fits_in_the_grace_period() -> None:
    options = RenderOptions()
    pod = pod_of(CASES["minimal"])
    drain = float(runtime_env(server_of(CASES["minimal"]))[f"{ENV_PREFIX}DRAIN_TIMEOUT_S"])
    pre_stop = server_of(CASES["minimal"])["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop == options.pre_stop_delay_seconds
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain


# ---------------------------------------------------------------------------------------------
# Ports and probes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_container_ports_are_the_ports_the_runtime_binds(case: str) -> None:
    server = server_of(CASES[case])
    ports = {port["name"]: port["containerPort"] for port in server["ports"]}
    env = runtime_env(server)
    assert ports == {
        "http": int(env[f"{ENV_PREFIX}HTTP_PORT"]),
        "grpc": int(env[f"{ENV_PREFIX}GRPC_PORT"]),
    }
    for kind in PROBE_KINDS:
        assert server[kind]["httpGet"]["port"] == "http", "probes go to the REST port"


def test_default_ports_equal_the_runtime_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings({}, monkeypatch)
    server = server_of(CASES["minimal"])
    ports = {port["name"]: port["containerPort"] for port in server["ports"]}
    assert ports == {"http": defaults.http_port, "grpc": defaults.grpc_port}
    assert defaults.http_port == constants.DEFAULT_HTTP_PORT
    assert defaults.grpc_port == constants.DEFAULT_GRPC_PORT
    assert Path(constants.MODEL_MOUNT_PATH) == defaults.model_dir


def _runtime_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as error:  # pragma: no cover - fails loudly until the runtime lands
        pytest.fail(f"{name} is missing ({error}); the operator's pods rely on it")


def _rest_app() -> tuple[Any, Any]:
    """The runtime's real REST app over a real DataPlane, and that DataPlane."""
    rest = _runtime_module("ferry_runtime.transports.rest")
    dataplane_module = _runtime_module("ferry_runtime.dataplane")
    types = _runtime_module("ferry_runtime.protocol.types")
    signature = types.ModelSignature(
        name="contract",
        version="1",
        platform="pytorch_libtorch",
        inputs=(types.TensorSpec("INPUT__0", "FP32", (4,)),),
        outputs=(types.TensorSpec("OUTPUT__0", "FP32", (2,)),),
        max_batch_size=8,
    )
    dataplane = dataplane_module.DataPlane(signature)
    return rest.build_app(dataplane, max_request_bytes=1 << 20), dataplane


def _rendered_http_paths() -> set[str]:
    paths = set()
    for md in CASES.values():
        deployment = render_children(md, RenderOptions(require_owner=False))[0]
        server = deployment["spec"]["template"]["spec"]["containers"][0]
        paths |= {server[kind]["httpGet"]["path"] for kind in PROBE_KINDS}
        paths.add(deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
    return paths


def test_probe_and_metrics_paths_are_get_routes_of_the_runtime() -> None:
    app, _ = _rest_app()
    routes = {
        route.path: set(route.methods or ())
        for route in app.routes
        if getattr(route, "path", None) is not None
    }
    for path in _rendered_http_paths():
        assert path in routes, f"the runtime does not serve {path}"
        assert "GET" in routes[path], f"{path} is not a GET route"


async def test_readiness_answers_503_until_the_model_is_ready_and_liveness_200() -> None:
    import httpx

    app, dataplane = _rest_app()
    server = server_of(CASES["minimal"])
    ready_path = server["readinessProbe"]["httpGet"]["path"]
    startup_path = server["startupProbe"]["httpGet"]["path"]
    live_path = server["livenessProbe"]["httpGet"]["path"]

    class Engine:
        alive = True

        async def submit(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
            raise NotImplementedError

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pod") as client:

        async def status(path: str) -> int:
            return (await client.get(path)).status_code

        assert await status(live_path) == 200
        assert await status(ready_path) == 503
        assert await status(startup_path) == 503
        dataplane.attach(Engine())
        dataplane.set_ready(True)
        assert await status(ready_path) == 200
        assert await status(startup_path) == 200
        dataplane.set_ready(False)  # draining: out of the endpoints, still alive
        assert await status(ready_path) == 503
        assert await status(live_path) == 200


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def test_the_server_command_is_a_ferry_runtime_subcommand(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli = _runtime_module("ferry_runtime.cli")
    server = server_of(CASES["minimal"])
    assert server["command"][0] == "ferry-runtime"
    with pytest.raises(SystemExit) as exited:
        cli.main([*server["command"][1:], "--help"])
    assert exited.value.code == 0, f"{server['command']} is not a ferry-runtime command"
    assert "usage: ferry-runtime serve" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["extreme", "minimal", "modeldeployment-s3"])
def test_the_fetch_command_runs_the_runtime_fetcher_with_the_spec(
    case: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cli = _runtime_module("ferry_runtime.cli")
    fetch_package = _runtime_module("ferry_runtime.fetch")
    md = CASES[case]
    (fetch,) = pod_of(md)["initContainers"]
    calls: list[tuple[Any, ...]] = []

    def fake_fetch_model(uri: str, dest: Path, *, sha256: str | None = None) -> Path:
        calls.append((uri, Path(dest), sha256))
        return tmp_path

    monkeypatch.setattr(fetch_package, "fetch_model", fake_fetch_model)
    assert fetch["command"][0] == "ferry-runtime"
    assert cli.main(fetch["command"][1:]) == 0
    assert calls == [(md.spec.model.uri, Path(constants.MODEL_MOUNT_PATH), md.spec.model.sha256)]


def test_the_load_failure_exit_status_is_the_one_the_operator_reads() -> None:
    from ferry_runtime.termination import EXIT_MODEL_LOAD_FAILED

    assert EXIT_MODEL_LOAD_FAILED == constants.RUNTIME_EXIT_MODEL_LOAD_FAILED


FORMATS = ["auto", "torchscript", "exported-program", "aot-inductor"]


@pytest.mark.parametrize("model_format", FORMATS)
def test_every_model_format_the_crd_accepts_is_one_the_runtime_loads(model_format: str) -> None:
    from ferry_runtime.model.loader import SUPPORTED_FORMATS

    assert model_format in SUPPORTED_FORMATS
    assert RuntimeSettings(model_format=model_format).model_format == model_format
