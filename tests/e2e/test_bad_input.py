"""Bad input is refused early and clearly, and never stops the operator serving others.

1. The CRD schema: the API server rejects the object, naming the field path.
2. The handler: an object that passes the schema but cannot be rendered gets Ready=False
   with a reason and a message naming the field; nothing is created for it; other intents
   keep becoming Ready; fixing the spec makes it Ready.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from e2e.cluster import Cluster, condition
from fixtures.cluster import Kubectl
from fixtures.operator import OperatorProcess
from paved.identity.ceiling import AGGREGATION_LABEL

pytestmark = pytest.mark.cluster


def manifest(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump({"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity",
                           "metadata": {"name": name, "namespace": namespace}, "spec": spec})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"capabilities": [{"resources": ["configmaps"], "verbs": ["fly"]}]}, "spec.capabilities[0].verbs[0]"),
        ({"capabilities": [{"resources": [], "verbs": ["get"]}]}, "spec.capabilities[0].resources"),
        ({"capabilities": [{"resources": ["pods"], "verbs": ["get"]}], "colour": "red"}, "spec.colour"),
        ({"ttl": "8h", "expiresAt": "2030-01-01T00:00:00Z"}, "set at most one of: expiresAt, ttl"),
    ],
    ids=["unknown-verb", "empty-resources", "unknown-field", "exclusive-fields"],
)
def test_schema_violations_are_rejected_by_the_api_server_with_the_field(
    cluster: Cluster, namespace: str, spec: dict[str, Any], expected: str
) -> None:
    result = cluster.apply(manifest("broken", namespace, spec), check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert cluster.get("agentidentity", "broken", namespace) is None


def test_unrenderable_intent_gets_a_condition_and_the_operator_keeps_serving(
    operator: OperatorProcess, kubectl: Kubectl, cluster: Cluster, namespace: str
) -> None:
    # The API accepts the verb (RBAC knows it) and the platform's ceiling holds it (labelled in
    # below, so the ceiling check passes); the default composition's verb list does not.
    extension = f"e2e-impersonate-ceiling-{namespace}"
    cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": extension, "labels": {AGGREGATION_LABEL: "true"}},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["impersonate"]}]})
    try:
        refused_by_the_render(operator, kubectl, cluster, namespace)
    finally:
        kubectl("delete", "clusterrole", extension, "--ignore-not-found", check=False)


def refused_by_the_render(operator: OperatorProcess, kubectl: Kubectl, cluster: Cluster, namespace: str) -> None:
    unknown = {"capabilities": [{"resources": ["configmaps"], "verbs": ["impersonate"]}]}
    cluster.apply(manifest("greedy", namespace, unknown))
    cluster.apply(manifest("modest", namespace, {"capabilities": [{"resources": ["configmaps"], "verbs": ["get"]}]}))

    # (OutsideCeiling first, if the API server has not aggregated the ceiling's new part yet.)
    ready = condition(cluster.wait_condition("agentidentity", "greedy", namespace, status="False", reason="RenderFailed"))
    assert ready["message"].startswith("spec.capabilities[0].verbs: ")
    assert 'unknown verb "impersonate"' in ready["message"]

    cluster.wait_condition("agentidentity", "modest", namespace)
    assert operator.alive()
    # Nothing was created for the refused intent.
    assert cluster.get("serviceaccount", "greedy", namespace) is None
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=greedy", "-o", "json")
    assert "RenderFailed" in {event["reason"] for event in json.loads(events.stdout)["items"]}

    # Fixing the spec is enough: the update handler renders it.
    cluster.apply(manifest("greedy", namespace, {"capabilities": [{"resources": ["configmaps"], "verbs": ["get", "list"]}]}))
    fixed = cluster.wait_condition("agentidentity", "greedy", namespace)
    assert condition(fixed)["observedGeneration"] == 2
