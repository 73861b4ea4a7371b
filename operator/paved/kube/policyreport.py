"""PolicyReports (wgpolicyk8s.io/v1alpha2): one per namespace, named `paved-policy`.

`build_report` is pure (verdicts -> report body); `installed` and `write_report` do the I/O.
The report carries no timestamps that move on every audit: a result's `timestamp` is left
out and the report is written only when its content changed, so the operator stays quiet
at idle (the audit runs every few minutes and would otherwise write every namespace's
report each time).

Mapping of Paved verdicts to the report format:
- pass -> `pass`; fail -> `fail` under Enforce, `warn` under Warn and Audit (admitted,
  but someone should act); error (the rule could not be evaluated) -> `error`;
  excepted (an active PolicyException) -> `skip`.
- `properties` hold the mode, the exception that excused (or used to excuse) the intent,
  its `expiresAt`, and `exceptionState` (`active` / `expired`), so an expired exception is
  visible in the report and not just silently gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from paved.kube.apply import MANAGED_BY, MANAGED_BY_LABEL, server_side_apply
from paved.kube.client import ApiError, Json, request, resource_info

API_VERSION = "wgpolicyk8s.io/v1alpha2"
KIND = "PolicyReport"
REPORT_NAME = "paved-policy"
SOURCE = "paved"


def result_of(verdict: Any) -> str:
    """The report's result word for one paved.policy.Verdict."""
    outcome, mode = verdict.outcome.value, verdict.mode.value
    if outcome == "pass":
        return "pass"
    if outcome == "excepted":
        return "skip"
    if outcome == "error":
        return "error"
    return "fail" if mode == "Enforce" else "warn"


def report_result(intent: Mapping[str, str], verdict: Any) -> Json:
    """One result entry: a rule of a policy for one intent (`intent`: apiVersion, kind, name, namespace, uid)."""
    properties = {"mode": verdict.mode.value}
    if verdict.exception:
        properties["exception"] = verdict.exception
        if verdict.expires_at is not None:
            properties["expiresAt"] = verdict.to_dict()["expiresAt"]
        properties["exceptionState"] = "active" if verdict.outcome.value == "excepted" else "expired"
    if verdict.detail:
        properties["error"] = verdict.detail
    return {
        "source": SOURCE,
        "policy": verdict.policy,
        "rule": verdict.rule,
        "result": result_of(verdict),
        "scored": True,
        "severity": "high" if verdict.mode.value == "Enforce" else "medium",
        "message": verdict.message,
        "properties": properties,
        "resources": [{key: intent[key] for key in ("apiVersion", "kind", "name", "namespace", "uid") if intent.get(key)}],
    }


def build_report(namespace: str, entries: Iterable[tuple[Mapping[str, str], Iterable[Any]]]) -> Json:
    """The PolicyReport of `namespace` from (intent reference, verdicts) pairs, in a stable order."""
    results = [report_result(intent, verdict) for intent, verdicts in entries for verdict in verdicts]
    results.sort(key=lambda r: (r["resources"][0].get("kind", ""), r["resources"][0].get("name", ""), r["policy"], r["rule"], r["result"]))
    summary = {"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0}
    for result in results:
        summary[result["result"]] += 1
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": REPORT_NAME, "namespace": namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
        "summary": summary,
        "results": results,
    }


def installed() -> bool:
    """Whether the PolicyReport CRD is served (discovery, refreshed when not cached as present)."""
    try:
        resource_info(API_VERSION, KIND)
    except ApiError as error:
        if error.not_found:
            return False
        raise
    return True


def write_report(report: Mapping[str, Any]) -> Json:
    """Server-side apply the report (field manager `paved`)."""
    return server_side_apply(report)


def delete_report(namespace: str) -> None:
    """Remove the namespace's report (no intent left to report on); absent is fine."""
    info = resource_info(API_VERSION, KIND)
    try:
        request("DELETE", info.path(REPORT_NAME, namespace), operation="delete")
    except ApiError as error:
        if not error.not_found:
            raise
