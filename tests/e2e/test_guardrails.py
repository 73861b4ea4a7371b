"""Guardrails against the real API server: it calls the operator's admission webhook over TLS.

One test walks the whole story in a labelled namespace with its own IntentPolicy (selected by
that label, so other tests' intents are never judged): Enforce rejects with the rule's
message; Audit admits and reports (PolicyCompliant=False, PolicyReport); a policy change
re-audits existing intents without touching them; a PolicyException admits until it expires
and the report then shows the expired exception; a policy whose CEL does not compile is
refused at apply, naming rule and position, and blocks nothing else.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.cluster import Kubectl, wait_for
from fixtures.operator import OperatorProcess
from paved.dev.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
POLICYREPORT_CRD = ROOT / "crds" / "third-party" / "wgpolicyk8s.io_policyreports.yaml"
MESSAGE = "databases must be encrypted at rest (guardrails e2e)"


def policy(name: str, selector: dict[str, str], mode: str, rules: list[dict[str, str]]) -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "IntentPolicy", "metadata": {"name": name},
            "spec": {"match": {"kinds": ["DatabaseIntent"], "namespaceSelector": {"matchLabels": selector}},
                     "mode": mode, "rules": rules}}


ENCRYPTED = {"name": "encrypted", "expression": "object.spec.encryption == true", "message": MESSAGE}
LONG_BACKUPS = {"name": "long-backups", "expression": "object.spec.backup.retentionDays >= 60",
                "message": "keep backups for 60 days"}


def database(name: str, namespace: str, encryption: bool) -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent", "metadata": {"name": name, "namespace": namespace},
            "spec": {"engine": "postgresql", "version": "16", "encryption": encryption, "backup": {"retentionDays": 30}}}


def apply(kubectl: Kubectl, obj: dict[str, Any], *extra: str, check: bool = False) -> Any:
    return kubectl("apply", "-f", "-", *extra, input=yaml.safe_dump(obj), check=check)


def refused_once_the_webhook_serves(kubectl: Kubectl, obj: dict[str, Any]) -> Any:
    """The refusal of `obj`, retried until the webhook is registered. An apply that got in before
    is undone first: applying the same spec again changes nothing, which the webhook's
    matchConditions let through unjudged."""
    def attempt() -> Any:
        result = apply(kubectl, obj)
        if result.returncode == 0:
            kubectl("delete", "-f", "-", "--wait=false", input=yaml.safe_dump(obj), check=False)
            return None
        return result
    return wait_for(attempt, timeout=60, what="the webhook to refuse it")


def get(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    result = kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def report_results(kubectl: Kubectl, namespace: str, intent: str) -> list[dict[str, Any]]:
    report = get(kubectl, "policyreports.wgpolicyk8s.io", "paved-policy", "-n", namespace)
    return [r for r in report.get("results") or [] if any(res.get("name") == intent for res in r.get("resources") or [])]


def test_enforce_audit_reaudit_exception_and_bad_cel(
    operator: OperatorProcess, control_plane: ControlPlane, kubectl: Kubectl, namespace: str
) -> None:
    control_plane.apply([POLICYREPORT_CRD])
    label = {"paved.dev/guardrails-e2e": namespace}
    kubectl("label", "namespace", namespace, f"paved.dev/guardrails-e2e={namespace}", "paved.dev/policy-exceptions=allowed")
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    broken = f"{name}-broken"
    try:
        # A policy with CEL that does not compile is refused at apply (once the webhook is registered).
        bad = policy(broken, label, "Enforce", [{"name": "typo", "expression": "object.spec.encryption ==", "message": "x"}])
        refused = refused_once_the_webhook_serves(kubectl, bad)
        assert "typo" in refused.stderr and "line 1, column" in refused.stderr, refused.stderr

        apply(kubectl, policy(name, label, "Enforce", [ENCRYPTED]), check=True)
        wait_for(lambda: condition(get(kubectl, "intentpolicy", name), "Ready").get("status") == "True", what="policy Ready")

        # Enforce: rejected, naming policy, rule and message; nothing stored.
        denied = apply(kubectl, database("plain", namespace, encryption=False))
        assert denied.returncode != 0
        assert f"{name}/encrypted (Enforce): {MESSAGE}" in denied.stderr, denied.stderr
        assert not get(kubectl, "databaseintent", "plain", "-n", namespace)
        # Unrelated objects are not blocked (neither by this policy nor by the broken one).
        apply(kubectl, database("good", namespace, encryption=True), check=True)

        # Audit: admitted, then reported on the intent and in the namespace's PolicyReport.
        apply(kubectl, policy(name, label, "Audit", [ENCRYPTED]), check=True)
        wait_for(lambda: apply(kubectl, database("plain", namespace, encryption=False)).returncode == 0, what="Audit admits")
        compliant = wait_for(lambda: (c := condition(get(kubectl, "dbi", "plain", "-n", namespace), "PolicyCompliant"))
                             .get("status") == "False" and c, what="PolicyCompliant=False")
        assert compliant["reason"] == "Violation" and f"{name}/encrypted (Audit)" in compliant["message"]
        results = wait_for(lambda: report_results(kubectl, namespace, "plain"), what="PolicyReport entry")
        assert results[0]["policy"] == name and results[0]["rule"] == "encrypted" and results[0]["result"] == "warn"
        assert condition(get(kubectl, "dbi", "good", "-n", namespace), "PolicyCompliant").get("status") == "True"

        # A policy change re-audits existing intents; they are reported, never changed or deleted.
        good_spec = get(kubectl, "dbi", "good", "-n", namespace)["spec"]
        apply(kubectl, policy(name, label, "Enforce", [ENCRYPTED, LONG_BACKUPS]), check=True)
        wait_for(lambda: "long-backups" in condition(get(kubectl, "dbi", "good", "-n", namespace), "PolicyCompliant")
                 .get("message", ""), what="re-audit of an existing intent")
        assert get(kubectl, "dbi", "good", "-n", namespace)["spec"] == good_spec
        wait_for(lambda: "(Enforce)" in condition(get(kubectl, "dbi", "plain", "-n", namespace), "PolicyCompliant")
                 .get("message", ""), what="plain re-audited under Enforce")
        apply(kubectl, policy(name, label, "Enforce", [ENCRYPTED]), check=True)

        # An exception admits the named intents until it expires; then creates are denied again.
        expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=20)
        exception = {"apiVersion": "paved.dev/v1alpha1", "kind": "PolicyException",
                     "metadata": {"name": "legacy", "namespace": namespace},
                     "spec": {"policy": name, "rules": ["encrypted"], "reason": "legacy import, ticket 42",
                              "expiresAt": expires.isoformat().replace("+00:00", "Z"),
                              "intents": [{"kind": "DatabaseIntent", "name": "legacy-a"},
                                          {"kind": "DatabaseIntent", "name": "legacy-b"}]}}
        apply(kubectl, exception, check=True)
        admitted = wait_for(lambda: (r := apply(kubectl, database("legacy-a", namespace, encryption=False))).returncode == 0 and r,
                            what="exception admits")
        assert "excepted by PolicyException" in admitted.stderr, admitted.stderr  # the Warning
        wait_for(lambda: condition(get(kubectl, "dbi", "legacy-a", "-n", namespace), "PolicyCompliant").get("reason") == "Excepted",
                 what="Excepted condition")

        wait_for(lambda: datetime.now(timezone.utc) > expires, timeout=40, interval=1)
        late = apply(kubectl, database("legacy-b", namespace, encryption=False))
        assert late.returncode != 0 and MESSAGE in late.stderr, late.stderr
        expired = wait_for(lambda: [r for r in report_results(kubectl, namespace, "legacy-a")
                                    if (r.get("properties") or {}).get("exceptionState") == "expired"],
                           timeout=30, what="expired exception in the report")
        assert expired[0]["result"] == "fail" and expired[0]["properties"]["exception"] == f"{namespace}/legacy"
        assert condition(get(kubectl, "policyexception", "legacy", "-n", namespace), "Expired").get("status") == "True"
        assert get(kubectl, "dbi", "legacy-a", "-n", namespace)  # reported, not deleted
    finally:
        kubectl("delete", "intentpolicy", name, broken, "--ignore-not-found", check=False)


def test_exceptions_are_refused_in_namespaces_the_platform_does_not_name(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    exception = {"apiVersion": "paved.dev/v1alpha1", "kind": "PolicyException",
                 "metadata": {"name": "sneaky", "namespace": namespace},
                 "spec": {"policy": "encryption-required", "rules": ["storage-encrypted"], "reason": "because",
                          "expiresAt": "2099-01-01T00:00:00Z", "intents": [{"kind": "DatabaseIntent", "name": "x"}]}}
    result = refused_once_the_webhook_serves(kubectl, exception)
    assert "not allowed in namespace" in result.stderr, result.stderr


@pytest.mark.parametrize("kind", ["ExternalSecretRef", "ProgressiveRollout"])
def test_a_composition_cannot_claim_a_kind_that_compositions_do_not_render(kubectl: Kubectl, kind: str) -> None:
    """Their own engines serve these kinds: a Composition for one would never be rendered, yet
    admission would judge what it describes. The API server refuses it, naming the field."""
    name = f"claims-{kind.lower()}"
    composition = {"apiVersion": "paved.dev/v1alpha1", "kind": "Composition", "metadata": {"name": name},
                   "spec": {"compositeKind": kind, "default": True, "resources": [
                       {"name": "config", "provider": "kubernetes", "template": "{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}"}]}}
    result = apply(kubectl, composition)
    assert result.returncode != 0 and "spec.compositeKind" in result.stderr and "supported values" in result.stderr, result.stderr
    assert get(kubectl, "composition", name) == {}
