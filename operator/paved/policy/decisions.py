"""Pure guardrail decisions: admission answers and the conditions policies, exceptions and
audited intents get. The admission webhook and the audit (paved.handlers.admission/.policy)
only gather inputs and write these out; everything here is a function of its arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paved.api.common import EXPIRED, POLICY_COMPLIANT, READY, ConditionSpec, parse_rfc3339
from paved.policy.check import check_intent
from paved.policy.compile import CompiledPolicy, compile_policy
from paved.policy.evaluate import admission_decision
from paved.policy.types import PolicyCompileError, Verdict

EXCEPTIONS_LABEL = "paved.dev/policy-exceptions"  # on a Namespace: PolicyExceptions there are honoured


@dataclass(frozen=True)
class Review:
    """An admission answer: `message` is set when denied."""

    allowed: bool
    warnings: tuple[str, ...] = ()
    message: str = ""


def spec_unchanged(operation: str | None, body: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """An UPDATE that does not touch spec (metadata, finalizers, annotations) or a deletion in progress."""
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return True
    return operation == "UPDATE" and old is not None and (old.get("spec") or {}) == (body.get("spec") or {})


def review_intent(
    operation: str | None,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    policies: Iterable[CompiledPolicy],
    compositions: Iterable[Mapping[str, Any]],
    namespace_object: Mapping[str, Any] | None,
    exceptions: Iterable[Mapping[str, Any]] = (),
    *,
    now: datetime,
) -> Review:
    """Admit or deny one intent create/update (pure)."""
    if operation not in ("CREATE", "UPDATE") or spec_unchanged(operation, body, old):
        return Review(True)
    result = check_intent(body, compositions, policies, namespace_object, exceptions, now=now)
    allowed, warnings, message = admission_decision(result.verdicts)
    if result.render_error is not None and result.verdicts:
        warnings = [*warnings, f"rendered output not checked by IntentPolicies: {result.render_error}"]
    return Review(allowed, tuple(warnings), message)


def review_policy(body: Mapping[str, Any]) -> Review:
    """Refuse an IntentPolicy whose spec or CEL does not compile (compile errors name rule and position)."""
    try:
        compile_policy(body)
    except PolicyCompileError as error:
        return Review(False, message=str(error))
    return Review(True)


def review_exception(body: Mapping[str, Any], namespace_object: Mapping[str, Any] | None, allowed_namespaces: Iterable[str]) -> Review:
    """Refuse a PolicyException outside the namespaces the platform names."""
    namespace = (body.get("metadata") or {}).get("namespace")
    if exceptions_allowed_in(namespace_object, namespace, allowed_namespaces):
        return Review(True)
    return Review(False, message=exceptions_refused(namespace))


def exceptions_refused(namespace: str | None) -> str:
    """Why a PolicyException in `namespace` is refused (webhook) or not honoured (condition), and the fix."""
    return (f"PolicyExceptions are not allowed in namespace {namespace!r}: the platform team must list it in "
            f"`paved run --exception-namespace` or label it {EXCEPTIONS_LABEL}=allowed")


def exceptions_allowed_in(namespace_object: Mapping[str, Any] | None, namespace: str | None, allowed: Iterable[str]) -> bool:
    if not namespace:
        return False
    if namespace in set(allowed):
        return True
    labels = ((namespace_object or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(EXCEPTIONS_LABEL) == "allowed"


def policy_condition(body: Mapping[str, Any]) -> ConditionSpec:
    try:
        compile_policy(body)
    except PolicyCompileError as error:
        return READY, False, "CompileError", str(error)
    spec = body.get("spec") or {}
    rules = len(spec.get("rules") or [])
    allows = f"; allows {', '.join(spec['allow'])}" if spec.get("allow") else ""
    return READY, True, "Compiled", f"{rules} rule{'s' if rules != 1 else ''} compiled{allows}"


def exception_conditions(body: Mapping[str, Any], allowed: bool, now: datetime) -> list[ConditionSpec]:
    expires = parse_rfc3339((body.get("spec") or {}).get("expiresAt"))
    if not allowed:
        namespace = (body.get("metadata") or {}).get("namespace")
        return [(READY, False, "NamespaceNotAllowed", exceptions_refused(namespace))]
    if expires is None:
        return [(READY, False, "InvalidExpiry", "spec.expiresAt is not an RFC 3339 time")]
    stamp = expires.isoformat().replace("+00:00", "Z")
    if now >= expires:
        return [(READY, False, EXPIRED, f"expired at {stamp}"), (EXPIRED, True, EXPIRED, f"expired at {stamp}")]
    return [(READY, True, "Active", f"active until {stamp}"), (EXPIRED, False, "Active", f"active until {stamp}")]


def compliance_condition(verdicts: Iterable[Verdict], render_error: Any = None) -> ConditionSpec:
    """PolicyCompliant from an intent's verdicts: names every violated policy/rule (no values)."""
    verdicts = list(verdicts)
    violations = [v for v in verdicts if v.violation]
    if violations:
        reason = "RuleError" if all(v.outcome.value == "error" for v in violations) else "Violation"
        return POLICY_COMPLIANT, False, reason, "; ".join(v.describe() for v in violations)
    if render_error is not None and verdicts:
        return POLICY_COMPLIANT, "Unknown", "NotRendered", f"rendered output not checked: {render_error}"
    excepted = [v for v in verdicts if v.outcome.value == "excepted"]
    if excepted:
        return POLICY_COMPLIANT, True, "Excepted", "; ".join(v.describe() for v in excepted)
    if not verdicts:
        return POLICY_COMPLIANT, True, "NoPolicies", "no IntentPolicy applies"
    return POLICY_COMPLIANT, True, "Compliant", "1 rule passes" if len(verdicts) == 1 else f"{len(verdicts)} rules pass"


def next_expiry(exceptions: Iterable[Mapping[str, Any]], now: datetime) -> datetime | None:
    """The earliest expiresAt still in the future (the audit wakes then)."""
    future = [t for t in (parse_rfc3339((e.get("spec") or {}).get("expiresAt")) for e in exceptions) if t and t > now]
    return min(future, default=None)
