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

from fixtures.cluster import Kubectl, wait_for
from fixtures.operator import OperatorProcess

pytestmark = pytest.mark.cluster


def manifest(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump({"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity",
                           "metadata": {"name": name, "namespace": namespace}, "spec": spec})


def ready_condition(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    result = kubectl("get", "agentidentity", name, "-n", namespace, "-o", "json")
    conditions = (json.loads(result.stdout).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


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
    kubectl: Kubectl, namespace: str, spec: dict[str, Any], expected: str
) -> None:
    result = kubectl("apply", "-f", "-", input=manifest("broken", namespace, spec), check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert kubectl("get", "agentidentity", "broken", "-n", namespace, check=False).returncode != 0


def test_unrenderable_intent_gets_a_condition_and_the_operator_keeps_serving(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    # The API accepts the verb (RBAC knows it); the default composition's verb list does not.
    unknown = {"capabilities": [{"resources": ["configmaps"], "verbs": ["impersonate"]}]}
    kubectl("apply", "-f", "-", input=manifest("greedy", namespace, unknown))
    kubectl("apply", "-f", "-", input=manifest("modest", namespace, {"capabilities": [{"resources": ["configmaps"], "verbs": ["get"]}]}))

    condition = wait_for(lambda: (c := ready_condition(kubectl, namespace, "greedy")).get("reason") and c,
                         timeout=60, what="a Ready condition on the unrenderable intent")
    assert condition["status"] == "False"
    assert condition["reason"] == "RenderFailed"
    assert condition["message"].startswith("spec.capabilities[0].verbs: ")
    assert 'unknown verb "impersonate"' in condition["message"]

    kubectl("wait", "--for=condition=Ready", "agentidentity/modest", "-n", namespace, "--timeout=60s")
    assert operator.alive()
    # Nothing was created for the refused intent.
    assert kubectl("get", "serviceaccount", "greedy", "-n", namespace, check=False).returncode != 0
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=greedy", "-o", "json")
    assert "RenderFailed" in {event["reason"] for event in json.loads(events.stdout)["items"]}

    # Fixing the spec is enough: the update handler renders it.
    kubectl("apply", "-f", "-", input=manifest("greedy", namespace, {"capabilities": [{"resources": ["configmaps"], "verbs": ["get", "list"]}]}))
    kubectl("wait", "--for=condition=Ready", "agentidentity/greedy", "-n", namespace, "--timeout=60s")
    assert ready_condition(kubectl, namespace, "greedy")["observedGeneration"] == 2
