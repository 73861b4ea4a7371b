"""Evaluate compiled IntentPolicies against one intent and what it renders to.

Pure: the caller brings the intent, its rendered resources, its Namespace object, the
PolicyExceptions and the time; the same call serves the admission webhook, the continuous
audit and `paved validate`, so all three always agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from paved.api.kinds import with_defaults
from paved.policy.allowances import allowances_for
from paved.policy.cel import to_cel
from paved.policy.compile import CompiledPolicy, content_hash
from paved.policy.exceptions import find_exception
from paved.policy.lru import BoundedCache
from paved.policy.types import Mode, Outcome, Verdict
from paved.render.sandbox import stop_requested
from paved.render.types import RenderedResource

REDACTED = "<redacted>"

Rendered = RenderedResource | Mapping[str, Any]
RuleResults = tuple[tuple[bool | None, str], ...]  # per rule: (result, error detail)

DEFAULT_MEMO: BoundedCache[tuple[str, str, str], RuleResults] = BoundedCache(20_000)
"""Rule results by (policy name, policy digest, inputs digest).

A rule's result is a pure function of the policy version and of what it reads, so the
periodic audit and repeated admission of unchanged intents (GitOps re-syncs, Kopf's own
annotation patches) cost a hash instead of a CEL evaluation, and a changed policy re-runs
only its own rules. Exceptions are applied after the memo, because they depend on `now`.
"""

_VOLATILE_METADATA = ("managedFields", "resourceVersion")


def evaluate(
    policies: Iterable[CompiledPolicy],
    intent: Mapping[str, Any],
    rendered: Iterable[Rendered] = (),
    namespace_object: Mapping[str, Any] | None = None,
    exceptions: Iterable[Mapping[str, Any]] = (),
    *,
    now: datetime,
    memo: BoundedCache[tuple[str, str, str], RuleResults] | None = DEFAULT_MEMO,
) -> list[Verdict]:
    """One Verdict per rule of every policy that applies to `intent` (passes included).

    `rendered` are the composed resources (RenderedResource or {name, provider, body});
    `namespace_object` the intent's Namespace (None when unknown: selector policies then do
    not apply); `now` decides which exceptions are still valid (the caller's clock: this core reads none);
    `memo=None` disables result memoisation.
    A rule that cannot be evaluated yields an `error` verdict and the other rules still run.
    Rules see the intent with the API models' defaults applied (paved.api.kinds.with_defaults)
    and without metadata.managedFields and metadata.resourceVersion.
    """
    kind = str(intent.get("kind") or "")
    labels = _labels(namespace_object)
    policies = list(policies)
    applicable = [policy for policy in policies if policy.applies_to(kind, labels) and policy.rules]
    if not applicable:
        return []
    allowed = allowances_for(policies, kind, labels)
    inputs = _Inputs(_policy_object(intent), [policy_view(resource) for resource in rendered], namespace_object, allowed)
    exception_list = list(exceptions)
    verdicts: list[Verdict] = []
    for policy in applicable:
        for rule, (result, detail) in zip(policy.rules, _results(policy, inputs, memo), strict=True):
            outcome = Outcome.PASS if result else Outcome.ERROR if result is None else Outcome.FAIL
            verdict = Verdict(policy.name, rule.name, policy.mode, outcome, rule.message, detail)
            if outcome is not Outcome.PASS and exception_list:
                verdict = _apply_exception(verdict, exception_list, intent, now)
            verdicts.append(verdict)
    return verdicts


class _Inputs:
    """What rules read, each variable converted to CEL at most once and only when a rule that is
    not memoised mentions it (converting the rendered bodies costs as much as a simple rule)."""

    def __init__(self, obj: dict[str, Any], rendered: list[dict[str, Any]], namespace_object: Mapping[str, Any] | None,
                 allowed: Mapping[str, list[str]]):
        self._raw: dict[str, Any] = {"object": obj, "rendered": rendered, "namespaceObject": namespace_object,
                                     "allowed": allowed}
        self._digest: str | None = None
        self._converted: dict[str, Any] = {}

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = content_hash(self._raw)
        return self._digest

    def activation(self, variables: frozenset[str], params: Any) -> dict[str, Any]:
        for name in variables - self._converted.keys() - {"params"}:
            self._converted[name] = to_cel(self._raw[name])
        return {**dict.fromkeys(self._raw), **self._converted, "params": params}


def _results(
    policy: CompiledPolicy, inputs: _Inputs, memo: BoundedCache[tuple[str, str, str], RuleResults] | None
) -> RuleResults:
    if memo is None:
        return _run(policy, inputs)
    key = (policy.name, policy.digest, inputs.digest)
    results = memo.get(key)
    if results is None:
        results = _run(policy, inputs)
        if not stop_requested():  # stopped by the caller's deadline: not the rules' own answer
            memo.put(key, results)
    return results


def _run(policy: CompiledPolicy, inputs: _Inputs) -> RuleResults:
    activation = inputs.activation(policy.variables, policy.params)
    return tuple(rule.program.run(activation) for rule in policy.rules)


def _policy_object(intent: Mapping[str, Any]) -> dict[str, Any]:
    """The intent as rules see it: defaults applied, plain dicts, volatile metadata removed."""
    obj: dict[str, Any] = _plain(with_defaults(intent))
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        obj["metadata"] = {k: v for k, v in metadata.items() if k not in _VOLATILE_METADATA}
    return obj


def _plain(value: Any) -> Any:
    """Mappings (e.g. Kopf bodies) to dicts and tuples to lists, so hashing sees plain JSON."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def admission_decision(verdicts: Sequence[Verdict]) -> tuple[bool, list[str], str]:
    """(allowed, warnings, message) for an admission response.

    Enforce fail/error denies, naming every policy, rule and message at once (so the user
    fixes everything in one round trip); Warn fail/error and every used exception become
    warnings; Audit is admitted silently and only reported by the audit.
    """
    denials = [v for v in verdicts if v.mode is Mode.ENFORCE and v.violation]
    warnings = [v.describe() for v in verdicts if v.mode is Mode.WARN and v.violation]
    warnings += [v.describe() for v in verdicts if v.mode is not Mode.AUDIT and v.outcome is Outcome.EXCEPTED]
    if not denials:
        return True, warnings, ""
    message = "denied by IntentPolicy: " + "; ".join(v.describe() for v in denials)
    return False, warnings, message


def policy_view(resource: Rendered) -> dict[str, Any]:
    """{name, provider, body} as rules see it, with secret values replaced by `<redacted>`.

    Callers should render with placeholders for generated values anyway; this is the second
    line of defence, so a rule (or an error message quoting a value) can never expose a
    Secret's data or a password parameter of a cloud call.
    """
    if isinstance(resource, RenderedResource):
        return {"name": resource.name, "provider": resource.provider, "body": _redact(resource.body)}
    return {
        "name": resource.get("name"),
        "provider": resource.get("provider"),
        "body": _redact(resource.get("body") or {}),
    }


def _redact(body: Mapping[str, Any]) -> dict[str, Any]:
    redacted = {key: _redact_value(key, value) for key, value in body.items()}
    if body.get("kind") == "Secret":
        for field in ("data", "stringData"):
            if isinstance(body.get(field), Mapping):
                redacted[field] = {key: REDACTED for key in body[field]}
    return redacted


def _redact_value(key: Any, value: Any) -> Any:
    if isinstance(value, str) and "password" in str(key).lower():
        return REDACTED
    if isinstance(value, Mapping):
        return _redact(value)
    if isinstance(value, list):
        return [_redact_value(key, item) for item in value]
    return value


def _apply_exception(
    verdict: Verdict, exceptions: list[Mapping[str, Any]], intent: Mapping[str, Any], now: datetime
) -> Verdict:
    found = find_exception(exceptions, verdict.policy, verdict.rule, intent, now)
    if found is None:
        return verdict
    outcome = Outcome.EXCEPTED if found.active else verdict.outcome
    return replace(verdict, outcome=outcome, exception=found.name, expires_at=found.expires_at)


def _labels(namespace_object: Mapping[str, Any] | None) -> Mapping[str, str] | None:
    if namespace_object is None:
        return None
    return (namespace_object.get("metadata") or {}).get("labels") or {}
