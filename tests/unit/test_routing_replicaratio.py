"""Replica-ratio router: Service check, nominal weights recorded and read back, factory."""

from __future__ import annotations

from typing import Any

import pytest
from support.kube import FakeKube

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


def service(selector: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"selector": selector, "ports": [{"port": 80}]}}


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
    kube = FakeKube([service({"app": "checkout", ROLLOUT_LABEL: "checkout"}),
                     {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "checkout-stable", "namespace": "shop"}}])
    router = ReplicaRatioRouter(CONTEXT, workloads=Workloads(CONTEXT, kube))
    router.reconcile()
    assert router.get_weights() is None
    router.set_weights(Weights(80, 20))
    write = kube.writes()[-1]
    assert (write.name, write.field_manager) == ("checkout-stable", ROUTE_FIELD_MANAGER)
    stable = kube.obj("Deployment", "checkout-stable", "shop")
    assert stable is not None and stable["metadata"]["annotations"] == {WEIGHTS_ANNOTATION: "80/20"}
    assert router.get_weights() == Weights(80, 20)


def test_router_refuses_a_service_that_selects_the_targets_pods() -> None:
    kube = FakeKube([service({"app": "checkout"})])
    with pytest.raises(RouterError) as refused:
        ReplicaRatioRouter(CONTEXT, workloads=Workloads(CONTEXT, kube)).reconcile()
    assert refused.value.field == "spec.service.name" and not refused.value.retryable


def test_set_weights_needs_the_stable_workload() -> None:
    router = ReplicaRatioRouter(CONTEXT, workloads=Workloads(CONTEXT, FakeKube()))
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
