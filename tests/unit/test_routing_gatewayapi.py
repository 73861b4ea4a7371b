"""Gateway API router: the pure route edits, and the write loop against FakeKube (tests/support/kube.py).

The same router runs against a real HTTPRoute in tests/integration/test_gateway_router.py.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from support.kube import FakeKube

from paved.providers.base import Owner
from paved.providers.routing import RolloutContext, RouterError
from paved.providers.routing.gatewayapi import (
    INCOHERENT, GatewayAPIRouter, apply_body, combined, handed_back, managed_rules, refers_to,
    route_problem, rule_weights, with_weights,
)
from paved.rollout.observation import Weights

CONTEXT = RolloutContext(owner=Owner("paved.dev/v1alpha1", "ProgressiveRollout", "checkout", "shop", "uid-1"),
                         target="checkout", service="checkout", port=80)


def route(*rules: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "checkout", "namespace": namespace, "resourceVersion": "7"},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": list(rules)}}


def pair(stable: int | None = 100, canary: int | None = 0, **extra: Any) -> dict[str, Any]:
    refs = [{"name": "checkout-stable", "port": 80}, {"name": "checkout-canary", "port": 80}]
    if stable is not None:
        refs[0]["weight"] = stable
    if canary is not None:
        refs[1]["weight"] = canary
    return {"backendRefs": refs, **extra}


OTHER = {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
         "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "a", "value": "b"}]}}],
         "backendRefs": [{"name": "admin", "port": 8080}]}


def test_refers_to_matches_services_by_name_and_namespace() -> None:
    assert refers_to({"name": "checkout-stable"}, "checkout-stable", "shop", "shop")
    assert refers_to({"name": "checkout-stable", "group": "", "kind": "Service"}, "checkout-stable", "shop", "shop")
    assert refers_to({"name": "checkout-stable", "namespace": "shop"}, "checkout-stable", "shop", "edge")
    assert not refers_to({"name": "checkout-stable"}, "checkout-stable", "shop", "edge")  # route elsewhere
    assert not refers_to({"name": "checkout-stable", "kind": "ServiceImport", "group": "multicluster.x-k8s.io"},
                         "checkout-stable", "shop", "shop")


def test_managed_rules_and_weights() -> None:
    live = route(OTHER, pair(95, 5), pair(None, None))
    assert managed_rules(live, CONTEXT) == [1, 2]
    assert rule_weights(live, CONTEXT) == [Weights(95, 5), Weights(50, 50)]  # unset weight is 1
    assert combined(rule_weights(live, CONTEXT)) == INCOHERENT
    assert combined([Weights(80, 20), Weights(80, 20)]) == Weights(80, 20)
    assert combined([]) is None
    assert rule_weights(route(pair(0, 0)), CONTEXT) == [INCOHERENT]
    assert rule_weights(route(pair(1, 3)), CONTEXT) == [Weights(25, 75)]  # relative weights


def test_with_weights_changes_only_the_two_weights() -> None:
    third = {"name": "legacy", "port": 80, "weight": 9, "filters": [{"type": "RequestMirror"}]}
    mine = pair(100, 0, filters=[{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "x"}}}])
    mine["backendRefs"].append(third)
    live = route(OTHER, mine)
    rules = with_weights(live, CONTEXT, Weights(80, 20))
    assert json.dumps(rules[0], sort_keys=True) == json.dumps(OTHER, sort_keys=True)
    expected = copy.deepcopy(mine)
    expected["backendRefs"][0]["weight"], expected["backendRefs"][1]["weight"] = 80, 20
    assert rules[1] == expected
    assert live["spec"]["rules"][1]["backendRefs"][0]["weight"] == 100  # input untouched


def test_apply_body_sends_only_rules_guarded_by_resource_version() -> None:
    body = apply_body(route(pair()), [pair(90, 10)])
    assert body["metadata"] == {"name": "checkout", "namespace": "shop", "resourceVersion": "7"}
    assert set(body["spec"]) == {"rules"}


@pytest.mark.parametrize(("live", "fragment"), [
    (None, "HTTPRoute checkout not found"),
    (route(OTHER), "does not reference Service checkout"),
    (route({"backendRefs": [{"name": "checkout", "port": 80}]}), "sends Service checkout traffic directly"),
    (route({"backendRefs": [{"name": "checkout-stable", "port": 80}]}), "does not list Service checkout-canary"),
    (route({"backendRefs": [{"name": "checkout-stable", "port": 80}, {"name": "checkout-stable", "port": 80},
                            {"name": "checkout-canary", "port": 80}]}), "lists more than once"),
    (route(pair() | {"backendRefs": [{"name": "checkout-stable", "port": 81}, {"name": "checkout-canary", "port": 80}]}),
     "port 81"),
], ids=["missing", "unrelated", "direct", "no-canary", "twice", "port"])
def test_route_problems_say_what_to_write(live: dict[str, Any] | None, fragment: str) -> None:
    problem = route_problem(live, CONTEXT, "checkout")
    assert problem is not None and fragment in problem
    if live is not None:
        assert "checkout-stable" in problem or "port" in problem


def test_route_problem_none_for_a_good_route() -> None:
    assert route_problem(route(OTHER, pair()), CONTEXT, "checkout") is None


def test_handed_back_points_the_rule_at_the_users_service() -> None:
    mine = pair(60, 40, filters=[{"type": "RequestMirror"}])
    mine["backendRefs"][0]["filters"] = [{"type": "RequestHeaderModifier"}]
    rules = handed_back(route(OTHER, mine), CONTEXT)
    assert rules[0] == OTHER
    assert rules[1]["backendRefs"] == [{"name": "checkout", "port": 80, "filters": [{"type": "RequestHeaderModifier"}]}]
    assert rules[1]["filters"] == [{"type": "RequestMirror"}]


def routes(live: dict[str, Any] | None) -> FakeKube:
    return FakeKube([live] if live else [])


def stored(kube: FakeKube) -> dict[str, Any]:
    live = kube.obj("HTTPRoute", "checkout", "shop")
    assert live is not None
    return live


def edited_concurrently(kube: FakeKube, times: int) -> None:
    """Another client edits the route right before each of Paved's next `times` writes."""
    left = [times]

    def edit() -> None:
        if left[0]:
            left[0] -= 1
            live = stored(kube)
            live["metadata"].setdefault("labels", {})["edits"] = str(times - left[0])
            kube.put(live)

    kube.before("apply_fields", "HTTPRoute", edit)


class NoWorkloads:
    def ensure_services(self) -> None:
        return None


def router(kube: FakeKube) -> GatewayAPIRouter:
    return GatewayAPIRouter(CONTEXT, {"httpRoute": "checkout"}, kube=kube, workloads=NoWorkloads())  # type: ignore[arg-type]


def test_set_weights_writes_reads_back_and_skips_no_ops() -> None:
    kube = routes(route(OTHER, pair()))
    r = router(kube)
    r.reconcile()
    assert r.get_weights() == Weights(100, 0)
    r.set_weights(Weights(100, 0))
    assert kube.writes() == []  # already so
    r.set_weights(Weights(95, 5))
    assert r.get_weights() == Weights(95, 5) and len(kube.writes()) == 1
    assert stored(kube)["spec"]["rules"][0] == OTHER  # the user's other rule untouched


def test_set_weights_leaves_an_unset_weight_alone_when_the_split_is_already_right() -> None:
    kube = routes(route(pair(None, 0)))  # Git says "stable (default weight), canary 0"
    router(kube).set_weights(Weights(100, 0))
    assert kube.writes() == []


def test_set_weights_retries_after_a_conflict_from_a_fresh_read() -> None:
    kube = routes(route(pair()))
    edited_concurrently(kube, 2)
    router(kube).set_weights(Weights(80, 20))
    # Two writes lost to the edits (409: the resourceVersion they carried was stale), the third
    # from a fresh read; the other client's edit is kept.
    assert len(kube.writes()) == 3 and router(kube).get_weights() == Weights(80, 20)
    assert stored(kube)["metadata"]["labels"] == {"edits": "2"}


def test_set_weights_gives_up_after_repeated_conflicts() -> None:
    kube = routes(route(pair()))
    edited_concurrently(kube, 10)
    with pytest.raises(RouterError, match="kept changing"):
        router(kube).set_weights(Weights(80, 20))


def test_set_weights_raises_when_the_read_back_differs() -> None:
    kube = routes(route(pair()))
    kube.react("HTTPRoute", lambda live: live["spec"].update(rules=[pair()]))  # e.g. a mutating webhook resets the weights
    with pytest.raises(RouterError, match="reads back 100/0 after setting 80/20"):
        router(kube).set_weights(Weights(80, 20))


def test_set_weights_refuses_a_split_that_is_not_100() -> None:
    with pytest.raises(RouterError, match="do not add up to 100"):
        router(routes(route(pair()))).set_weights(Weights(80, 10))


def test_a_route_that_cannot_be_steered_is_a_field_error() -> None:
    with pytest.raises(RouterError) as refused:
        router(routes(route(OTHER))).get_weights()
    assert refused.value.field == "spec.trafficRouting.gatewayAPI.httpRoute" and not refused.value.retryable


def test_finalize_is_idempotent() -> None:
    kube = routes(route(pair(50, 50)))
    r = router(kube)
    r.finalize()
    r.finalize()
    assert len(kube.writes()) == 1
    assert [ref["name"] for ref in stored(kube)["spec"]["rules"][0]["backendRefs"]] == ["checkout"]
    empty = routes(None)
    router(empty).finalize()  # route gone: nothing to do
    assert empty.writes() == []
