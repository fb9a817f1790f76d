"""The CRD's x-kubernetes-validations rules: carried from the models, well-formed, affordable
for the API server's cost budget, evaluated with a real CEL implementation, and in agreement
with the pydantic validators of spec.py on every case."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
from crd_apiserver import (
    Schema,
    admit,
    apply_defaults,
    cel_errors,
    compile_rule,
    rule_field_paths,
    schema_at,
    schema_errors,
    walk_schema,
)
from ferry_operator import constants, spec
from ferry_operator.crd import build_crd
from pydantic import BaseModel

ROOT: Schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

# Where each model with CEL rules sits in the CRD.
RULE_OWNERS: dict[str, type[BaseModel]] = {
    "spec": spec.ModelDeploymentSpec,
    "spec.model": spec.ModelSource,
    "spec.runtime.env[]": spec.EnvVar,
    "spec.runtime.protocols": spec.Protocols,
    "spec.autoscaling": spec.Autoscaling,
    "spec.resources": spec.Resources,
    "spec.batching": spec.Batching,
    "spec.service": spec.ServiceSpec,
    "spec.rollout": spec.Rollout,
}

RULES = [
    pytest.param(path, rule, id=f"{path}:{index}")
    for node, path in walk_schema(ROOT)
    for index, rule in enumerate(node.get("x-kubernetes-validations", []))
]


def _model_rules(model: type[BaseModel]) -> list[dict[str, Any]]:
    extra = model.model_config.get("json_schema_extra")
    assert isinstance(extra, dict)
    return list(extra["x-kubernetes-validations"])  # type: ignore[arg-type]


def test_rules_are_carried_from_the_models() -> None:
    in_crd = {
        path: node["x-kubernetes-validations"]
        for node, path in walk_schema(ROOT)
        if "x-kubernetes-validations" in node
    }
    assert in_crd == {path: _model_rules(model) for path, model in RULE_OWNERS.items()}


@pytest.mark.parametrize(("path", "rule"), RULES)
def test_rule_is_well_formed(path: str, rule: dict[str, Any]) -> None:
    assert set(rule) <= {"rule", "message", "fieldPath", "reason", "messageExpression"}
    compile_rule(rule["rule"])  # raises on a syntax error
    # The message names the field: it starts with the path of the node the rule sits on.
    assert rule["message"].startswith(path.replace("[]", "")), rule["message"]
    if "fieldPath" in rule:
        # The API server refuses a fieldPath that is not a field of the node.
        assert rule["fieldPath"].startswith(".")
        schema_at(schema_at(ROOT, path), rule["fieldPath"][1:])


@pytest.mark.parametrize(("path", "rule"), RULES)
def test_rule_reads_declared_bounded_fields(path: str, rule: dict[str, Any]) -> None:
    """What the API server's type check and cost estimate need: every field a rule reads is
    declared; every string it reads has maxLength (or an enum), every list maxItems, every map
    maxProperties; and every list above the rule's node is bounded too (the rule's cost is
    multiplied by how many times it can run)."""
    node = schema_at(ROOT, path)
    for chain in rule_field_paths(rule["rule"]):
        field = schema_at(node, ".".join(chain))  # KeyError: an undeclared field
        kind = field.get("type")
        where = f"{path}.{'.'.join(chain)}"
        if kind == "string":
            assert "maxLength" in field or "enum" in field, where
        elif kind == "array":
            assert "maxItems" in field, where
        elif kind == "object" and "additionalProperties" in field:
            assert "maxProperties" in field, where
    for index in range(len(path)):
        if path.startswith("[]", index):
            assert "maxItems" in schema_at(ROOT, path[:index]), path[:index]


def test_field_chains_parse_member_calls_out() -> None:
    assert rule_field_paths("self.preferredBatchSizes.all(s, s <= self.maxBatchSize)") == {
        ("preferredBatchSizes",),
        ("maxBatchSize",),
    }
    assert rule_field_paths("!has(self.gpu) || !(self.gpu.resource in self.limits)") == {
        ("gpu",),
        ("gpu", "resource"),
        ("limits",),
    }
    assert rule_field_paths("self.uri.matches('^s3://')") == {("uri",)}


# --- defaults must satisfy their own node's rules --------------------------------------------


def test_every_default_is_valid_as_written() -> None:
    """The API server validates each ``default`` against its node's schema and CEL rules
    without defaulting it first, and refuses the whole CRD when one fails."""
    problems: list[str] = []
    for node, path in walk_schema(ROOT):
        if "default" in node:
            problems += schema_errors(node["default"], node, path)
            problems += cel_errors(node["default"], node, path)
    assert problems == []


def test_an_empty_default_would_break_the_crd() -> None:
    """Why nested defaults are spelled out: ``{}`` fails the rules that read their fields."""
    for path in ("spec.batching", "spec.runtime.protocols", "spec.service"):
        problems = cel_errors({}, schema_at(ROOT, path), path)
        assert problems, path
        assert "rule evaluation error" in problems[0]


# --- CEL and pydantic agree ------------------------------------------------------------------


def _obj(spec_fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": "m"},
        "spec": spec_fields,
    }


def _verdicts(spec_fields: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(API server problems, spec.py problems) for one spec."""
    obj = _obj(spec_fields)
    try:
        spec.parse_model_deployment(copy.deepcopy(obj))
        model_problems: list[str] = []
    except spec.SpecError as error:
        model_problems = error.problems
    return admit(obj, ROOT), model_problems


S3 = {"uri": "s3://bucket/model/"}

CASES: list[tuple[str, dict[str, Any], str | None]] = [
    # (name, spec, the CEL message both must give, or None when both must accept)
    (
        "min above max",
        {"model": S3, "autoscaling": {"minReplicas": 4, "maxReplicas": 3}},
        "spec.autoscaling.minReplicas must be less than or equal to maxReplicas",
    ),
    ("min equals max", {"model": S3, "autoscaling": {"minReplicas": 3, "maxReplicas": 3}}, None),
    ("defaulted min equals max", {"model": S3, "autoscaling": {"maxReplicas": 1}}, None),
    (
        "preferred above max",
        {"model": S3, "batching": {"maxBatchSize": 8, "preferredBatchSizes": [4, 9]}},
        "spec.batching.preferredBatchSizes must each be less than or equal to maxBatchSize",
    ),
    (
        "preferred equals max",
        {"model": S3, "batching": {"maxBatchSize": 8, "preferredBatchSizes": [8]}},
        None,
    ),
    (
        "preferred above defaulted max",
        {"model": S3, "batching": {"preferredBatchSizes": [33]}},
        "spec.batching.preferredBatchSizes must each be less than or equal to maxBatchSize",
    ),
    (
        "bad scheme",
        {"model": {"uri": "ftp://host/model.tar.gz"}},
        "spec.model.uri must start with pvc://, http://, https://, s3:// or file://",
    ),
    (
        "scheme only",
        {"model": {"uri": "s3://"}},
        "spec.model.uri must start with pvc://, http://, https://, s3:// or file://",
    ),
    (
        "upper-case scheme",
        {"model": {"uri": "S3://bucket/model/"}},
        "spec.model.uri must start with pvc://, http://, https://, s3:// or file://",
    ),
    (
        "bad pvc claim",
        {"model": {"uri": "pvc://-store/model"}},
        "spec.model.uri: pvc:// URIs are pvc://CLAIM/PATH with a valid claim name",
    ),
    (
        "pvc claim with capital",
        {"model": {"uri": "pvc://Store/model"}},
        "spec.model.uri: pvc:// URIs are pvc://CLAIM/PATH with a valid claim name",
    ),
    ("pvc claim only", {"model": {"uri": "pvc://store"}}, None),
    (
        "credentials on pvc",
        {"model": {"uri": "pvc://store/m", "credentialsSecret": "creds"}},
        "spec.model.credentialsSecret only applies to http(s):// and s3:// URIs",
    ),
    (
        "credentials on file",
        {"model": {"uri": "file:///m", "credentialsSecret": "creds"}},
        "spec.model.credentialsSecret only applies to http(s):// and s3:// URIs",
    ),
    (
        "credentials on https",
        {"model": {"uri": "https://h/m.tar.gz", "credentialsSecret": "c"}},
        None,
    ),
    (
        "cuda without gpu",
        {"model": S3, "runtime": {"device": "cuda"}},
        "spec.resources.gpu is required when spec.runtime.device is cuda",
    ),
    ("cuda with gpu", {"model": S3, "runtime": {"device": "cuda"}, "resources": {"gpu": {}}}, None),
    (
        "gpu in limits",
        {"model": S3, "resources": {"gpu": {"count": 2}, "limits": {"nvidia.com/gpu": 2}}},
        "spec.resources: set the GPU through resources.gpu, not resources.limits",
    ),
    (
        "mig in limits",
        {
            "model": S3,
            "resources": {
                "gpu": {"resource": "nvidia.com/mig-1g.10gb"},
                "limits": {"nvidia.com/mig-1g.10gb": 1},
            },
        },
        "spec.resources: set the GPU through resources.gpu, not resources.limits",
    ),
    ("gpu limit without gpu", {"model": S3, "resources": {"limits": {"nvidia.com/gpu": 1}}}, None),
    (
        "env value and valueFrom",
        {
            "model": S3,
            "runtime": {
                "env": [
                    {
                        "name": "A",
                        "value": "",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                    }
                ]
            },
        },
        "spec.runtime.env: set value or valueFrom, not both",
    ),
    (
        "env FERRY_RUNTIME_",
        {"model": S3, "runtime": {"env": [{"name": "FERRY_RUNTIME_X", "value": "1"}]}},
        "spec.runtime.env: FERRY_RUNTIME_* variables are set by Ferry from the spec",
    ),
    (
        "env FERRY_ prefix is fine",
        {"model": S3, "runtime": {"env": [{"name": "FERRY_X", "value": "1"}]}},
        None,
    ),
    (
        "equal runtime ports",
        {"model": S3, "runtime": {"protocols": {"httpPort": 9000, "grpcPort": 9000}}},
        "spec.runtime.protocols: httpPort and grpcPort must differ",
    ),
    (
        "runtime http on default grpc",
        {"model": S3, "runtime": {"protocols": {"httpPort": 8081}}},
        "spec.runtime.protocols: httpPort and grpcPort must differ",
    ),
    (
        "equal service ports",
        {"model": S3, "service": {"httpPort": 80, "grpcPort": 80}},
        "spec.service: httpPort and grpcPort must differ",
    ),
    (
        "service grpc on default http",
        {"model": S3, "service": {"grpcPort": 8080}},
        "spec.service: httpPort and grpcPort must differ",
    ),
    (
        "canary without steps",
        {"model": S3, "rollout": {"strategy": "Canary"}},
        "spec.rollout.steps: a Canary rollout needs at least one step",
    ),
    (
        "steps on a rolling update",
        {"model": S3, "rollout": {"steps": [{"weight": 10}]}},
        "spec.rollout.steps only apply to the Canary strategy",
    ),
    (
        "weights not increasing",
        {
            "model": S3,
            "rollout": {"strategy": "Canary", "steps": [{"weight": 50}, {"weight": 20}]},
        },
        "spec.rollout.steps: weights must increase from step to step",
    ),
    (
        "weights repeated",
        {
            "model": S3,
            "rollout": {"strategy": "Canary", "steps": [{"weight": 20}, {"weight": 20}]},
        },
        "spec.rollout.steps: weights must increase from step to step",
    ),
    (
        "last pair out of order",
        {
            "model": S3,
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": w} for w in (1, 2, 3, 4, 5, 6, 7, 8, 10, 9)],
            },
        },
        "spec.rollout.steps: weights must increase from step to step",
    ),
    (
        "ten increasing steps",
        {
            "model": S3,
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": w, "pauseSeconds": 0} for w in range(10, 101, 10)],
                "analysis": {"maxErrorRatePercent": 0.5, "maxP99LatencyMs": 250},
            },
        },
        None,
    ),
]


@pytest.mark.parametrize(("name", "spec_fields", "message"), CASES, ids=[c[0] for c in CASES])
def test_cel_and_pydantic_agree(
    name: str, spec_fields: dict[str, Any], message: str | None
) -> None:
    server, model = _verdicts(spec_fields)
    if message is None:
        assert server == []
        assert model == []
        return
    defaulted = apply_defaults(_obj(spec_fields), ROOT)
    assert schema_errors(defaulted, ROOT) == [], "the CEL rule, not the schema, must refuse it"
    assert [p for p in server if p.endswith(f"Invalid value: {message}")], server
    assert message in model


def _grid() -> list[dict[str, Any]]:
    """Crossed values around every cross-field rule's boundary."""
    specs: list[dict[str, Any]] = []
    for low, high in itertools.product([1, 2, 3], repeat=2):
        specs.append({"model": S3, "autoscaling": {"minReplicas": low, "maxReplicas": high}})
    for top, sizes in itertools.product([1, 4, 32], [[], [1], [4], [1, 5], [32, 33]]):
        specs.append({"model": S3, "batching": {"maxBatchSize": top, "preferredBatchSizes": sizes}})
    for http, grpc in itertools.product([1024, 8080, 8081], repeat=2):
        specs.append({"model": S3, "runtime": {"protocols": {"httpPort": http, "grpcPort": grpc}}})
        specs.append({"model": S3, "service": {"httpPort": http, "grpcPort": grpc}})
    uris = [
        "s3://b/k",
        "http://h/m.tar.gz",
        "https://h/dir/",
        "file:///m",
        "pvc://store/m",
        "pvc://a.b-c/x/y",
        "pvc://bad_claim/m",
        "pvc://",
        "pvcs://store/m",
        "hdfs://n/m",
        "models/m",
    ]
    for uri, secret in itertools.product(uris, [None, "creds"]):
        model = {"uri": uri} | ({"credentialsSecret": secret} if secret else {})
        specs.append({"model": model})
    for device, gpu, limit in itertools.product(
        ["auto", "cpu", "cuda", None],
        [None, {}, {"resource": "amd.com/gpu"}],
        [None, "nvidia.com/gpu"],
    ):
        runtime = {"device": device} if device else {}
        resources: dict[str, Any] = {}
        if gpu is not None:
            resources["gpu"] = gpu
        if limit:
            resources["limits"] = {limit: 1}
        specs.append({"model": S3, "runtime": runtime, "resources": resources})
    for strategy, weights in itertools.product(
        ["RollingUpdate", "Canary", None], [[], [10], [10, 50, 100], [50, 10], [30, 30], [100]]
    ):
        rollout: dict[str, Any] = {"steps": [{"weight": w} for w in weights]}
        if strategy is not None:
            rollout["strategy"] = strategy
        specs.append({"model": S3, "rollout": rollout})
    for value, value_from, name in itertools.product(
        [None, "", "x"],
        [None, {}, {"secretKeyRef": {"name": "s", "key": "k"}}],
        ["A", "FERRY_RUNTIME_", "FERRY_RUNTIMEX", "ferry_runtime_x"],
    ):
        env: dict[str, Any] = {"name": name}
        if value is not None:
            env["value"] = value
        if value_from is not None:
            env["valueFrom"] = value_from
        specs.append({"model": S3, "runtime": {"env": [env]}})
    return specs


GRID = _grid()


def test_grid_is_substantial() -> None:
    accepted = sum(1 for s in GRID if not _verdicts(s)[1])
    assert len(GRID) > 100
    assert 0.2 < accepted / len(GRID) < 0.8  # both verdicts are well represented


@pytest.mark.parametrize("spec_fields", GRID, ids=[str(i) for i in range(len(GRID))])
def test_grid_verdicts_agree(spec_fields: dict[str, Any]) -> None:
    server, model = _verdicts(spec_fields)
    assert (server == []) == (model == []), (spec_fields, server, model)
