"""The Gateway API router against a real HTTPRoute on the real API server (Gateway API
standard CRDs from sigs.k8s.io/gateway-api, installed by the control plane).

Proves what docs/rollout.md promises GitOps users: `set_weights` changes the weights of the
two backendRefs Paved owns and nothing else (other rules, filters, matches, backends stay
byte-identical), with its own field manager, reads the route back, and coexists with a
second field manager (standing in for Argo CD) that owns the rest of the route.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from paved.kube import client as kube_client
from paved.kube.port import ApiKube
from paved.providers.base import Owner
from paved.providers.routing import ROUTE_FIELD_MANAGER, RolloutContext, RouterError
from paved.providers.routing.gatewayapi import API_VERSION, KIND, GatewayAPIRouter
from paved.rollout.observation import Weights

pytestmark = pytest.mark.cluster

ARGO = "argocd-controller"


def route_manifest(namespace: str) -> dict[str, Any]:
    """What Git holds: three rules; Paved's pair sits in the second, next to a mirror
    filter and a third backend, after a rule with header matches and a rewrite."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "checkout", "namespace": namespace, "labels": {"app.kubernetes.io/instance": "shop"}},
        "spec": {
            "parentRefs": [{"name": "shop-gateway", "sectionName": "https"}],
            "hostnames": ["shop.example.com"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"},
                              "headers": [{"name": "x-team", "value": "ops"}]}],
                 "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch",
                                                                             "replacePrefixMatch": "/"}}}],
                 "backendRefs": [{"name": "admin", "port": 8080, "weight": 3}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow", "port": 80}}}],
                 "backendRefs": [{"name": "checkout-stable", "port": 80, "weight": 100},
                                 {"name": "checkout-canary", "port": 80, "weight": 0},
                                 {"name": "legacy", "port": 80, "weight": 7,
                                  "filters": [{"type": "RequestHeaderModifier",
                                               "requestHeaderModifier": {"add": [{"name": "x-legacy", "value": "1"}]}}]}]},
                {"matches": [{"path": {"type": "Exact", "value": "/health"}}],
                 "backendRefs": [{"name": "health", "port": 9000}]},
            ],
        },
    }


@pytest.fixture
def kube(control_plane: Any) -> Iterator[None]:
    """paved.kube talking to the test control plane as admin (the router's RBAC is proven by
    the e2e tests, which run the operator as deploy/'s ServiceAccount)."""
    kube_client.reset()
    kube_client.configure(str(control_plane.kubeconfig))
    yield
    kube_client.reset()


def argo_apply(body: dict[str, Any], *, force: bool = False) -> dict[str, Any]:
    """A server-side apply as the GitOps tool's field manager."""
    metadata = body["metadata"]
    path = f"/apis/gateway.networking.k8s.io/v1/namespaces/{metadata['namespace']}/httproutes/{metadata['name']}"
    return kube_client.request("PATCH", path, operation="apply", body=body,
                               query={"fieldManager": ARGO, "force": "true" if force else None},
                               content_type="application/apply-patch+yaml")


def live(namespace: str) -> dict[str, Any]:
    route = ApiKube().get(API_VERSION, KIND, "checkout", namespace)
    assert route is not None
    return route


def managers(route: dict[str, Any]) -> dict[str, set[str]]:
    """Field manager -> the top-level spec/metadata fields it owns."""
    owned: dict[str, set[str]] = {}
    for entry in route["metadata"].get("managedFields") or []:
        fields = entry.get("fieldsV1") or {}
        names = {f"spec.{k[2:]}" for k in (fields.get("f:spec") or {}) if k.startswith("f:")}
        names |= {f"metadata.{k[2:]}" for k in (fields.get("f:metadata") or {}) if k.startswith("f:")}
        owned.setdefault(entry["manager"], set()).update(names)
    return owned


def router_for(namespace: str) -> GatewayAPIRouter:
    owner = Owner("paved.dev/v1alpha1", "ProgressiveRollout", "checkout", namespace, "uid-0")
    context = RolloutContext(owner=owner, target="checkout", service="checkout", port=80)
    return GatewayAPIRouter(context, {"httpRoute": "checkout"})


def canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def test_set_weights_changes_only_the_owned_weights(kube: None, namespace: str) -> None:
    argo_apply(route_manifest(namespace))
    before = live(namespace)
    router = router_for(namespace)

    assert router.get_weights() == Weights(100, 0)
    router.set_weights(Weights(80, 20))
    after = live(namespace)

    assert router.get_weights() == Weights(80, 20)
    rules_before, rules_after = before["spec"]["rules"], after["spec"]["rules"]
    # Every other rule is byte-identical; in Paved's rule only the two weights changed.
    assert canon(rules_after[0]) == canon(rules_before[0])
    assert canon(rules_after[2]) == canon(rules_before[2])
    expected = copy.deepcopy(rules_before[1])
    expected["backendRefs"][0]["weight"], expected["backendRefs"][1]["weight"] = 80, 20
    assert canon(rules_after[1]) == canon(expected)
    for key in ("parentRefs", "hostnames"):
        assert canon(after["spec"][key]) == canon(before["spec"][key])
    assert after["metadata"].get("labels") == before["metadata"].get("labels")
    assert "ownerReferences" not in after["metadata"]  # the route stays the user's

    # Paved's own field manager holds spec.rules (an atomic list); the GitOps manager keeps
    # everything else it applied.
    owned = managers(after)
    assert owned[ROUTE_FIELD_MANAGER] == {"spec.rules"}
    assert {"spec.parentRefs", "spec.hostnames", "metadata.labels"} <= owned[ARGO]

    # The same weights again: no write at all.
    router.set_weights(Weights(80, 20))
    assert live(namespace)["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]


def test_a_second_field_manager_keeps_working_without_conflicts(kube: None, namespace: str) -> None:
    manifest = route_manifest(namespace)
    argo_apply(manifest)
    router = router_for(namespace)
    router.set_weights(Weights(50, 50))

    # Argo CD with `managedFieldsManagers: [paved-rollout]` + RespectIgnoreDifferences sends
    # the live rules back with its own changes elsewhere: no conflict, weights kept.
    synced = copy.deepcopy(manifest)
    synced["metadata"]["labels"]["app.kubernetes.io/version"] = "2"
    synced["spec"]["hostnames"] = ["shop.example.com", "www.shop.example.com"]
    synced["spec"]["rules"] = live(namespace)["spec"]["rules"]
    argo_apply(synced)  # no force: a conflict would raise
    after = live(namespace)
    assert after["spec"]["hostnames"] == ["shop.example.com", "www.shop.example.com"]
    assert router.get_weights() == Weights(50, 50)

    # Paved keeps stepping; the GitOps manager's fields are untouched by it.
    router.set_weights(Weights(0, 100))
    final = live(namespace)
    assert final["spec"]["hostnames"] == after["spec"]["hostnames"]
    assert final["metadata"]["labels"] == after["metadata"]["labels"]
    assert {"spec.parentRefs", "spec.hostnames", "metadata.labels"} <= managers(final)[ARGO]

    # Without the ignore rule, a sync of the stale Git weights is a conflict on spec.rules,
    # naming Paved's manager (that is what the docs tell Argo CD users to configure).
    with pytest.raises(kube_client.ApiError) as conflict:
        argo_apply(manifest)
    assert conflict.value.status == 409 and ROUTE_FIELD_MANAGER in conflict.value.message
    assert router.get_weights() == Weights(0, 100)


def test_a_concurrent_edit_between_read_and_write_is_never_lost(kube: None, namespace: str) -> None:
    """The write carries the resourceVersion it read: an edit that lands in between makes it
    fail with 409, and the router starts over from a fresh read."""
    argo_apply(route_manifest(namespace))
    edited = threading.Event()

    class RacingKube(ApiKube):
        def apply_fields(self, body: Mapping[str, Any], *, field_manager: str, subresource: str | None = None) -> dict[str, Any]:
            if body["kind"] == KIND and not edited.is_set():  # someone edits another rule right after our read
                edited.set()
                change = route_manifest(namespace)
                change["spec"]["rules"] = copy.deepcopy(live(namespace)["spec"]["rules"])
                change["spec"]["rules"][2]["matches"][0]["path"]["value"] = "/healthz"
                argo_apply(change, force=True)
            return super().apply_fields(body, field_manager=field_manager, subresource=subresource)

    router = router_for(namespace)
    router.kube = RacingKube()
    router.set_weights(Weights(95, 5))
    after = live(namespace)
    assert edited.is_set()
    assert after["spec"]["rules"][2]["matches"][0]["path"]["value"] == "/healthz"  # kept
    assert router.get_weights() == Weights(95, 5)


def test_routes_that_cannot_be_steered_name_the_field(kube: None, namespace: str) -> None:
    manifest = route_manifest(namespace)
    manifest["spec"]["rules"][1]["backendRefs"] = [{"name": "checkout", "port": 80}]
    argo_apply(manifest)
    router = router_for(namespace)
    with pytest.raises(RouterError) as refused:
        router.get_weights()
    assert refused.value.field == "spec.trafficRouting.gatewayAPI.httpRoute"
    assert not refused.value.retryable
    assert "checkout-stable" in str(refused.value)
    missing = GatewayAPIRouter(router.context, {"httpRoute": "nope"})
    with pytest.raises(RouterError, match="HTTPRoute nope not found"):
        missing.get_weights()


def test_finalize_hands_the_rules_back_to_the_users_service(kube: None, namespace: str) -> None:
    argo_apply(route_manifest(namespace))
    router = router_for(namespace)
    router.set_weights(Weights(60, 40))
    router.finalize()
    rule = live(namespace)["spec"]["rules"][1]
    assert [ref["name"] for ref in rule["backendRefs"]] == ["checkout", "legacy"]
    assert rule["filters"][0]["type"] == "RequestMirror"
    router.finalize()  # idempotent: nothing of Paved's is left to hand back
