"""spec.autoscalerRef end to end: the copies' HPAs derived from the user's, against the real
control plane (its controller-manager runs the HPA controller, which enforces the bounds even
without a metrics API: a copy below an HPA's minimum is raised to it)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from e2e.shop import Shop
from fixtures.cluster import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.usefixtures("operator")]


def user_hpa(shop: Shop, min_replicas: int = 2, max_replicas: int = 6) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "checkout", "namespace": shop.namespace},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"},
                     "minReplicas": min_replicas, "maxReplicas": max_replicas,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}}


def paused_rollout(shop: Shop, **spec: Any) -> dict[str, Any]:
    body = shop.rollout(steps=[{"setWeight": 50}, {"pause": {}}], autoscalerRef={"name": "checkout"}, **spec)
    del body["spec"]["analysis"]
    return body


def bounds(shop: Shop, name: str) -> tuple[str, int, int] | None:
    if not shop.exists("hpa", name):
        return None
    spec = shop.get("hpa", name)["spec"]
    return spec["scaleTargetRef"]["name"], spec["minReplicas"], spec["maxReplicas"]


def wait_bounds(shop: Shop, name: str, expected: tuple[str, int, int], when: str) -> None:
    wait_for(lambda: bounds(shop, name) == expected, timeout=30,
             what=f"HPA {name} {expected} {when} (last seen {bounds(shop, name)})")


def test_the_copies_get_hpas_derived_from_the_users_and_the_canarys_follow_its_weight(shop: Shop) -> None:
    shop.apply(user_hpa(shop))
    wait_for(lambda: shop.get("deployment", "checkout")["spec"]["replicas"] == 2, what="the user's HPA at rest")
    users = shop.get("hpa", "checkout")
    # Scaled down, the user's Deployment is at 0, where its HPA does not act: the user's count
    # (2) and what the stable copy's HPA makes of it are two different numbers.
    shop.apply(paused_rollout(shop, originalScaleDown="OnSuccess"))
    shop.wait_status(lambda s: s.get("phase") == "Succeeded", "the bootstrap")
    wait_bounds(shop, "checkout-stable", ("checkout-stable", 2, 6), "after the bootstrap")
    wait_bounds(shop, "checkout-canary", ("checkout-canary", 1, 1), "after the bootstrap")

    shop.new_version("v2")
    shop.wait_phase("Paused")
    wait_bounds(shop, "checkout-canary", ("checkout-canary", 1, 3), "with the canary at 50%")
    shop.kubectl("annotate", "progressiverollout", "checkout", "-n", shop.namespace, "--overwrite",
                 "paved.dev/command=promote", f"paved.dev/command-id={uuid.uuid4().hex}")
    shop.wait_promoted()
    wait_bounds(shop, "checkout-canary", ("checkout-canary", 1, 1), "after the promotion")
    # The user's HPA is the user's: the same object, untouched.
    after = json.loads(shop.kubectl("get", "hpa", "checkout", "-n", shop.namespace, "-o", "json",
                                    "--show-managed-fields").stdout)
    assert after["spec"] == users["spec"]
    assert not [entry for entry in after["metadata"]["managedFields"] if entry["manager"].startswith("paved")]

    # The HPA, not Paved, owns the stable copy's count between transitions: a higher minimum
    # raises it above the user's count and Paved leaves it there.
    shop.apply(user_hpa(shop, min_replicas=3))
    wait_bounds(shop, "checkout-stable", ("checkout-stable", 3, 6), "after the user's HPA changed")
    wait_for(lambda: shop.get("deployment", "checkout-stable")["spec"]["replicas"] == 3, timeout=60,
             what="the stable copy raised by its HPA")
    # Wake the rollout for a tick (any change of it does) and give it time: the count stays.
    shop.kubectl("annotate", "progressiverollout", "checkout", "-n", shop.namespace, "--overwrite", "example.com/poke=1")
    time.sleep(3)
    status = shop.status()
    assert status["phase"] == "Succeeded" and shop.route_weights() == (100, 0)
    assert shop.get("deployment", "checkout-stable")["spec"]["replicas"] == 3
    assert status["originalReplicas"] == 2 and shop.get("deployment", "checkout")["spec"]["replicas"] == 0


def test_an_autoscaler_ref_to_a_missing_hpa_is_refused_naming_the_field_and_stable_keeps_the_traffic(shop: Shop) -> None:
    body = shop.rollout(steps=[{"setWeight": 50}, {"pause": {}}])
    del body["spec"]["analysis"]
    shop.apply(body)
    shop.wait_status(lambda s: s.get("phase") == "Succeeded", "the bootstrap")
    # The running rollout gets an autoscalerRef to an HPA that does not exist, then a new version.
    body["spec"]["autoscalerRef"] = {"name": "missing"}
    shop.apply(body)
    condition = wait_for(lambda: (c := shop.condition("Ready")).get("reason") == "AutoscalerInvalid" and c,
                         timeout=30, what="Ready=False AutoscalerInvalid")
    assert condition["status"] == "False" and condition["message"].startswith("spec.autoscalerRef.name: ")
    assert "missing not found" in condition["message"]
    shop.new_version("v2")
    for _ in range(3):  # a few seconds after the new version: nothing moves
        time.sleep(1)
        assert shop.route_weights() == (100, 0)
        assert shop.status()["canaryWeight"] == 0
    assert not shop.exists("hpa", "checkout-stable") and not shop.exists("deployment", "checkout-canary")
    assert "no traffic moved" in shop.status()["message"]


def poke(shop: Shop) -> None:
    """Wake the rollout for a tick (any change of it does)."""
    shop.kubectl("annotate", "progressiverollout", "checkout", "-n", shop.namespace, "--overwrite",
                 f"example.com/poke={uuid.uuid4().hex}")


def test_a_deleted_copy_hpa_is_applied_again_and_dropping_the_ref_deletes_both(shop: Shop) -> None:
    shop.apply(user_hpa(shop))
    body = paused_rollout(shop)
    shop.apply(body)
    shop.wait_status(lambda s: s.get("phase") == "Succeeded", "the bootstrap")
    wait_bounds(shop, "checkout-stable", ("checkout-stable", 2, 6), "after the bootstrap")
    wait_bounds(shop, "checkout-canary", ("checkout-canary", 1, 1), "after the bootstrap")
    # Status says it was asked for; the cluster says otherwise: Paved applies it again.
    shop.kubectl("delete", "hpa", "checkout-canary", "-n", shop.namespace)
    poke(shop)
    wait_bounds(shop, "checkout-canary", ("checkout-canary", 1, 1), "after someone deleted it")

    # Without the autoscalerRef Paved sets the copies' counts again: their HPAs must go.
    del body["spec"]["autoscalerRef"]
    shop.apply(body)
    wait_for(lambda: not shop.exists("hpa", "checkout-stable") and not shop.exists("hpa", "checkout-canary"),
             timeout=30, what="the copies' HPAs deleted")
    assert shop.exists("hpa", "checkout")  # the user's is the user's
    status = shop.wait_status(lambda s: not (s.get("progress") or {}).get("autoscalers"), "the HPAs forgotten")
    assert status["phase"] == "Succeeded" and shop.route_weights() == (100, 0)


def test_under_replica_ratio_the_stable_copys_hpa_keeps_it_at_its_share(shop: Shop) -> None:
    """With replicaRatio the pod counts are the traffic split: at 50% each copy's HPA holds
    half of the user's 4 pods, so the stable copy's HPA does not raise it back to 4."""
    shop.apply(user_hpa(shop, min_replicas=4, max_replicas=4))
    wait_for(lambda: shop.get("deployment", "checkout")["spec"]["replicas"] == 4, what="the user's HPA at rest")
    # replicaRatio: the user's Service selects only the copies' pods.
    shop.kubectl("patch", "service", "checkout", "-n", shop.namespace, "--type=merge",
                 "-p", json.dumps({"spec": {"selector": {"paved.dev/rollout": "checkout"}}}))
    shop.apply(paused_rollout(shop, trafficRouting={"replicaRatio": {}}))
    shop.wait_status(lambda s: s.get("phase") == "Succeeded", "the bootstrap")
    wait_bounds(shop, "checkout-stable", ("checkout-stable", 4, 4), "after the bootstrap")
    shop.new_version("v2")
    shop.wait_phase("Paused")
    wait_bounds(shop, "checkout-stable", ("checkout-stable", 2, 2), "with the canary at 50%")
    wait_bounds(shop, "checkout-canary", ("checkout-canary", 2, 2), "with the canary at 50%")
    time.sleep(20)  # longer than the HPA controller's sync period (15 s)
    assert [shop.get("deployment", name)["spec"]["replicas"] for name in ("checkout-stable", "checkout-canary")] == [2, 2]
