"""CEL evaluation is bounded (paved.policy.cel): cost bombs end in an `error` verdict naming the
rule (and only that rule), a rollout condition meeting the limit is refused naming its field,
deep nesting is a compile error, the default policies fit in the budget for the largest intents
the API admits, and a caller's deadline stops an evaluation without poisoning the memo.

Sizes are chosen so that each bomb *completes* (in seconds, in a few megabytes) without the
limit, so these tests fail rather than hang on an unbounded evaluator.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from paved.policy.cel import CelCompileError, compile_expression, to_cel
from paved.policy.compile import compile_policies
from paved.policy.evaluate import admission_decision, evaluate
from paved.policy.lru import BoundedCache
from paved.render.sandbox import stop_when
from paved.rollout.plan import validate_spec
from paved.rollout.simulate import example_spec

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def activation(obj: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"object": to_cel(obj), "rendered": to_cel([]), "namespaceObject": None,
            "params": to_cel(params or {}), "allowed": to_cel({})}


BOMBS = {
    "nested comprehensions": ("params.items.all(a, params.items.all(b, a != b || a == b))", {"items": list(range(120))}),
    "exponential string growth": ("[object.metadata.name]" + ".map(a, a + a)" * 22 + ".size() > 0", {}),
    "list doubling": ("[params.items]" + ".map(l, l + l)" * 16 + ".size() > 0", {"items": [1, 2]}),
    "list of lists": ("params.items.map(a, params.items + [a]).size() > 0", {"items": list(range(600))}),
}


@pytest.mark.parametrize(("expression", "params"), BOMBS.values(), ids=BOMBS.keys())
def test_a_cost_bomb_is_an_error_not_a_hang(expression: str, params: dict[str, Any]) -> None:
    result, detail = compile_expression(expression).run(activation({"metadata": {"name": "ab"}}, params))
    assert result is None
    assert "cost limit" in detail or "larger than" in detail


def test_deep_nesting_is_a_compile_error_with_a_reason() -> None:
    with pytest.raises(CelCompileError, match="nested too deeply"):
        compile_expression("(" * 2000 + "true" + ")" * 2000)


def test_a_bomb_in_an_enforced_policy_denies_naming_policy_and_rule() -> None:
    policy = {"metadata": {"name": "bomb"}, "spec": {
        "match": {"kinds": ["AgentIdentity"]}, "params": {"items": list(range(120))},
        "rules": [{"name": "quadratic", "expression": BOMBS["nested comprehensions"][0], "message": "m"}]}}
    compiled, errors = compile_policies([policy])
    assert not errors
    intent = {"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": "a", "namespace": "n"},
              "spec": {"capabilities": [{"resources": ["pods"], "verbs": ["get"]}]}}
    allowed, _warnings, message = admission_decision(evaluate(compiled, intent, now=NOW, memo=None))
    assert not allowed
    assert "bomb/quadratic (Enforce)" in message and "cost limit" in message


def test_a_bomb_fails_only_its_own_rule() -> None:
    """The budget is per rule: the policy's other rule, and the other policy, still give their own verdicts."""
    bomb = BOMBS["exponential string growth"][0]
    policies = [{"metadata": {"name": "mixed"}, "spec": {"match": {"kinds": ["AgentIdentity"]}, "mode": "Audit", "rules": [
                    {"name": "bomb", "expression": bomb, "message": "m"},
                    {"name": "named", "expression": "object.metadata.name == 'a'", "message": "m"}]}},
                {"metadata": {"name": "other"}, "spec": {"match": {"kinds": ["AgentIdentity"]}, "mode": "Audit", "rules": [
                    {"name": "fails", "expression": "object.metadata.name == 'b'", "message": "m"}]}}]
    compiled, errors = compile_policies(policies)
    assert not errors
    intent = {"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": "a", "namespace": "n"},
              "spec": {"capabilities": [{"resources": ["pods"], "verbs": ["get"]}]}}
    outcomes = {(v.policy, v.rule): v.outcome.value for v in evaluate(compiled, intent, now=NOW, memo=None)}
    assert outcomes == {("mixed", "bomb"): "error", ("mixed", "named"): "pass", ("other", "fails"): "fail"}


def test_a_bomb_in_a_rollout_condition_is_refused_naming_the_condition() -> None:
    """Rollout conditions run on the same bounded evaluator; the dry run at validation meets the limit."""
    spec = example_spec()
    spec["analysis"]["metrics"][0]["failureCondition"] = "[string(result)]" + ".map(a, a + a)" * 20 + ".size() == 0"
    errors = {error.path: error.message for error in validate_spec(spec)}
    assert list(errors) == ["spec.analysis.metrics[0].failureCondition"]
    assert "cost limit" in errors["spec.analysis.metrics[0].failureCondition"]


def largest_agent() -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": "a", "namespace": "n"},
            "spec": {"capabilities": [{"apiGroups": [f"g{k}" for k in range(8)], "resources": [f"r{j}" for j in range(32)],
                                       "verbs": ["get", "list", "watch", "create", "update", "patch", "delete",
                                                 "deletecollection", "use", "bind", "escalate", "impersonate",
                                                 "approve", "sign", "get", "list"]} for _ in range(32)]}}


def test_the_default_policies_judge_the_largest_intents_within_the_budget() -> None:
    documents = [doc for path in sorted((ROOT / "compositions" / "policies").glob("*.yaml"))
                 for doc in yaml.safe_load_all(path.read_text()) if doc]
    compiled, errors = compile_policies(documents)
    assert not errors
    verdicts = evaluate(compiled, largest_agent(), now=NOW, memo=None)
    assert verdicts and all(v.outcome.value == "pass" for v in verdicts), [v.describe() for v in verdicts]


def test_the_largest_legitimate_rule_needs_under_half_the_budget() -> None:
    """no-wildcard-resources over 32 capabilities x 32 resources, written twice, still fits."""
    once = "object.spec.capabilities.all(c, c.resources.all(r, !r.contains('*')))"
    assert compile_expression(f"{once} && {once}").run(activation(largest_agent())) == (True, "")


def test_a_caller_can_stop_an_evaluation_and_the_memo_keeps_no_stopped_result() -> None:
    policy = {"metadata": {"name": "slow"}, "spec": {
        "match": {"kinds": ["AgentIdentity"]}, "params": {"items": list(range(40))},
        "rules": [{"name": "r", "expression": "params.items.all(a, params.items.exists(b, a == b))", "message": "m"}]}}
    compiled, _ = compile_policies([policy])
    intent = largest_agent()
    memo: BoundedCache[Any, Any] = BoundedCache(16)
    with stop_when(lambda: True):
        (stopped,) = evaluate(compiled, intent, now=NOW, memo=memo)
    assert stopped.outcome.value == "error" and "time ran out" in stopped.detail
    assert len(memo) == 0
    (passed,) = evaluate(compiled, intent, now=NOW, memo=memo)
    assert passed.outcome.value == "pass"
