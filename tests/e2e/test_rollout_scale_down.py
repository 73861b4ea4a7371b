"""spec.originalScaleDown end to end: pods of the user's Deployment and of Paved's copies.

The control plane's kwok node runs the pods, so the counts are real pods as the API server
has them. The user's Deployment has 2 replicas (tests/e2e/shop.py); the canary pauses at 50%
(1 canary pod) until promoted or aborted, so "during" is a steady state, not a race.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import yaml

from e2e.shop import Shop
from fixtures.cluster import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.usefixtures("operator")]

USER = 2
SCALE_FIELD_MANAGER = "paved-rollout-scale"
NOTE = "paved.dev/original-replicas"
# policy -> pods (bootstrapped, canary at 50%, after the promotion or the rollback)
EXPECTED = {
    "Never": (2 * USER, 2 * USER + 1, 2 * USER),
    "OnSuccess": (USER, USER + 1, USER),
    "Progressively": (USER, USER + 1, USER),
}


def pods(shop: Shop) -> int:
    """Pods of the app (the user's Deployment and both copies) not on their way out."""
    items = json.loads(shop.kubectl("get", "pods", "-l", "app=checkout", "-n", shop.namespace, "-o", "json").stdout)
    return sum(1 for pod in items["items"] if not pod["metadata"].get("deletionTimestamp"))


def wait_pods(shop: Shop, expected: int, when: str) -> None:
    wait_for(lambda: pods(shop) == expected, timeout=60, what=f"{expected} pods {when} (last seen {pods(shop)})")


def command(shop: Shop, kind: str) -> None:
    shop.kubectl("annotate", "progressiverollout", "checkout", "-n", shop.namespace, "--overwrite",
                 f"paved.dev/command={kind}", f"paved.dev/command-id={uuid.uuid4().hex}")


def paused_rollout(shop: Shop, policy: str) -> dict[str, Any]:
    """A canary that stops at 50% until a command; no analysis (the commands decide)."""
    body = shop.rollout(steps=[{"setWeight": 50}, {"pause": {}}], originalScaleDown=policy)
    del body["spec"]["analysis"]
    return body


def scale_managers(shop: Shop) -> set[str]:
    """Field managers of the user's Deployment's spec.replicas."""
    target = json.loads(shop.kubectl("get", "deployment", "checkout", "-n", shop.namespace, "-o", "json",
                                     "--show-managed-fields").stdout)
    return {entry["manager"] for entry in target["metadata"].get("managedFields") or []
            if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})}


@pytest.mark.parametrize("policy", sorted(EXPECTED))
def test_pods_before_during_and_after_a_promoted_and_a_rolled_back_rollout(shop: Shop, policy: str) -> None:
    bootstrapped, during, after = EXPECTED[policy]
    wait_pods(shop, USER, "before the rollout")
    shop.apply(paused_rollout(shop, policy))
    shop.wait_status(lambda s: s.get("phase") == "Succeeded", "the bootstrap")
    wait_pods(shop, bootstrapped, "once Paved's stable copy serves")
    assert shop.status()["originalReplicas"] == USER

    shop.new_version("v2")
    shop.wait_phase("Paused")
    wait_pods(shop, during, "with the canary at 50%")
    command(shop, "promote")
    shop.wait_promoted()
    wait_pods(shop, after, "after the promotion")

    shop.new_version("v3")
    shop.wait_phase("Paused")
    wait_pods(shop, during, "with the next canary at 50%")
    command(shop, "abort")
    shop.wait_phase("RolledBack")
    wait_pods(shop, after, "after the rollback")
    assert shop.route_weights() == (100, 0)

    target = shop.get("deployment", "checkout")
    if policy == "Never":
        assert target["spec"]["replicas"] == USER and SCALE_FIELD_MANAGER not in scale_managers(shop)
    else:
        assert target["spec"]["replicas"] == 0 and target["metadata"]["annotations"][NOTE] == str(USER)
        assert scale_managers(shop) == {SCALE_FIELD_MANAGER}  # spec.replicas, nothing of the template

    # Deleting the rollout gives the user's Deployment its replicas back before the copies go.
    shop.kubectl("delete", "progressiverollout", "checkout", "-n", shop.namespace, "--wait=true", "--timeout=30s")
    target = shop.get("deployment", "checkout")
    assert target["spec"]["replicas"] == USER
    assert NOTE not in (target["metadata"].get("annotations") or {})
    wait_pods(shop, USER, "after the rollout was deleted")


def test_a_user_who_scales_the_scaled_down_deployment_sets_the_count_of_the_copies(shop: Shop) -> None:
    shop.apply(paused_rollout(shop, "OnSuccess"))
    shop.wait_status(lambda s: s.get("phase") == "Succeeded", "the bootstrap")
    wait_pods(shop, USER, "once Paved's stable copy serves")
    shop.kubectl("scale", "deployment/checkout", "--replicas=3", "-n", shop.namespace)
    wait_for(lambda: shop.status().get("originalReplicas") == 3, timeout=30, what="the user's new count")
    wait_for(lambda: shop.get("deployment", "checkout-stable")["spec"]["replicas"] == 3, timeout=30,
             what="the stable copy at the user's new count")
    wait_for(lambda: shop.get("deployment", "checkout")["spec"]["replicas"] == 0, timeout=30,
             what="the user's Deployment scaled down again")
    wait_pods(shop, 3, "at the user's new count")
    assert shop.get("deployment", "checkout")["metadata"]["annotations"][NOTE] == "3"


def test_a_target_that_is_not_a_deployment_or_an_unknown_scale_down_is_refused_naming_the_field(shop: Shop) -> None:
    cases = {
        "spec.targetRef.kind": shop.rollout("stateful", targetRef={"kind": "StatefulSet", "name": "checkout"}),
        "spec.targetRef.apiVersion": shop.rollout("old-api", targetRef={"apiVersion": "extensions/v1beta1",
                                                                        "kind": "Deployment", "name": "checkout"}),
        "spec.originalScaleDown": shop.rollout("sometimes", originalScaleDown="Sometimes"),
    }
    for field, body in cases.items():
        refused = shop.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)
        assert refused.returncode != 0 and field in refused.stderr, (field, refused.stderr)
    # The full form of a reference is accepted.
    shop.apply(shop.rollout(targetRef={"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"}))
    shop.wait_status(lambda s: s.get("phase") == "Succeeded", "the bootstrap")
