"""Rendering rules: one ModelDeployment → Deployment, Service, HPA, PDB (DESIGN §3)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from ferry_operator import constants
from ferry_operator.render import (
    CHILD_KINDS,
    RenderError,
    RenderOptions,
    child_name,
    render_children,
    render_warnings,
)
from ferry_operator.render.labels import child_labels, selector_labels, selector_string
from ferry_operator.render.model_delivery import PvcLocation, parse_pvc_uri
from ferry_operator.spec import ModelDeployment, parse_model_deployment

UID = "0b8a3c1e-6f0d-4c1e-9a57-2f1d3e4b5a69"
OPTIONS = RenderOptions(runtime_image="registry.test/ferry-runtime:dev")
HTTP_URI = "https://models.example.com/mlp/model.tar.gz"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def make_md(
    spec: dict[str, Any] | None = None,
    *,
    name: str = "demo",
    namespace: str = "models",
    uid: str | None = UID,
) -> ModelDeployment:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid is not None:
        metadata["uid"] = uid
    full_spec = {"model": {"uri": HTTP_URI}, **(spec or {})}
    return parse_model_deployment(
        {
            "apiVersion": constants.API_VERSION,
            "kind": constants.KIND,
            "metadata": metadata,
            "spec": full_spec,
        }
    )


def render(spec: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """Children by kind."""
    children = render_children(make_md(spec, **kwargs), OPTIONS)
    by_kind = {child["kind"]: child for child in children}
    assert len(by_kind) == len(children), "one child per kind"
    return by_kind


def pod_spec(children: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = children["Deployment"]["spec"]["template"]["spec"]
    return spec


def server(children: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = pod_spec(children)["containers"]
    assert container["name"] == "model-server"
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {var["name"]: var.get("value", "") for var in container.get("env", [])}


# ---------------------------------------------------------------------------------------------
# Children, labels, owner
# ---------------------------------------------------------------------------------------------


def test_minimal_spec_renders_deployment_and_service_in_order() -> None:
    children = render_children(make_md(), OPTIONS)
    assert [(c["apiVersion"], c["kind"]) for c in children] == [
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
    ]


def test_full_spec_renders_every_kind_in_child_kinds_order() -> None:
    children = render_children(
        make_md(
            {
                "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
                "rollout": {"gateway": {"name": "edge"}},
            }
        ),
        OPTIONS,
    )
    rendered = [(c["apiVersion"], c["kind"]) for c in children]
    # The Service of the revision (a route backend) follows the HPA and PDB.
    kinds = [(kind.api_version, kind.kind) for kind in CHILD_KINDS]
    assert rendered == [*kinds[:4], ("v1", "Service"), *kinds[4:]]


def test_child_kinds_are_distinct_and_plural() -> None:
    assert len({(k.api_version, k.kind) for k in CHILD_KINDS}) == len(CHILD_KINDS)
    for kind in CHILD_KINDS:
        api_version, name, plural = kind  # unpacks as a tuple too
        assert plural == name.lower() + "s"
        assert kind.version == api_version.rpartition("/")[2]
    assert {k.group for k in CHILD_KINDS} == {
        "apps",
        "",
        "autoscaling",
        "policy",
        "gateway.networking.k8s.io",
    }


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"replicas": 3},
        {"autoscaling": {"minReplicas": 1, "maxReplicas": 5}},
        {"service": {"annotations": {"example.com/x": "y"}}},
    ],
)
def test_every_child_is_labelled_owned_and_free_of_kopf_annotations(spec: dict[str, Any]) -> None:
    md = make_md(spec, name="demo")
    for child in render_children(md, OPTIONS):
        meta = child["metadata"]
        assert meta["name"] == "demo"
        assert meta["namespace"] == "models"
        revision = {}
        if child["kind"] == "Deployment":  # the revision it runs (see test_render_revisions)
            revision = {constants.LABEL_REVISION: meta["labels"][constants.LABEL_REVISION]}
        assert meta["labels"] == {
            constants.LABEL_NAME: constants.APP_NAME,
            constants.LABEL_INSTANCE: "demo",
            constants.LABEL_MANAGED_BY: "ferry",
            constants.LABEL_COMPONENT: constants.COMPONENT,
            constants.LABEL_MODEL_DEPLOYMENT: "demo",
            **revision,
        }
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "serving.ferry.dev/v1alpha1",
                "kind": "ModelDeployment",
                "name": "demo",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        ferry_annotations = {constants.TEMPLATE_ANNOTATION}
        for key in set(meta.get("annotations", {})) - ferry_annotations:
            assert not key.startswith(("kopf.", constants.KOPF_ANNOTATIONS_PREFIX)), key
        if child["kind"] == "Deployment":
            assert set(meta["annotations"]) == ferry_annotations
        elif child["kind"] != "Service":
            assert "annotations" not in meta


def test_selectors_are_one_stable_subset_of_the_pod_labels() -> None:
    md = make_md({"replicas": 2, "autoscaling": {"maxReplicas": 3}})
    children = {c["kind"]: c for c in render_children(md, OPTIONS)}
    selector = selector_labels(md)
    template_labels = children["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert template_labels == {
        **child_labels(md),
        constants.LABEL_REVISION: children["Deployment"]["metadata"]["labels"][
            constants.LABEL_REVISION
        ],
    }
    assert selector.items() <= template_labels.items()
    assert constants.LABEL_MANAGED_BY not in selector  # selectors stay minimal and stable
    assert children["Deployment"]["spec"]["selector"] == {"matchLabels": selector}
    assert children["Service"]["spec"]["selector"] == selector
    assert children["PodDisruptionBudget"]["spec"]["selector"] == {"matchLabels": selector}


def test_selector_string_is_sorted_key_value_pairs() -> None:
    md = make_md(name="demo")
    text = selector_string(md)
    pairs = dict(item.split("=", 1) for item in text.split(","))
    assert pairs == selector_labels(md)
    assert text == ",".join(sorted(text.split(",")))


def test_without_uid_rendering_refuses_unless_owner_is_optional() -> None:
    md = make_md(uid=None)
    with pytest.raises(RenderError, match=r"^metadata\.uid: ") as caught:
        render_children(md, OPTIONS)
    assert caught.value.field == "metadata.uid"
    children = render_children(md, RenderOptions(require_owner=False))
    assert all("ownerReferences" not in child["metadata"] for child in children)


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


def test_short_dns_label_names_are_kept() -> None:
    assert child_name(make_md(name="resnet50-v2")) == "resnet50-v2"


@pytest.mark.parametrize(
    "name",
    ["model.v2", "1model", "a" * 64, "b" * 253, "x." * 100 + "y", "9" * 63],
)
def test_awkward_names_become_dns_1035_labels_within_63_characters(name: str) -> None:
    md = make_md(name=name)
    derived = child_name(md)
    assert len(derived) <= 63
    assert DNS_1035.match(derived), derived
    for value in selector_labels(md).values():
        assert len(value) <= 63
        assert LABEL_VALUE.match(value), value
    assert derived == child_name(make_md(name=name)), "deterministic"


def test_names_that_truncate_alike_stay_distinct() -> None:
    first, second = "m" * 70 + "-first", "m" * 70 + "-second"
    assert child_name(make_md(name=first)) != child_name(make_md(name=second))
    assert selector_labels(make_md(name=first)) != selector_labels(make_md(name=second))
    dotted, dashed = make_md(name="a.b"), make_md(name="a-b")
    assert child_name(dotted) != child_name(dashed)


def test_every_child_uses_the_shared_child_name() -> None:
    md = make_md({"autoscaling": {"maxReplicas": 3}}, name="model.with.dots")
    children = render_children(md, OPTIONS)
    assert {child["metadata"]["name"] for child in children} == {child_name(md)}
    hpa = children[2]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": child_name(md),
    }


# ---------------------------------------------------------------------------------------------
# Replicas, autoscaling, disruption budget, rollout
# ---------------------------------------------------------------------------------------------


def test_replicas_are_rendered_without_autoscaling() -> None:
    children = render({"replicas": 3})
    assert children["Deployment"]["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in children


def test_autoscaling_leaves_replicas_to_the_hpa() -> None:
    children = render(
        {
            "replicas": 7,
            "autoscaling": {
                "minReplicas": 2,
                "maxReplicas": 9,
                "targetCpuUtilizationPercentage": 65,
            },
            "resources": {"requests": {"cpu": "1"}},
        }
    )
    assert "replicas" not in children["Deployment"]["spec"]
    hpa = children["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["maxReplicas"] == 9
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 65},
            },
        }
    ]


@pytest.mark.parametrize(
    ("spec", "expect_pdb"),
    [
        ({"replicas": 0}, False),
        ({"replicas": 1}, False),
        ({"replicas": 2}, True),
        ({"autoscaling": {"minReplicas": 1, "maxReplicas": 1}}, False),
        ({"replicas": 5, "autoscaling": {"minReplicas": 1, "maxReplicas": 1}}, False),
        ({"autoscaling": {"minReplicas": 1, "maxReplicas": 2}}, True),
    ],
)
def test_pdb_only_when_more_than_one_replica_can_run(
    spec: dict[str, Any], expect_pdb: bool
) -> None:
    children = render(spec)
    assert ("PodDisruptionBudget" in children) is expect_pdb
    if expect_pdb:
        pdb = children["PodDisruptionBudget"]
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["maxUnavailable"] == 1
        assert "minAvailable" not in pdb["spec"]


def test_rollout_settings_become_the_rolling_update_strategy() -> None:
    strategy = render({"rollout": {"maxSurge": 2, "maxUnavailable": "10%"}})["Deployment"]["spec"][
        "strategy"
    ]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 2, "maxUnavailable": "10%"},
    }


@pytest.mark.parametrize(("surge", "unavailable"), [(0, 0), ("0%", 0), (0, "0%")])
def test_a_rollout_that_cannot_progress_is_a_render_error(
    surge: int | str, unavailable: int | str
) -> None:
    with pytest.raises(RenderError, match=r"^spec\.rollout: .*both be 0"):
        render({"rollout": {"maxSurge": surge, "maxUnavailable": unavailable}})


def test_deployment_history_and_progress_deadline_come_from_options() -> None:
    options = RenderOptions(revision_history_limit=2, progress_deadline_seconds=900)
    deployment = render_children(make_md(), options)[0]
    assert deployment["spec"]["revisionHistoryLimit"] == 2
    assert deployment["spec"]["progressDeadlineSeconds"] == 900


def test_warnings_name_the_fields() -> None:
    assert render_warnings(make_md()) == []
    no_cpu = render_warnings(make_md({"autoscaling": {"maxReplicas": 3}}))
    assert len(no_cpu) == 1
    assert no_cpu[0].startswith("spec.autoscaling: spec.resources.requests.cpu")
    with_cpu = make_md(
        {"autoscaling": {"maxReplicas": 3}, "resources": {"requests": {"cpu": "500m"}}}
    )
    assert render_warnings(with_cpu) == []
    ignored = make_md(
        {
            "replicas": 4,
            "autoscaling": {"maxReplicas": 3},
            "resources": {"requests": {"cpu": "1"}},
        }
    )
    assert [w.split(" ", 1)[0] for w in render_warnings(ignored)] == ["spec.replicas"]


# ---------------------------------------------------------------------------------------------
# The model server container
# ---------------------------------------------------------------------------------------------


def test_runtime_env_carries_the_spec() -> None:
    sha = "a" * 64
    md = make_md(
        {
            "model": {
                "uri": HTTP_URI,
                "sha256": sha,
                "name": "served",
                "version": "7",
                "format": "aot-inductor",
            },
            "runtime": {"device": "cpu", "threads": 3, "frontendProcesses": 4},
            "batching": {
                "enabled": False,
                "maxBatchSize": 64,
                "maxQueueDelayMs": 12,
                "preferredBatchSizes": [32, 8, 16],
                "maxQueueSize": 99,
            },
        }
    )
    options = RenderOptions(drain_timeout_seconds=17)
    (deployment, *_) = render_children(md, options)
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    assert {k: v for k, v in env.items() if k.startswith("FERRY_RUNTIME_")} == {
        "FERRY_RUNTIME_MODEL_DIR": "/models",
        "FERRY_RUNTIME_MODEL_NAME": "served",
        "FERRY_RUNTIME_MODEL_VERSION": "7",
        "FERRY_RUNTIME_MODEL_FORMAT": "aot-inductor",
        "FERRY_RUNTIME_MODEL_SHA256": sha,
        "FERRY_RUNTIME_DEVICE": "cpu",
        "FERRY_RUNTIME_THREADS": "3",
        "FERRY_RUNTIME_FRONTEND_PROCESSES": "4",
        "FERRY_RUNTIME_HTTP_PORT": "8080",
        "FERRY_RUNTIME_GRPC_PORT": "8081",
        "FERRY_RUNTIME_BATCHING_ENABLED": "false",
        "FERRY_RUNTIME_MAX_BATCH_SIZE": "64",
        "FERRY_RUNTIME_MAX_QUEUE_DELAY_MS": "12",
        # Sorted (the API refuses repeats: the list is a set).
        "FERRY_RUNTIME_PREFERRED_BATCH_SIZES": "[8, 16, 32]",
        "FERRY_RUNTIME_MAX_QUEUE_SIZE": "99",
        "FERRY_RUNTIME_DRAIN_TIMEOUT_S": "17",
    }
    assert json.loads(env["FERRY_RUNTIME_PREFERRED_BATCH_SIZES"]) == [8, 16, 32]


def test_served_name_defaults_to_metadata_name_and_sha_is_optional() -> None:
    env = env_of(server(render(name="fraud-detector")))
    assert env["FERRY_RUNTIME_MODEL_NAME"] == "fraud-detector"
    assert "FERRY_RUNTIME_MODEL_SHA256" not in env


def test_frontend_processes_are_rendered_only_when_set() -> None:
    """Unset is the runtime's default (0: one process); leaving the variable out keeps
    existing pod templates unchanged across an operator upgrade."""
    env = env_of(server(render()))
    assert "FERRY_RUNTIME_FRONTEND_PROCESSES" not in env


def test_user_env_follows_ferry_env_in_order_and_may_override_home() -> None:
    container = server(
        render(
            {
                "runtime": {
                    "env": [
                        {"name": "ZETA", "value": "1"},
                        {
                            "name": "ALPHA",
                            "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                        },
                        {"name": "HOME", "value": "/scratch"},
                    ]
                }
            }
        )
    )
    names = [var["name"] for var in container["env"]]
    assert names[-3:] == ["ZETA", "ALPHA", "HOME"]
    assert names.count("HOME") == 1, "env is keyed by name for server-side apply"
    ferry_names = names[:-3]
    assert ferry_names == sorted(ferry_names)
    assert container["env"][-2] == {
        "name": "ALPHA",
        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
    }
    assert env_of(container)["HOME"] == "/scratch"
    assert env_of(server(render()))["HOME"] == "/tmp", "writable HOME on a read-only root"


def test_ports_probes_and_graceful_shutdown() -> None:
    options = RenderOptions(
        pre_stop_delay_seconds=7, drain_timeout_seconds=20, startup_timeout_seconds=300
    )
    md = make_md({"runtime": {"protocols": {"httpPort": 9000, "grpcPort": 9001}}})
    deployment = render_children(md, options)[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["ports"] == [
        {"name": "http", "containerPort": 9000, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 9001, "protocol": "TCP"},
    ]
    startup, ready, live = (
        container["startupProbe"],
        container["readinessProbe"],
        container["livenessProbe"],
    )
    for probe, path in ((startup, "/v2/health/ready"), (ready, "/v2/health/ready")):
        assert probe["httpGet"] == {"path": path, "port": "http", "scheme": "HTTP"}
    assert live["httpGet"]["path"] == "/v2/health/live"
    # The startup probe gives the model the whole startup budget to load and warm up.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 7}}}
    assert env_of(container)["FERRY_RUNTIME_DRAIN_TIMEOUT_S"] == "20"
    assert pod["terminationGracePeriodSeconds"] > 7 + 20
    assert container["command"] == ["ferry-runtime", "serve"]
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == (
        "9000"
    )


def test_image_pull_policy_service_account_and_token() -> None:
    default_pod = pod_spec(render())
    assert default_pod["automountServiceAccountToken"] is False
    assert default_pod["enableServiceLinks"] is False
    assert "serviceAccountName" not in default_pod
    assert server(render())["image"] == OPTIONS.runtime_image
    assert "imagePullPolicy" not in server(render())

    children = render(
        {
            "runtime": {
                "image": "registry.test/custom:1",
                "imagePullPolicy": "Always",
                "serviceAccountName": "model-reader",
                "automountServiceAccountToken": True,
            }
        }
    )
    pod = pod_spec(children)
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == "model-reader"
    for container in [*pod["containers"], *pod["initContainers"]]:
        assert container["image"] == "registry.test/custom:1"
        assert container["imagePullPolicy"] == "Always"


# ---------------------------------------------------------------------------------------------
# Resources, GPUs, scheduling
# ---------------------------------------------------------------------------------------------


def test_resources_are_quantity_strings_and_the_gpu_goes_into_limits_and_requests() -> None:
    children = render(
        {
            "runtime": {"device": "cuda"},
            "resources": {
                "requests": {"memory": "4Gi", "cpu": 2},
                "limits": {"memory": "8Gi"},
                "gpu": {"count": 2},
            },
        }
    )
    assert server(children)["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "2"},
        "limits": {"memory": "8Gi", "nvidia.com/gpu": "2"},
    }
    (fetch,) = pod_spec(children)["initContainers"]
    assert fetch["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"memory": "8Gi"},
    }, "the fetcher never holds the GPU"
    assert pod_spec(children)["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_mig_profiles_are_resource_names() -> None:
    children = render({"resources": {"gpu": {"count": 1, "resource": "nvidia.com/mig-1g.10gb"}}})
    resources = server(children)["resources"]
    assert resources["limits"] == {"nvidia.com/mig-1g.10gb": "1"}
    assert resources["requests"] == {"nvidia.com/mig-1g.10gb": "1"}
    assert "nvidia.com/gpu" not in resources["limits"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec(
        children
    )["tolerations"]


def test_cpu_only_pods_have_no_gpu_and_no_toleration() -> None:
    children = render({"resources": {"requests": {"cpu": "1"}}})
    assert "tolerations" not in pod_spec(children)
    assert server(children)["resources"] == {"requests": {"cpu": "1"}}
    assert "resources" not in server(render()) or server(render())["resources"] == {}


@pytest.mark.parametrize(
    "user",
    [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists"},
        {"operator": "Exists"},
    ],
)
def test_gpu_toleration_is_not_duplicated(user: dict[str, Any]) -> None:
    children = render({"resources": {"gpu": {}}, "scheduling": {"tolerations": [user, user]}})
    assert pod_spec(children)["tolerations"] == [user]


def test_user_tolerations_are_kept_before_the_gpu_one() -> None:
    user = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}
    other = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}
    children = render({"resources": {"gpu": {}}, "scheduling": {"tolerations": [other, user]}})
    assert pod_spec(children)["tolerations"] == [
        other,
        user,
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]


def test_scheduling_fields_pass_through() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ml"]}]}
                ]
            }
        }
    }
    given_selector = {"matchLabels": {"team": "search"}}
    pod = pod_spec(
        render(
            {
                "scheduling": {
                    "nodeSelector": {"zone": "b", "pool": "ml"},
                    "affinity": affinity,
                    "priorityClassName": "serving-high",
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "DoNotSchedule",
                        },
                        {
                            "maxSkew": 2,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": given_selector,
                        },
                    ],
                }
            }
        )
    )
    assert pod["nodeSelector"] == {"pool": "ml", "zone": "b"}
    assert pod["affinity"] == affinity
    assert pod["priorityClassName"] == "serving-high"
    first, second = pod["topologySpreadConstraints"]
    assert first["labelSelector"] == {"matchLabels": selector_labels(make_md())}
    assert second["labelSelector"] == given_selector


def test_incomplete_topology_spread_is_a_render_error_naming_the_item() -> None:
    with pytest.raises(
        RenderError, match=r"spec\.scheduling\.topologySpreadConstraints\[1\]: .*topologyKey"
    ):
        render(
            {
                "scheduling": {
                    "topologySpreadConstraints": [
                        {"maxSkew": 1, "topologyKey": "z", "whenUnsatisfiable": "DoNotSchedule"},
                        {"maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"},
                    ]
                }
            }
        )


# ---------------------------------------------------------------------------------------------
# Model delivery
# ---------------------------------------------------------------------------------------------


def test_pvc_model_is_mounted_read_only_without_a_fetch() -> None:
    children = render({"model": {"uri": "pvc://model-store/mlp/2/"}})
    pod = pod_spec(children)
    assert "initContainers" not in pod
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["model"] == {
        "name": "model",
        "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True},
    }
    mounts = {mount["name"]: mount for mount in server(children)["volumeMounts"]}
    assert mounts["model"] == {
        "name": "model",
        "mountPath": "/models",
        "subPath": "mlp/2",
        "readOnly": True,
    }
    assert env_of(server(children))["FERRY_RUNTIME_MODEL_DIR"] == "/models"


def test_pvc_root_is_mounted_without_sub_path() -> None:
    mounts = server(render({"model": {"uri": "pvc://models"}}))["volumeMounts"]
    (model,) = [m for m in mounts if m["name"] == "model"]
    assert "subPath" not in model


@pytest.mark.parametrize("uri", ["pvc://models/../etc", "pvc://models/a/../../b"])
def test_a_pvc_path_that_climbs_out_of_the_claim_is_a_render_error(uri: str) -> None:
    with pytest.raises(RenderError, match=r"^spec\.model\.uri: .*'\.\.'") as caught:
        render({"model": {"uri": uri}})
    assert caught.value.reason == "InvalidModelUri"


@pytest.mark.parametrize(
    ("uri", "claim", "path"),
    [
        ("pvc://models", "models", ""),
        ("pvc://models/", "models", ""),
        ("pvc://models//a/./b/", "models", "a/b"),
        ("pvc://store.v2/mlp/2", "store.v2", "mlp/2"),
    ],
)
def test_pvc_uris_split_into_claim_and_normalised_path(uri: str, claim: str, path: str) -> None:
    assert parse_pvc_uri(uri) == PvcLocation(claim=claim, path=path)


@pytest.mark.parametrize("uri", ["pvc://Models/x", "pvc:///x", "pvc://a..b/x", "pvc://-a/x"])
def test_invalid_claim_names_are_refused_even_past_the_schema(uri: str) -> None:
    with pytest.raises(RenderError, match="PersistentVolumeClaim name"):
        parse_pvc_uri(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "https://models.example.com/mlp/model.tar.gz",
        "http://store.svc/mlp/",
        "s3://bucket/mlp/v1/",
        "s3://bucket/mlp.tar.gz",
    ],
)
def test_remote_models_are_fetched_by_an_init_container_into_an_empty_dir(uri: str) -> None:
    sha = "b" * 64
    children = render({"model": {"uri": uri, "sha256": sha}})
    pod = pod_spec(children)
    (fetch,) = pod["initContainers"]
    assert fetch["name"] == "fetch-model"
    assert fetch["image"] == OPTIONS.runtime_image
    assert fetch["command"] == ["ferry-runtime", "fetch", uri, "/models", "--sha256", sha]
    assert env_of(fetch) == {"HOME": "/tmp"}
    assert "envFrom" not in fetch
    assert fetch["securityContext"] == server(children)["securityContext"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["model"] == {"name": "model", "emptyDir": {}}
    fetch_mounts = {m["mountPath"]: m for m in fetch["volumeMounts"]}
    assert fetch_mounts["/models"] == {"name": "model", "mountPath": "/models"}, "writable"
    server_mounts = {m["mountPath"]: m for m in server(children)["volumeMounts"]}
    assert server_mounts["/models"]["readOnly"] is True, "the server only reads the model"
    assert "subPath" not in server_mounts["/models"]


def test_credentials_secret_reaches_the_fetcher_only() -> None:
    children = render({"model": {"uri": "s3://bucket/mlp/", "credentialsSecret": "s3-creds"}})
    (fetch,) = pod_spec(children)["initContainers"]
    assert fetch["command"] == ["ferry-runtime", "fetch", "s3://bucket/mlp/", "/models"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "envFrom" not in server(children), "credentials stay out of the serving container"


def test_file_uris_are_refused_in_a_cluster() -> None:
    with pytest.raises(RenderError) as caught:
        render({"model": {"uri": "file:///srv/models/mlp"}})
    assert caught.value.field == "spec.model.uri"
    assert caught.value.reason == "UnsupportedModelUri"
    assert "local mode only" in str(caught.value)
    assert "hostPath" in str(caught.value)


def test_tmp_is_an_empty_dir_for_the_read_only_root() -> None:
    children = render()
    volumes = {volume["name"]: volume for volume in pod_spec(children)["volumes"]}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
    for container in [*pod_spec(children)["containers"], *pod_spec(children)["initContainers"]]:
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


# ---------------------------------------------------------------------------------------------
# Service
# ---------------------------------------------------------------------------------------------


def test_service_ports_type_and_annotations() -> None:
    children = render(
        {
            "runtime": {"protocols": {"httpPort": 9000, "grpcPort": 9001}},
            "service": {
                "type": "LoadBalancer",
                "httpPort": 80,
                "grpcPort": 443,
                "annotations": {"b.example.com/x": "1", "a.example.com/y": "2"},
            },
        }
    )
    service = children["Service"]
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["metadata"]["annotations"] == {"a.example.com/y": "2", "b.example.com/x": "1"}
    assert service["spec"]["ports"] == [
        {
            "name": "http",
            "port": 80,
            "targetPort": "http",
            "protocol": "TCP",
            "appProtocol": "http",
        },
        {
            "name": "grpc",
            "port": 443,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        },
    ]
    container_ports = {port["name"] for port in server(children)["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} == container_ports


# ---------------------------------------------------------------------------------------------
# Purity
# ---------------------------------------------------------------------------------------------


def test_rendering_twice_gives_equal_independent_objects() -> None:
    md = make_md({"resources": {"gpu": {}}, "replicas": 2})
    first = render_children(md, OPTIONS)
    pristine = copy.deepcopy(first)
    second = render_children(md, OPTIONS)
    assert first == second
    first[0]["spec"]["template"]["spec"]["tolerations"][0]["key"] = "mutated"
    first[0]["metadata"]["labels"]["mutated"] = "yes"
    assert render_children(md, OPTIONS) == pristine
    assert second == pristine


def test_children_keys_are_sorted_at_every_level() -> None:
    md = make_md(
        {
            "scheduling": {
                "affinity": {"podAntiAffinity": {}, "nodeAffinity": {}},
                "nodeSelector": {"z": "1", "a": "2"},
            }
        }
    )

    def check(value: Any) -> None:
        if isinstance(value, dict):
            assert list(value) == sorted(value)
            for item in value.values():
                check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)

    for child in render_children(md, OPTIONS):
        check(child)


@pytest.mark.parametrize(
    "model_format", ["auto", "torchscript", "exported-program", "aot-inductor"]
)
def test_every_model_format_reaches_the_runtime(model_format: str) -> None:
    md = make_md({"model": {"uri": HTTP_URI, "format": model_format}})
    (deployment, *_) = render_children(md, RenderOptions())
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    assert env["FERRY_RUNTIME_MODEL_FORMAT"] == model_format


def test_the_model_format_defaults_to_auto() -> None:
    (deployment, *_) = render_children(make_md({"model": {"uri": HTTP_URI}}), RenderOptions())
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    assert env["FERRY_RUNTIME_MODEL_FORMAT"] == "auto"
