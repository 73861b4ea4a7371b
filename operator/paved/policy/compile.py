"""IntentPolicy objects -> CompiledPolicy, once per distinct spec.

Compiling CEL is far more expensive than evaluating it, and the same policies are evaluated
for every admission request and every audit pass, so compiled policies are cached by name and
a hash of the spec: an edited policy recompiles, an unchanged one never does (whatever its
resourceVersion says). Failures are cached as well, so a broken policy costs one compile, not
one per request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from paved.api.kinds import SpecError, kind_info
from paved.api.platform import IntentPolicySpec
from paved.policy.cel import CelCompileError, Program, compile_expression, to_cel
from paved.policy.lru import BoundedCache
from paved.policy.types import Mode, PolicyCompileError, RuleError
from paved.render.select import matches


@dataclass(frozen=True)
class CompiledRule:
    name: str
    message: str
    program: Program


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy ready to evaluate: what it matches, its mode, CEL programs and params as CEL values."""

    name: str
    digest: str  # hash of the spec: identifies this version of the policy (cache and memo keys)
    mode: Mode
    kinds: frozenset[str]
    namespace_labels: Mapping[str, str] | None
    params: Any
    rules: tuple[CompiledRule, ...]
    allow: frozenset[str] = frozenset()  # allowances (ClusterScope, Wildcards) for matched intents

    @property
    def variables(self) -> frozenset[str]:
        """The rule variables any rule of this policy reads (the others need not be converted)."""
        return frozenset().union(*(rule.program.variables for rule in self.rules))

    def applies_to(self, kind: str, namespace_labels: Mapping[str, str] | None) -> bool:
        """match.kinds contains `kind` and match.namespaceSelector (if any) selects the namespace.

        An intent whose namespace is unknown has no labels, so a policy with a selector does
        not apply to it; policies without a selector always do.
        """
        if kind not in self.kinds:
            return False
        return self.namespace_labels is None or matches({"matchLabels": self.namespace_labels}, namespace_labels or {})


class PolicyCache:
    """Compiled policies (and compile failures) by name and spec hash; bounded and thread-safe."""

    def __init__(self, max_size: int = 1024) -> None:
        self._entries: BoundedCache[tuple[str, str], CompiledPolicy | PolicyCompileError] = BoundedCache(max_size)

    def compile(self, policy: Mapping[str, Any]) -> CompiledPolicy:
        """The compiled form of an IntentPolicy object; PolicyCompileError lists every problem."""
        name = str((policy.get("metadata") or {}).get("name") or "")
        key = (name, content_hash(policy.get("spec")))
        entry = self._entries.get(key)
        if entry is None:
            try:
                entry = _compile(name, key[1], policy.get("spec"))
            except PolicyCompileError as error:
                entry = error
            self._entries.put(key, entry)
        if isinstance(entry, PolicyCompileError):
            raise entry.with_traceback(None)  # a cached error must not accumulate tracebacks
        return entry

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_DEFAULT_CACHE = PolicyCache()


def compile_policy(policy: Mapping[str, Any], cache: PolicyCache | None = None) -> CompiledPolicy:
    """Compile an IntentPolicy object (a dict as stored by the API server), cached."""
    return (_DEFAULT_CACHE if cache is None else cache).compile(policy)


def compile_policies(
    policies: Iterable[Mapping[str, Any]], cache: PolicyCache | None = None
) -> tuple[list[CompiledPolicy], list[PolicyCompileError]]:
    """Compile all; broken ones are returned separately so they never block the others."""
    compiled: list[CompiledPolicy] = []
    errors: list[PolicyCompileError] = []
    for policy in policies:
        try:
            compiled.append(compile_policy(policy, cache))
        except PolicyCompileError as error:
            errors.append(error)
    return compiled, errors


def _compile(name: str, digest: str, raw_spec: Any) -> CompiledPolicy:
    if not name:
        raise PolicyCompileError("<unnamed>", (RuleError("metadata.name", "an IntentPolicy needs a name"),))
    spec = _parse_spec(name, raw_spec)
    errors: list[RuleError] = []
    rules: list[CompiledRule] = []
    for index, rule in enumerate(spec.rules):
        try:
            rules.append(CompiledRule(rule.name, rule.message, compile_expression(rule.expression)))
        except CelCompileError as error:
            problem = error.problem
            errors.append(
                RuleError(f"spec.rules[{index}].expression", problem.message, rule.name, problem.line, problem.column)
            )
    if errors:
        raise PolicyCompileError(name, tuple(errors))
    selector = spec.match.namespaceSelector
    return CompiledPolicy(
        name=name,
        digest=digest,
        mode=Mode(spec.mode),
        kinds=frozenset(spec.match.kinds),
        namespace_labels=dict(selector.matchLabels) if selector is not None else None,
        params=to_cel(spec.params),
        rules=tuple(rules),
        allow=frozenset(spec.allow),
    )


def _parse_spec(name: str, raw_spec: Any) -> IntentPolicySpec:
    """Validate with the API model, so the policy core and the CRD schema agree on the shape."""
    if not isinstance(raw_spec, Mapping):
        raise PolicyCompileError(name, (RuleError("spec", "an IntentPolicy needs a spec with match and rules"),))
    try:
        spec = kind_info("IntentPolicy").parse_spec(raw_spec)
    except SpecError as error:
        raise PolicyCompileError(name, tuple(_rule_error(problem) for problem in error.problems)) from None
    assert isinstance(spec, IntentPolicySpec)  # noqa: S101
    return spec


def _rule_error(problem: str) -> RuleError:
    """SpecError lines read "spec.path: message"."""
    field, _, message = problem.partition(": ")
    return RuleError(field, message or problem)


def content_hash(value: Any) -> str:
    """sha256 of the canonical JSON of `value` (key order and whitespace do not matter)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
