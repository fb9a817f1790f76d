"""Kopf wiring units: settings handed to Kopf, event routing, the run command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
import pytest
from ferry_operator import handlers
from ferry_operator.cluster import Connection
from ferry_operator.handlers import Controller, build_registry, kopf_settings, run_operator
from ferry_operator.settings import OperatorSettings


def test_kopf_keeps_its_bookkeeping_under_ferrys_prefix_and_posts_nothing() -> None:
    settings = kopf_settings(OperatorSettings(standalone=True))
    assert settings.posting.enabled is False
    assert settings.persistence.finalizer.startswith("serving.ferry.dev/")
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.persistence.progress_storage.prefix == "serving.ferry.dev"
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert settings.persistence.diffbase_storage.prefix == "serving.ferry.dev"


def test_children_and_pods_are_selected_by_the_api_server() -> None:
    selectors = kopf_settings(OperatorSettings()).watching.label_selectors
    assert len(list(selectors)) == 7  # Deployment, Service, HPA, PDB, HTTPRoute, GRPCRoute, Pod
    assert set(selectors.values()) == {"app.kubernetes.io/managed-by=ferry"}


def test_peering_settings() -> None:
    ha = kopf_settings(OperatorSettings(peering_name="ferry-ha", peering_priority=7))
    assert (ha.peering.name, ha.peering.priority, ha.peering.standalone) == ("ferry-ha", 7, False)
    assert ha.peering.mandatory  # a missing peering object must not silently mean two actors
    assert ha.peering.clusterwide
    namespaced = kopf_settings(OperatorSettings(watch_namespaces=("a",), standalone=True))
    assert not namespaced.peering.clusterwide
    assert namespaced.peering.standalone
    assert not namespaced.peering.mandatory
    priorities = {kopf_settings(OperatorSettings()).peering.priority for _ in range(5)}
    assert len(priorities) > 1  # unset: random, so two replicas do not tie


def controller() -> Controller:
    connection = Connection(lambda: kopf.ConnectionInfo(server="http://127.0.0.1:1"))
    result = Controller(OperatorSettings(standalone=True), connection, identity="t")
    owner = {"metadata": {"name": "very.long.name", "namespace": "ns"}}
    result.view.bind(
        owners={("ns", "very.long.name"): [owner]},
        owner_labels={("ns", "very.long.name"): ["very.long.name"]},
        children=[],
        pods={},
    )
    return result


def test_events_are_routed_to_the_owner() -> None:
    ctl = controller()
    child = {
        "kind": "Service",
        "metadata": {
            "name": "very-long-name",
            "namespace": "ns",
            "resourceVersion": "5",
            "ownerReferences": [
                {
                    "apiVersion": "serving.ferry.dev/v1alpha1",
                    "kind": "ModelDeployment",
                    "name": "very.long.name",
                    "controller": True,
                }
            ],
        },
    }
    ctl.child_event("MODIFIED", child)
    pod = {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "labels": {"serving.ferry.dev/model-deployment": "very.long.name"},
        }
    }
    ctl.pod_event(pod)
    assert ctl.queue.depth == 1  # both events coalesce on the one owner
    stranger = {
        "metadata": {
            "name": "q",
            "namespace": "ns",
            "labels": {"serving.ferry.dev/model-deployment": "other"},
        }
    }
    ctl.pod_event(stranger)
    assert ctl.queue.depth == 1


def test_a_deleted_owner_is_not_enqueued() -> None:
    ctl = controller()
    ctl.failures[("ns", "very.long.name")] = 3
    ctl.owner_event("DELETED", {"metadata": {"name": "very.long.name", "namespace": "ns"}})
    assert ctl.queue.depth == 0
    assert ctl.failures == {}


def test_registry_watches_every_kind() -> None:
    registry = build_registry(controller())
    indexed = {handler.id for handler in registry._indexing.get_all_handlers()}
    assert indexed == {
        "ferry_owners",
        "ferry_owner_labels",
        "ferry_pods",
        "ferry_children_deployments",
        "ferry_children_services",
        "ferry_children_horizontalpodautoscalers",
        "ferry_children_poddisruptionbudgets",
        "ferry_children_httproutes",
        "ferry_children_grpcroutes",
    }
    assert not registry._changing.get_all_handlers()  # no change-tracking handlers: no writes


def test_run_exits_non_zero_without_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(handlers, "configure_logging", lambda settings: None)
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: None)
    seen: list[Any] = []

    def load() -> OperatorSettings:
        settings = OperatorSettings()
        seen.append(settings)
        return settings

    assert run_operator(["team-a"], True, None, load_settings=load) == 1
    assert len(seen) == 1
