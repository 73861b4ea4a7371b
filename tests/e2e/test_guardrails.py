"""Guardrails against the real API server: it calls the operator's admission webhook over TLS.

One test walks the whole story in a labelled namespace with its own IntentPolicy (selected by
that label, so other tests' intents are never judged): Enforce rejects with the rule's
message; Audit admits and reports (PolicyCompliant=False, PolicyReport); a policy change
re-audits existing intents without touching them; a PolicyException admits until it expires
and the report then shows the expired exception; a policy whose CEL does not compile is
refused at apply, naming rule and position, and blocks nothing else.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import Cluster, condition
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


def report_results(cluster: Cluster, namespace: str, intent: str) -> list[dict[str, Any]]:
    report = cluster.get("policyreports.wgpolicyk8s.io", "paved-policy", namespace) or {}
    return [r for r in report.get("results") or [] if any(res.get("name") == intent for res in r.get("resources") or [])]


def test_enforce_audit_reaudit_exception_and_bad_cel(
    operator: OperatorProcess, control_plane: ControlPlane, kubectl: Kubectl, cluster: Cluster, namespace: str
) -> None:
    control_plane.apply([POLICYREPORT_CRD])
    label = {"paved.dev/guardrails-e2e": namespace}
    kubectl("label", "namespace", namespace, f"paved.dev/guardrails-e2e={namespace}", "paved.dev/policy-exceptions=allowed")
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    broken = f"{name}-broken"
    try:
        # A policy with CEL that does not compile is refused at apply (once the webhook is registered).
        bad = policy(broken, label, "Enforce", [{"name": "typo", "expression": "object.spec.encryption ==", "message": "x"}])
        refused = cluster.refused(bad)
        assert "typo" in refused.stderr and "line 1, column" in refused.stderr, refused.stderr

        cluster.apply(policy(name, label, "Enforce", [ENCRYPTED]))
        cluster.wait_condition("intentpolicy", name)

        # Enforce: rejected, naming policy, rule and message; nothing stored.
        denied = cluster.apply(database("plain", namespace, encryption=False), check=False)
        assert denied.returncode != 0
        assert f"{name}/encrypted (Enforce): {MESSAGE}" in denied.stderr, denied.stderr
        assert not cluster.get("databaseintent", "plain", namespace)
        # Unrelated objects are not blocked (neither by this policy nor by the broken one).
        cluster.apply(database("good", namespace, encryption=True))

        # Audit: admitted, then reported on the intent and in the namespace's PolicyReport.
        cluster.apply(policy(name, label, "Audit", [ENCRYPTED]))
        wait_for(lambda: cluster.apply(database("plain", namespace, encryption=False), check=False).returncode == 0, what="Audit admits")
        compliant = condition(cluster.wait_condition("dbi", "plain", namespace, "PolicyCompliant", status="False"), "PolicyCompliant")
        assert compliant["reason"] == "Violation" and f"{name}/encrypted (Audit)" in compliant["message"]
        results = wait_for(lambda: report_results(cluster, namespace, "plain"), what="PolicyReport entry")
        assert results[0]["policy"] == name and results[0]["rule"] == "encrypted" and results[0]["result"] == "warn"
        assert condition(cluster.get("dbi", "good", namespace), "PolicyCompliant").get("status") == "True"

        # A policy change re-audits existing intents; they are reported, never changed or deleted.
        good_spec = cluster.get("dbi", "good", namespace)["spec"]  # type: ignore[index]
        cluster.apply(policy(name, label, "Enforce", [ENCRYPTED, LONG_BACKUPS]))
        wait_for(lambda: "long-backups" in condition(cluster.get("dbi", "good", namespace), "PolicyCompliant")
                 .get("message", ""), what="re-audit of an existing intent")
        assert cluster.get("dbi", "good", namespace)["spec"] == good_spec  # type: ignore[index]
        wait_for(lambda: "(Enforce)" in condition(cluster.get("dbi", "plain", namespace), "PolicyCompliant")
                 .get("message", ""), what="plain re-audited under Enforce")
        cluster.apply(policy(name, label, "Enforce", [ENCRYPTED]))

        # An exception admits the named intents until it expires; then creates are denied again.
        expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=20)
        exception = {"apiVersion": "paved.dev/v1alpha1", "kind": "PolicyException",
                     "metadata": {"name": "legacy", "namespace": namespace},
                     "spec": {"policy": name, "rules": ["encrypted"], "reason": "legacy import, ticket 42",
                              "expiresAt": expires.isoformat().replace("+00:00", "Z"),
                              "intents": [{"kind": "DatabaseIntent", "name": "legacy-a"},
                                          {"kind": "DatabaseIntent", "name": "legacy-b"}]}}
        cluster.apply(exception)
        admitted = wait_for(lambda: (r := cluster.apply(database("legacy-a", namespace, encryption=False), check=False)).returncode == 0 and r,
                            what="exception admits")
        assert "excepted by PolicyException" in admitted.stderr, admitted.stderr  # the Warning
        cluster.wait_condition("dbi", "legacy-a", namespace, "PolicyCompliant", status=None, reason="Excepted")

        wait_for(lambda: datetime.now(timezone.utc) > expires, timeout=40, interval=1)
        late = cluster.apply(database("legacy-b", namespace, encryption=False), check=False)
        assert late.returncode != 0 and MESSAGE in late.stderr, late.stderr
        expired = wait_for(lambda: [r for r in report_results(cluster, namespace, "legacy-a")
                                    if (r.get("properties") or {}).get("exceptionState") == "expired"],
                           timeout=30, what="expired exception in the report")
        assert expired[0]["result"] == "fail" and expired[0]["properties"]["exception"] == f"{namespace}/legacy"
        assert condition(cluster.get("policyexception", "legacy", namespace), "Expired").get("status") == "True"
        assert cluster.get("dbi", "legacy-a", namespace)  # reported, not deleted
    finally:
        kubectl("delete", "intentpolicy", name, broken, "--ignore-not-found", check=False)


def test_exceptions_are_refused_in_namespaces_the_platform_does_not_name(
    operator: OperatorProcess, kubectl: Kubectl, cluster: Cluster, namespace: str
) -> None:
    exception = {"apiVersion": "paved.dev/v1alpha1", "kind": "PolicyException",
                 "metadata": {"name": "sneaky", "namespace": namespace},
                 "spec": {"policy": "encryption-required", "rules": ["storage-encrypted"], "reason": "because",
                          "expiresAt": "2099-01-01T00:00:00Z", "intents": [{"kind": "DatabaseIntent", "name": "x"}]}}
    result = cluster.refused(exception)
    assert "not allowed in namespace" in result.stderr, result.stderr


@pytest.mark.parametrize("kind", ["ExternalSecretRef", "ProgressiveRollout"])
def test_a_composition_cannot_claim_a_kind_that_compositions_do_not_render(cluster: Cluster, kind: str) -> None:
    """Their own engines serve these kinds: a Composition for one would never be rendered, yet
    admission would judge what it describes. The API server refuses it, naming the field."""
    name = f"claims-{kind.lower()}"
    composition = {"apiVersion": "paved.dev/v1alpha1", "kind": "Composition", "metadata": {"name": name},
                   "spec": {"compositeKind": kind, "default": True, "resources": [
                       {"name": "config", "provider": "kubernetes", "template": "{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}"}]}}
    result = cluster.apply(composition, check=False)
    assert result.returncode != 0 and "spec.compositeKind" in result.stderr and "supported values" in result.stderr, result.stderr
    assert cluster.get("composition", name) is None
