"""The stable/canary copies and their Services: pure builders and the template lookup."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from support.kube import FakeKube

from paved.providers.base import Owner
from paved.providers.routing import (
    ORIGINAL_REPLICAS_ANNOTATION, REVISION_ANNOTATION, ROLE_LABEL, ROLLOUT_LABEL, SCALE_FIELD_MANAGER, RolloutContext,
    RouterError,
)
from paved.providers.routing.workloads import (
    WorkloadError, Workloads, copy_deployment, copy_service, original_scale, service_problem, target_state,
    template_revision, workload_state,
)
from paved.rollout.observation import TargetState, WorkloadState

CONTEXT = RolloutContext(owner=Owner("paved.dev/v1alpha1", "ProgressiveRollout", "checkout", "shop", "uid-1"),
                         target="checkout", service="checkout", port=80)


def template(image: str = "v1") -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "checkout"}},
            "spec": {"containers": [{"name": "app", "image": f"example.com/checkout:{image}"}]}}


def target(image: str = "v1", replicas: int | None = 4) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": "checkout"}}, "template": template(image),
                            "strategy": {"type": "RollingUpdate"}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "checkout", "namespace": "shop", "uid": "target-uid", "generation": 3}, "spec": spec}


def test_revision_is_a_stable_hash_of_the_template_ignoring_pod_template_hash() -> None:
    base = template()
    with_hash = copy.deepcopy(base)
    with_hash["metadata"]["labels"]["pod-template-hash"] = "abc"
    assert template_revision(base) == template_revision(with_hash)
    assert len(template_revision(base)) == 10
    assert template_revision(template("v2")) != template_revision(base)


def test_target_state() -> None:
    assert target_state(target()) == TargetState(template_revision(template()), 4)
    assert target_state(target(replicas=None)).replicas == 1  # the Deployment default


def scaled_down(manager: str = SCALE_FIELD_MANAGER, note: str = "4") -> dict[str, Any]:
    """The target as Paved's scale left it: 0 replicas, the user's 4 noted, the field Paved's
    (or taken over by `manager`, as `kubectl scale` does)."""
    body = target(replicas=0)
    body["metadata"]["annotations"] = {ORIGINAL_REPLICAS_ANNOTATION: note}
    body["metadata"]["managedFields"] = [
        {"manager": "kubectl-client-side-apply", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {}}}},
        {"manager": manager, "operation": "Apply" if manager == SCALE_FIELD_MANAGER else "Update",
         "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
    return body


def test_the_users_count_is_the_note_only_while_paved_owns_the_scale() -> None:
    assert target_state(scaled_down()) == TargetState(template_revision(template()), 0, 4)
    assert target_state(scaled_down()).user_replicas == 4
    assert target_state(scaled_down(manager="kubectl")).remembered is None  # the user scaled it since
    assert target_state(scaled_down(note="many")).remembered is None
    assert target_state(target()).remembered is None


def test_the_scale_of_the_original_writes_replicas_and_the_note_only() -> None:
    assert original_scale(CONTEXT, 0, 4) == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": "shop", "annotations": {ORIGINAL_REPLICAS_ANNOTATION: "4"}},
        "spec": {"replicas": 0}}
    handed_back = original_scale(CONTEXT, 4, None)
    assert "annotations" not in handed_back["metadata"] and handed_back["spec"] == {"replicas": 4}


def test_copy_deployment_adds_role_labels_to_selector_and_pods_only() -> None:
    body = copy_deployment(CONTEXT, "canary", target(), template(), "rev1", 2)
    labels = {"app": "checkout", ROLLOUT_LABEL: "checkout", ROLE_LABEL: "canary"}
    assert body["metadata"]["name"] == "checkout-canary"
    assert body["metadata"]["annotations"] == {REVISION_ANNOTATION: "rev1"}
    assert body["spec"]["selector"]["matchLabels"] == labels
    assert body["spec"]["template"]["metadata"]["labels"] == labels
    assert body["spec"]["template"]["spec"] == template()["spec"]
    assert body["spec"]["replicas"] == 2 and body["spec"]["strategy"] == {"type": "RollingUpdate"}


def test_copy_service_selects_one_role() -> None:
    user = {"spec": {"selector": {"app": "checkout"}, "type": "LoadBalancer",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}}
    body = copy_service(CONTEXT, "stable", user)
    assert body["metadata"]["name"] == "checkout-stable"
    assert body["spec"] == {"type": "ClusterIP",
                            "selector": {"app": "checkout", ROLLOUT_LABEL: "checkout", ROLE_LABEL: "stable"},
                            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}


@pytest.mark.parametrize(("service", "field", "fragment"), [
    (None, "spec.service.name", "not found"),
    ({"spec": {"ports": [{"port": 80}]}}, "spec.service.name", "no selector"),
    ({"spec": {"selector": {"a": "b"}, "ports": [{"port": 8080}]}}, "spec.service.port", "no port 80 (it has 8080)"),
])
def test_service_problems_name_the_field_to_fix(service: dict[str, Any] | None, field: str, fragment: str) -> None:
    problem = service_problem(CONTEXT, service)
    assert problem is not None and problem.field == field and fragment in problem.message


def test_workload_state_counts_only_ready_pods_of_the_new_template() -> None:
    def deployment(generation: int, observed: int, **status: int) -> dict[str, Any]:
        return {"metadata": {"generation": generation, "annotations": {REVISION_ANNOTATION: "r2"}},
                "spec": {"replicas": 4}, "status": {"observedGeneration": observed, **status}}

    assert workload_state(None) is None
    assert workload_state(deployment(2, 1, replicas=4, updatedReplicas=4, readyReplicas=4)) == WorkloadState("r2", 4, 0)
    # 5 pods, 3 of the new template, 4 ready: at least 2 of the ready ones are new.
    assert workload_state(deployment(2, 2, replicas=5, updatedReplicas=3, readyReplicas=4)) == WorkloadState("r2", 4, 2)
    assert workload_state(deployment(2, 2, replicas=4, updatedReplicas=4, readyReplicas=4)) == WorkloadState("r2", 4, 4)


def service(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "checkout", "namespace": "shop"}, "spec": spec}


def copy_of(kube: FakeKube, role: str) -> dict[str, Any]:
    live = kube.obj("Deployment", f"checkout-{role}", "shop")
    assert live is not None
    return live


def test_template_for_finds_old_revisions_on_copies_and_replica_sets() -> None:
    old = template("v0")
    pod_labels = {"app": "checkout", "pod-template-hash": "x"}
    old_rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": "checkout-x", "namespace": "shop", "labels": pod_labels,
                           "ownerReferences": [{"uid": "target-uid"}]},
              "spec": {"template": {**old, "metadata": {"labels": pod_labels}}}}
    other_rs = {**old_rs, "metadata": {**old_rs["metadata"], "name": "other-x", "labels": {"app": "other"}}}
    kube = FakeKube([target("v2"), old_rs, other_rs])
    workloads = Workloads(CONTEXT, kube)
    assert workloads.template_for(template_revision(template("v2")))["spec"] == template("v2")["spec"]
    assert workloads.template_for(template_revision(old))["spec"] == old["spec"]
    workloads.ensure_canary(template_revision(old), 1)  # now the canary copy has v0
    kube.delete("apps/v1", "ReplicaSet", "checkout-x", "shop")
    workloads.refresh()
    assert workloads.template_for(template_revision(old)) == old
    with pytest.raises(WorkloadError, match="is gone"):
        workloads.template_for("nope")


def test_scaling_keeps_the_template_and_needs_an_existing_copy() -> None:
    kube = FakeKube([target()])
    workloads = Workloads(CONTEXT, kube)
    revision = template_revision(template())
    workloads.scale("canary", 0)  # nothing to scale down: no write
    assert kube.writes() == []
    with pytest.raises(WorkloadError, match="does not exist yet"):
        workloads.scale("stable", 3)
    workloads.promote_stable(revision, 0)
    assert copy_of(kube, "stable")["spec"]["replicas"] == 0  # created at 0, scaled next
    workloads.scale("stable", 3)
    assert copy_of(kube, "stable")["spec"]["replicas"] == 3 and len(kube.writes()) == 2
    assert copy_of(kube, "stable")["metadata"]["annotations"][REVISION_ANNOTATION] == revision
    assert copy_of(kube, "stable")["spec"]["template"]["spec"] == template()["spec"]


def test_ensure_services_refuses_an_unusable_service_with_the_field() -> None:
    with pytest.raises(RouterError) as refused:
        Workloads(CONTEXT, FakeKube()).ensure_services()
    assert refused.value.field == "spec.service.name" and not refused.value.retryable
    kube = FakeKube([service({"selector": {"app": "checkout"}, "ports": [{"port": 80}]})])
    Workloads(CONTEXT, kube).ensure_services()
    assert [call.name for call in kube.writes()] == ["checkout-stable", "checkout-canary"]


def test_deployment_cache_keeps_the_newest_version_and_remembers_absence() -> None:
    from paved.providers.routing.workloads import DeploymentCache

    def deployment(rv: str, replicas: int) -> dict[str, Any]:
        return {"metadata": {"namespace": "shop", "name": "checkout-canary", "resourceVersion": rv},
                "spec": {"replicas": replicas}}

    cache = DeploymentCache()
    assert cache.lookup("shop", "checkout-canary") == (False, None)
    cache.offer(deployment("10", 2))  # Paved's own write
    cache.offer(deployment("9", 1))   # an older watch event arriving late: ignored
    assert cache.lookup("shop", "checkout-canary")[1]["spec"]["replicas"] == 2  # type: ignore[index]
    cache.offer(deployment("11", 3))
    assert cache.lookup("shop", "checkout-canary")[1]["spec"]["replicas"] == 3  # type: ignore[index]
    cache.absent("shop", "checkout-canary")
    assert cache.lookup("shop", "checkout-canary") == (True, None)
    cache.forget("shop", "checkout-canary")
    assert cache.lookup("shop", "checkout-canary") == (False, None)


def test_workloads_read_deployments_from_the_cache_and_feed_it() -> None:
    from paved.providers.routing.workloads import DeploymentCache

    kube = FakeKube([target()])

    def reads() -> list[str]:
        return [call.name for call in kube.calls if call.verb == "get"]

    cache = DeploymentCache()
    first = Workloads(CONTEXT, kube, deployments=cache)
    assert first.target() is not None and first.copy("canary") is None
    second = Workloads(CONTEXT, kube, deployments=cache)  # the next tick
    assert second.target() is not None and second.copy("canary") is None
    assert reads() == ["checkout", "checkout-canary"]  # read once, then served (absence too)
    second.ensure_canary(template_revision(template()), 1)
    assert Workloads(CONTEXT, kube, deployments=cache).copy("canary") is not None  # the write fed it
    assert reads() == ["checkout", "checkout-canary"]
