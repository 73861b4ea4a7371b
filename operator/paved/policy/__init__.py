"""Guardrails: IntentPolicy rules in CEL, evaluated over an intent and what it renders to.

Pure: no Kubernetes, cloud or Vault clients and no I/O. The admission webhook, the
continuous audit and `paved validate` all call the same three steps:

    compiled, broken = compile_policies(policy_objects)     # cached by name + spec hash
    verdicts = evaluate(compiled, intent, rendered, namespace_object, exceptions, now=now)
    allowed, warnings, message = admission_decision(verdicts)

`check_intent` does the render-then-evaluate step in one call (placeholders for outputs and
generated values), so callers never re-implement the glue.

Rules see `object` (the intent), `rendered` (list of {name, provider, body}),
`namespaceObject` (the Namespace or null) and `params` (the policy's params); `true` means
compliant. See paved.policy.cel for the dialect.
"""

from paved.policy.check import CheckResult, check_intent
from paved.policy.compile import CompiledPolicy, CompiledRule, PolicyCache, compile_policies, compile_policy
from paved.policy.evaluate import admission_decision, evaluate, policy_view
from paved.policy.exceptions import ExceptionMatch, find_exception
from paved.policy.types import Mode, Outcome, PolicyCompileError, RuleError, Verdict

__all__ = [
    "CheckResult",
    "CompiledPolicy",
    "CompiledRule",
    "ExceptionMatch",
    "Mode",
    "Outcome",
    "PolicyCache",
    "PolicyCompileError",
    "RuleError",
    "Verdict",
    "admission_decision",
    "check_intent",
    "compile_policies",
    "compile_policy",
    "evaluate",
    "find_exception",
    "policy_view",
]
