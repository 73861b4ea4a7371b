"""Pure parts of the audit: conditions, exception state, wake-up times, PolicyReport bodies."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from paved.engines import audit as handlers
from paved.kube import policyreport
from paved.policy import Mode, Outcome, Verdict, decisions

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def verdict(outcome: Outcome, mode: Mode = Mode.ENFORCE, **extra: object) -> Verdict:
    return Verdict("enc", "encrypted", mode, outcome, "encrypt it", **extra)  # type: ignore[arg-type]


def test_compliance_condition() -> None:
    assert decisions.compliance_condition([])[1:3] == (True, "NoPolicies")
    assert decisions.compliance_condition([verdict(Outcome.PASS)])[1:] == (True, "Compliant", "1 rule passes")
    assert decisions.compliance_condition([verdict(Outcome.PASS)] * 2)[3] == "2 rules pass"
    failed = decisions.compliance_condition([verdict(Outcome.PASS), verdict(Outcome.FAIL, Mode.AUDIT)])
    assert failed[:3] == ("PolicyCompliant", False, "Violation") and "enc/encrypted (Audit): encrypt it" in failed[3]
    assert decisions.compliance_condition([verdict(Outcome.ERROR, detail="no such key")])[2] == "RuleError"
    excepted = verdict(Outcome.EXCEPTED, exception="team/legacy", expires_at=NOW)
    assert decisions.compliance_condition([excepted])[1:3] == (True, "Excepted")
    assert decisions.compliance_condition([verdict(Outcome.PASS)], render_error="boom")[1:3] == ("Unknown", "NotRendered")


def test_policy_condition_names_rule_and_position() -> None:
    body = {"metadata": {"name": "p"}, "spec": {"match": {"kinds": ["DatabaseIntent"]},
                                                 "rules": [{"name": "r1", "expression": "object.spec.(", "message": "m"}]}}
    type_, status, reason, message = decisions.policy_condition(body)
    assert (type_, status, reason) == ("Ready", False, "CompileError")
    assert "r1" in message and "line 1, column" in message
    body["spec"]["rules"][0]["expression"] = "true"
    assert decisions.policy_condition(body)[1:] == (True, "Compiled", "1 rule compiled")
    # a policy that only allows is not an empty one: the message says what it allows
    allowing = {"metadata": {"name": "a"}, "spec": {"match": {"kinds": ["AgentIdentity"]}, "allow": ["ClusterScope"]}}
    assert decisions.policy_condition(allowing)[1:] == (True, "Compiled", "0 rules compiled; allows ClusterScope")


def test_exception_conditions_expire_by_themselves() -> None:
    body = {"metadata": {"namespace": "team"}, "spec": {"expiresAt": "2030-01-01T00:10:00Z"}}
    assert decisions.exception_conditions(body, True, NOW)[0][1:3] == (True, "Active")
    later = decisions.exception_conditions(body, True, NOW + timedelta(hours=1))
    assert later[0][1:3] == (False, "Expired") and later[1][:2] == ("Expired", True)
    refused = decisions.exception_conditions(body, False, NOW)[0]
    assert refused[2] == "NamespaceNotAllowed" and "--exception-namespace" in refused[3]  # says how to fix it


def test_audit_wakes_at_the_next_expiry_or_after_the_jittered_interval() -> None:
    exceptions = [{"spec": {"expiresAt": "2030-01-01T00:00:30Z"}}, {"spec": {"expiresAt": "2029-01-01T00:00:00Z"}}]
    expiry = decisions.next_expiry(exceptions, NOW)
    assert expiry == NOW + timedelta(seconds=30)
    assert handlers.audit_wait(600, NOW, expiry, uniform=lambda a, b: b) == 30.5
    assert handlers.audit_wait(600, NOW, None, uniform=lambda a, b: b) == 660


def test_exceptions_for_filters_namespaces() -> None:
    index = {"team": [{"spec": {}}]}
    assert handlers.exceptions_for("team", None, index, frozenset({"team"})) == [{"spec": {}}]
    assert handlers.exceptions_for("team", None, index, frozenset()) == []
    assert handlers.exceptions_for("other", {"metadata": {"labels": {decisions.EXCEPTIONS_LABEL: "allowed"}}}, index, frozenset()) == []


def test_policy_report_maps_outcomes_and_shows_expired_exceptions() -> None:
    ref = {"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent", "name": "db", "namespace": "team", "uid": "u1"}
    verdicts = [
        verdict(Outcome.PASS),
        verdict(Outcome.FAIL, Mode.AUDIT),
        verdict(Outcome.FAIL, exception="team/legacy", expires_at=NOW),
        verdict(Outcome.EXCEPTED, Mode.WARN, exception="team/legacy", expires_at=NOW),
        verdict(Outcome.ERROR, detail="bad"),
    ]
    report = policyreport.build_report("team", [(ref, verdicts)])
    assert report["metadata"] == {"name": "paved-policy", "namespace": "team", "labels": {"app.kubernetes.io/managed-by": "paved"}}
    assert report["summary"] == {"pass": 1, "fail": 1, "warn": 1, "error": 1, "skip": 1}
    expired = next(r for r in report["results"] if r["properties"].get("exceptionState") == "expired")
    assert expired["result"] == "fail" and expired["properties"]["expiresAt"] == "2030-01-01T00:00:00Z"
    assert all(r["resources"] == [ref] for r in report["results"])
    assert policyreport.build_report("team", [(ref, list(reversed(verdicts)))]) == report  # stable: no churn


def applied_as(writes: list[tuple[str, str, dict]]) -> Any:
    """A stand-in for kube_status.apply_status: records (field manager, name, status) and
    answers the object with that status."""

    def apply_status(api_version: str, kind: str, namespace: str | None, name: str, status: Any, *,
                     field_manager: str) -> dict:
        writes.append((field_manager, name, dict(status)))
        return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace},
                "status": dict(status)}

    return apply_status


def test_platform_status_is_remembered_only_once_written(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from paved.kube.client import ApiError

    writes: list[tuple[str, str, dict]] = []

    def failing(*args: object, **kwargs: object) -> None:
        raise ApiError(500, "InternalError", "etcd is down")

    exception = {"kind": "PolicyException", "metadata": {"name": "e", "namespace": "team", "generation": 2}, "status": {}}
    conditions = decisions.exception_conditions({"spec": {"expiresAt": "2030-01-01T00:10:00Z"}}, True, NOW)
    monkeypatch.setattr(handlers.kube_status, "apply_status", failing)
    handlers.write_platform_status(exception, conditions)
    assert exception["status"] == {}  # not written: the next audit pass tries again
    monkeypatch.setattr(handlers.kube_status, "apply_status", applied_as(writes))
    handlers.write_platform_status(exception, conditions)
    handlers.write_platform_status(exception, conditions)
    assert len(writes) == 1 and exception["status"]["observedGeneration"] == 2  # written once, then quiet
    assert writes[0][0] == "paved-policy-audit" and {c["type"] for c in writes[0][2]["conditions"]} == {"Ready", "Expired"}


def test_audit_view_keeps_what_the_audit_reads_and_drops_the_rest() -> None:
    body = {
        "apiVersion": "paved.dev/v1alpha1", "kind": "ExternalSecretRef",
        "metadata": {"name": "r", "namespace": "app", "uid": "u1", "generation": 2, "labels": {"team": "a"},
                     "managedFields": [{"manager": "kubectl"}], "resourceVersion": "7"},
        "spec": {"storeRef": {"name": "vault"}},
        "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True", "observedGeneration": 2}],
                   "sourceVersions": {"k": "1"}},
    }
    view = handlers.audit_view(body)
    assert view["metadata"] == {"name": "r", "namespace": "app", "uid": "u1", "generation": 2, "labels": {"team": "a"}}
    assert view["spec"] is body["spec"] and view["status"] == {"observedGeneration": 2, "conditions": body["status"]["conditions"]}


def test_a_condition_the_intent_carries_for_its_generation_is_not_written(monkeypatch: Any) -> None:
    from paved import ratelimit

    writes: list[tuple[str, str, dict]] = []
    monkeypatch.setattr(handlers.kube_status, "apply_status", applied_as(writes))
    bucket = ratelimit.TokenBucket(handlers.AUDIT_WRITE_RATE, handlers.AUDIT_WRITE_BURST)
    condition = ("PolicyCompliant", True, "NoPolicies", "")
    shown = {"type": "PolicyCompliant", "status": "True", "reason": "NoPolicies", "message": "", "observedGeneration": 2,
             "lastTransitionTime": "2030-01-01T00:00:00Z"}
    intent = {"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": "a", "generation": 2},
              "status": {"conditions": [shown]}}
    assert not handlers.write_condition(intent, condition, bucket) and writes == []
    assert handlers.write_condition({**intent, "metadata": {"name": "a", "generation": 3}}, condition, bucket)
    assert handlers.write_condition(intent, ("PolicyCompliant", False, "Violations", "r1"), bucket)
    assert handlers.write_condition({**intent, "status": {}}, condition, bucket)
    assert [name for _, name, _ in writes] == ["a", "a", "a"]
    assert all(status == {"conditions": [status["conditions"][0]]} for _, _, status in writes)  # its own condition only


def test_condition_writes_wait_for_a_token_only_while_a_reconciler_holds_the_burst_flag(monkeypatch: Any) -> None:
    from paved import ratelimit

    waits: list[int] = []
    bucket = ratelimit.TokenBucket(handlers.AUDIT_WRITE_RATE, handlers.AUDIT_WRITE_BURST)
    monkeypatch.setattr(bucket, "take", lambda: waits.append(1))
    recorded: list[tuple[str, str, dict]] = []
    monkeypatch.setattr(handlers.kube_status, "apply_status", applied_as(recorded))
    intent = {"apiVersion": "paved.dev/v1alpha1", "kind": "ExternalSecretRef",
              "metadata": {"name": "a", "namespace": "ns", "generation": 1}, "status": {}}
    condition = ("PolicyCompliant", True, "NoPolicies", "no IntentPolicy applies")
    assert handlers.write_condition(intent, condition, bucket) and waits == []
    with ratelimit.BURST.held():
        assert handlers.write_condition({**intent, "metadata": {**intent["metadata"], "name": "b"}}, condition, bucket)
    assert waits == [1] and [name for _, name, _ in recorded] == ["a", "b"]


class _Namespaces:
    """The audit's namespace cache, without a cluster."""

    def get(self, namespace: str | None) -> dict[str, Any] | None:
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": {}}}


def test_the_audit_judges_a_new_intent_at_once_and_writes_its_condition_once(monkeypatch: Any) -> None:
    """The audit no longer waits for the intent's Ready: its PolicyCompliant and the
    reconcile's conditions are applied by separate field managers. An event body read before
    the audit's own write (the reconcile's status write, say) causes no second write; a new
    generation is judged again."""
    from paved.kube.status import with_conditions

    writes: list[tuple[str, str, dict]] = []
    monkeypatch.setattr(handlers.kube_status, "apply_status", applied_as(writes))
    monkeypatch.setattr(handlers.policyreport, "installed", lambda: False)
    auditor = handlers.Auditor(namespaces=frozenset(), exception_namespaces=frozenset(), namespace_cache=_Namespaces())  # type: ignore[arg-type]
    auditor.full_requested = False
    created = {"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity",
               "metadata": {"name": "a", "namespace": "team", "uid": "u1", "generation": 1}, "spec": {}}
    auditor.observe("ADDED", created)  # no status yet, no Ready: judged all the same
    auditor.run_once()
    assert [(manager, name) for manager, name, _ in writes] == [("paved-policy-audit", "a")]
    reconciled = {**created, "status": with_conditions({"observedGeneration": 1}, [("Ready", True, "Ready", "")], 1)}
    for _ in range(3):  # events of the reconcile's writes, each read before the audit's write landed
        auditor.observe("MODIFIED", reconciled)
        auditor.run_once()
    assert len(writes) == 1
    auditor.observe("MODIFIED", {**reconciled, "metadata": {**created["metadata"], "generation": 2}})
    auditor.run_once()
    assert len(writes) == 2 and writes[1][2]["conditions"][0]["observedGeneration"] == 2
