"""Replica-ratio router: Service check, nominal weights recorded and read back, factory."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from paved.providers import routing
from paved.providers.base import Owner
from paved.providers.routing import ROLLOUT_LABEL, ROUTE_FIELD_MANAGER, RolloutContext, RouterError, router_for
from paved.providers.routing.gatewayapi import GatewayAPIRouter
from paved.providers.routing.replicaratio import (
    WEIGHTS_ANNOTATION, ReplicaRatioRouter, parse_weights, selector_problem,
)
from paved.providers.routing.workloads import Workloads
from paved.rollout.observation import Weights

CONTEXT = RolloutContext(owner=Owner("paved.dev/v1alpha1", "ProgressiveRollout", "checkout", "shop", "uid-1"),
                         target="checkout", service="checkout", port=80)


class FakeKube:
    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.objects = objects
        self.applied: list[tuple[dict[str, Any], str]] = []

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((kind, name)))

    def apply(self, body: dict[str, Any], owner: Any, *, field_manager: str = "paved") -> dict[str, Any]:
        self.applied.append((body, field_manager))
        key = (body["kind"], body["metadata"]["name"])
        live = self.objects.setdefault(key, {"metadata": {"name": key[1]}})
        live["metadata"].setdefault("annotations", {}).update(body["metadata"].get("annotations") or {})
        return copy.deepcopy(live)

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        return []


def service(selector: dict[str, str]) -> dict[str, Any]:
    return {"spec": {"selector": selector, "ports": [{"port": 80}]}}


def test_the_users_service_must_select_only_paved_pods() -> None:
    missing = selector_problem(CONTEXT, None)
    assert missing is not None and "not found" in missing.message and missing.field == "spec.service.name"
    problem = selector_problem(CONTEXT, service({"app": "checkout"}))
    assert problem and f"{ROLLOUT_LABEL}: checkout" in problem.message and "Deployment checkout" in problem.message
    assert selector_problem(CONTEXT, service({"app": "checkout", ROLLOUT_LABEL: "checkout"})) is None


def test_parse_weights() -> None:
    assert parse_weights("95/5") == Weights(95, 5)
    assert parse_weights(None) is None and parse_weights("x") is None


def test_router_records_and_reads_back_the_nominal_split() -> None:
    kube = FakeKube({("Service", "checkout"): service({"app": "checkout", ROLLOUT_LABEL: "checkout"}),
                     ("Deployment", "checkout-stable"): {"metadata": {"name": "checkout-stable"}}})
    router = ReplicaRatioRouter(CONTEXT, workloads=Workloads(CONTEXT, kube))
    router.reconcile()
    assert router.get_weights() is None
    router.set_weights(Weights(80, 20))
    body, manager = kube.applied[-1]
    assert manager == ROUTE_FIELD_MANAGER
    assert body["metadata"]["annotations"] == {WEIGHTS_ANNOTATION: "80/20"}
    assert router.get_weights() == Weights(80, 20)


def test_router_refuses_a_service_that_selects_the_targets_pods() -> None:
    kube = FakeKube({("Service", "checkout"): service({"app": "checkout"})})
    with pytest.raises(RouterError) as refused:
        ReplicaRatioRouter(CONTEXT, workloads=Workloads(CONTEXT, kube)).reconcile()
    assert refused.value.field == "spec.service.name" and not refused.value.retryable


def test_set_weights_needs_the_stable_workload() -> None:
    router = ReplicaRatioRouter(CONTEXT, workloads=Workloads(CONTEXT, FakeKube({})))
    with pytest.raises(RouterError, match="does not exist yet"):
        router.set_weights(Weights(100, 0))


def test_factory_picks_the_router_from_the_spec() -> None:
    assert isinstance(router_for({"trafficRouting": {"gatewayAPI": {"httpRoute": "r"}}}, CONTEXT), GatewayAPIRouter)
    assert isinstance(router_for({"trafficRouting": {"replicaRatio": {}}}, CONTEXT), ReplicaRatioRouter)
    assert isinstance(router_for({}, CONTEXT), ReplicaRatioRouter)  # absent means replicaRatio
    assert routing.router_kind({"trafficRouting": {"gatewayAPI": {"httpRoute": "r"}}}) == ("gatewayAPI", {"httpRoute": "r"})


def test_factory_takes_a_registered_fake() -> None:
    class Fake:
        name = "fake"

    routing.ROUTERS.register("fake", lambda context, settings, **_: Fake())
    try:
        assert isinstance(router_for({"trafficRouting": {"fake": {}}}, CONTEXT), Fake)
    finally:
        routing.ROUTERS.unregister("fake")
