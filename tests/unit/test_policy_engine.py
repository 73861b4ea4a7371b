"""The policy core: compiling, matching, evaluating, exceptions and the admission decision."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from paved.policy import (
    Mode,
    Outcome,
    PolicyCache,
    PolicyCompileError,
    Verdict,
    admission_decision,
    check_intent,
    compile_policies,
    compile_policy,
    evaluate,
    policy_view,
)
from paved.policy.allowances import allowances_for
from paved.policy.lru import BoundedCache
from paved.render.types import RenderedResource

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def policy(name: str = "p", *rules: tuple[str, str], mode: str = "Enforce", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "paved.dev/v1alpha1",
        "kind": "IntentPolicy",
        "metadata": {"name": name},
        "spec": {
            "match": spec.pop("match", {"kinds": ["DatabaseIntent"]}),
            "mode": mode,
            "rules": [{"name": n, "expression": e, "message": f"fix {n}"} for n, e in rules or [("r", "true")]],
            **spec,
        },
    }


def database(name: str = "db", namespace: str = "team-a", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "paved.dev/v1alpha1",
        "kind": "DatabaseIntent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"engine": "postgresql", "version": "16", **spec},
    }


def namespace(labels: dict[str, str] | None = None, name: str = "team-a") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def exception(
    expires: datetime | str, *, rules: list[str] | None = None, intent: str = "db", ns: str = "team-a"
) -> dict[str, Any]:
    return {
        "kind": "PolicyException",
        "metadata": {"name": "ex", "namespace": ns},
        "spec": {
            "policy": "p",
            "rules": rules or ["r"],
            "intents": [{"kind": "DatabaseIntent", "name": intent}],
            "expiresAt": expires if isinstance(expires, str) else expires.isoformat(),
            "reason": "migration",
        },
    }


# --- compiling -----------------------------------------------------------------------------


def test_compile_error_names_rule_field_and_position() -> None:
    broken = policy("broken", ("good", "true"), ("typo", "object.spec.encryption &&\n  objekt.spec.x"))
    with pytest.raises(PolicyCompileError) as caught:
        compile_policy(broken, PolicyCache())
    (error,) = caught.value.errors
    assert (error.field, error.rule, error.line, error.column) == ("spec.rules[1].expression", "typo", 2, 3)
    assert "objekt" in error.message and "object, rendered, namespaceObject, params" in error.message
    assert "line 2, column 3" in str(caught.value) and "'broken'" in str(caught.value)


@pytest.mark.parametrize(
    ("expression", "fragment", "column"),
    [
        ("object.spec.x ==", "syntax error", 15),
        ("1 + )", "syntax error near ')'", 5),
        ("fooBar(object)", "unknown function 'fooBar'", 1),
        ("object.spec.tags.frobnicate()", "unknown function 'frobnicate'", 18),
        ("object.spec.tags.all(t, t != x)", "undeclared reference to 'x'", 30),
        ("object.spec.tags.all(1, true)", "all() needs a variable name", 18),
        ("object.spec.tags.reduce(a, b, 0, a)", "unknown function 'reduce'", 18),  # celpy-only extension
    ],
)
def test_compile_errors_are_positioned(expression: str, fragment: str, column: int) -> None:
    with pytest.raises(PolicyCompileError) as caught:
        compile_policy(policy("p", ("r", expression)), PolicyCache())
    (error,) = caught.value.errors
    assert fragment in error.message
    assert (error.line, error.column) == (1, column)


def test_compile_accepts_macros_types_and_deltas() -> None:
    compiled = compile_policy(
        policy(
            "ok",
            ("macros", "object.spec.tags.map(t, size(t)).filter(n, n > 1).exists_one(n, n == 2)"),
            ("types", "type(object.spec.encryption) == bool && int('3') == 3"),
            ("deltas", "deltas([1, 4]) == [3]"),
        ),
        PolicyCache(),
    )
    assert [rule.name for rule in compiled.rules] == ["macros", "types", "deltas"]


def test_structural_errors_name_the_field() -> None:
    bad = policy("bad", mode="Sometimes", match={"kinds": ["Pod"]})
    with pytest.raises(PolicyCompileError) as caught:
        compile_policy(bad, PolicyCache())
    fields = {error.field for error in caught.value.errors}
    assert fields == {"spec.mode", "spec.match.kinds[0]"}


def test_cache_compiles_once_per_spec_and_recompiles_on_change() -> None:
    cache = PolicyCache()
    first = compile_policy(policy("p", ("r", "true")), cache)
    assert compile_policy(policy("p", ("r", "true")), cache) is first
    changed = compile_policy(policy("p", ("r", "false")), cache)
    assert changed is not first and len(cache) == 2


def test_cache_remembers_failures_and_is_bounded() -> None:
    cache = PolicyCache(max_size=2)
    broken = policy("b", ("r", "1 +"))
    with pytest.raises(PolicyCompileError) as one:
        compile_policy(broken, cache)
    with pytest.raises(PolicyCompileError) as two:
        compile_policy(broken, cache)
    assert one.value is two.value
    for index in range(5):
        compile_policy(policy(f"p{index}"), cache)
    assert len(cache) == 2


def test_compile_policies_separates_broken_ones() -> None:
    compiled, broken = compile_policies([policy("a"), policy("b", ("r", "nope(")), policy("c")], PolicyCache())
    assert [p.name for p in compiled] == ["a", "c"]
    assert [e.policy for e in broken] == ["b"]


# --- matching ------------------------------------------------------------------------------


def test_policy_applies_by_kind_and_namespace_labels() -> None:
    prod_only = compile_policy(
        policy("prod", match={"kinds": ["DatabaseIntent"], "namespaceSelector": {"matchLabels": {"env": "prod"}}}),
        PolicyCache(),
    )
    assert evaluate([prod_only], database(), [], namespace({"env": "prod", "x": "y"}), now=NOW)
    assert not evaluate([prod_only], database(), [], namespace({"env": "dev"}), now=NOW)
    assert not evaluate([prod_only], database(), [], None, now=NOW)  # namespace unknown: no labels
    other_kind = dict(database(), kind="AgentIdentity", spec={})
    anywhere = compile_policy(policy("any"), PolicyCache())
    assert evaluate([anywhere], database(), now=NOW) and not evaluate([anywhere], other_kind, now=NOW)


# --- evaluating ----------------------------------------------------------------------------


def test_error_in_one_rule_is_an_error_verdict_and_others_still_run() -> None:
    compiled = compile_policy(
        policy(
            "p",
            ("missing-field", "object.spec.nonexistent == 1"),
            ("divide", "1 / 0 == 1"),
            ("not-bool", "object.spec.engine"),
            ("passes", "object.spec.engine == 'postgresql'"),
            ("fails", "object.spec.engine == 'mysql'"),
        ),
        PolicyCache(),
    )
    verdicts = {v.rule: v for v in evaluate([compiled], database(), now=NOW)}
    assert [verdicts[r].outcome for r in ("missing-field", "divide", "not-bool", "passes", "fails")] == [
        Outcome.ERROR,
        Outcome.ERROR,
        Outcome.ERROR,
        Outcome.PASS,
        Outcome.FAIL,
    ]
    assert "nonexistent" in verdicts["missing-field"].detail
    assert "boolean" in verdicts["not-bool"].detail
    assert verdicts["fails"].message == "fix fails"


def test_rules_see_defaults_rendered_namespace_and_params() -> None:
    compiled = compile_policy(
        policy(
            "p",
            ("defaulted", "object.spec.backup.retentionDays == 7 && object.spec.encryption"),
            ("rendered", "rendered.exists(r, r.name == 'db' && r.provider == 'aws-rds' && r.body.Class == 'big')"),
            ("namespace", "namespaceObject.metadata.labels.team == 'a'"),
            ("params", "params.limit == 3"),
            params={"limit": 3},
        ),
        PolicyCache(),
    )
    rendered = [RenderedResource(name="db", provider="aws-rds", body={"Class": "big"})]
    verdicts = evaluate([compiled], database(), rendered, namespace({"team": "a"}), now=NOW)
    assert [v.outcome for v in verdicts] == [Outcome.PASS] * 4


def test_secret_values_never_reach_rules() -> None:
    secret = RenderedResource(
        name="conn",
        provider="kubernetes",
        body={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c"}, "stringData": {"password": "hunter2"}},
    )
    rds = {"name": "db", "provider": "aws-rds", "body": {"MasterUserPassword": "hunter3", "Engine": "postgres"}}
    views = [policy_view(secret), policy_view(rds)]
    assert "hunter" not in repr(views)
    assert views[1]["body"]["Engine"] == "postgres"
    leak = compile_policy(policy("p", ("r", "int(rendered[0].body.stringData.password) > 0")), PolicyCache())
    (verdict,) = evaluate([leak], database(), [secret], now=NOW)
    assert verdict.outcome is Outcome.ERROR and "hunter2" not in verdict.detail


def test_no_rule_data_in_error_details() -> None:
    """celpy appends the whole activation to some errors; details must not carry it."""
    compiled = compile_policy(policy("p", ("r", "object.spec.engine + 1 == 2")), PolicyCache())
    (verdict,) = evaluate([compiled], database(engine="postgresql"), now=NOW)
    assert verdict.outcome is Outcome.ERROR
    assert "postgresql" not in verdict.detail and "activation" not in verdict.detail
    assert len(verdict.detail) <= 200


# --- exceptions ----------------------------------------------------------------------------


def failing() -> Any:
    return compile_policy(policy("p", ("r", "false"), ("other", "false")), PolicyCache())


def test_exception_applies_before_expiry_only() -> None:
    expires = NOW + timedelta(hours=1)
    before = evaluate([failing()], database(), exceptions=[exception(expires)], now=NOW)
    assert [(v.rule, v.outcome) for v in before] == [("r", Outcome.EXCEPTED), ("other", Outcome.FAIL)]
    assert before[0].exception == "team-a/ex" and before[0].expires_at == expires
    at_expiry = evaluate([failing()], database(), exceptions=[exception(expires)], now=expires)
    assert at_expiry[0].outcome is Outcome.FAIL
    assert at_expiry[0].exception == "team-a/ex"  # reports can say the exception ran out


@pytest.mark.parametrize(
    "ex",
    [
        exception(NOW + timedelta(days=1), intent="another-db"),
        exception(NOW + timedelta(days=1), ns="team-b"),
        exception(NOW + timedelta(days=1), rules=["unrelated"]),
        exception("next tuesday"),
        dict(
            exception(NOW + timedelta(days=1)), spec={**exception(NOW + timedelta(days=1))["spec"], "policy": "other"}
        ),
    ],
    ids=["other-intent", "other-namespace", "other-rule", "unparseable-expiry", "other-policy"],
)
def test_exception_is_narrow(ex: dict[str, Any]) -> None:
    verdicts = evaluate([failing()], database(), exceptions=[ex], now=NOW)
    assert all(v.outcome is Outcome.FAIL and v.exception is None for v in verdicts)


def test_exception_does_not_hide_a_pass_and_covers_errors() -> None:
    compiled = compile_policy(policy("p", ("r", "object.nope"), ("other", "true")), PolicyCache())
    ex = exception(NOW + timedelta(days=1), rules=["r", "other"])
    verdicts = evaluate([compiled], database(), exceptions=[ex], now=NOW)
    assert [v.outcome for v in verdicts] == [Outcome.EXCEPTED, Outcome.PASS]


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(min_value=-10_000, max_value=10_000))
def test_exception_expiry_is_a_pure_function_of_now(offset: int) -> None:
    expires = NOW + timedelta(seconds=offset)
    (verdict, _) = evaluate([failing()], database(), exceptions=[exception(expires)], now=NOW)
    assert (verdict.outcome is Outcome.EXCEPTED) == (NOW < expires)


# --- admission -----------------------------------------------------------------------------


def verdict(mode: Mode, outcome: Outcome, rule: str = "r") -> Verdict:
    return Verdict("p", rule, mode, outcome, f"fix {rule}", "boom" if outcome is Outcome.ERROR else "")


def test_admission_enforce_denies_naming_policy_rule_and_message() -> None:
    allowed, warnings, message = admission_decision(
        [
            verdict(Mode.ENFORCE, Outcome.FAIL, "a"),
            verdict(Mode.ENFORCE, Outcome.ERROR, "b"),
            verdict(Mode.ENFORCE, Outcome.PASS),
        ]
    )
    assert not allowed and warnings == []
    assert "p/a (Enforce): fix a" in message and "p/b (Enforce): fix b" in message and "boom" in message


def test_admission_warn_and_audit_admit() -> None:
    allowed, warnings, message = admission_decision(
        [verdict(Mode.WARN, Outcome.FAIL), verdict(Mode.AUDIT, Outcome.FAIL)]
    )
    assert allowed and message == ""
    assert warnings == ["p/r (Warn): fix r"]


def test_admission_mentions_used_exceptions() -> None:
    excepted = Verdict("p", "r", Mode.ENFORCE, Outcome.EXCEPTED, "fix r", exception="ns/ex", expires_at=NOW)
    allowed, warnings, _ = admission_decision([excepted])
    assert allowed and warnings == [
        "p/r (Enforce): fix r [excepted by PolicyException ns/ex until 2030-01-01T12:00:00Z]"
    ]


# --- properties ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)

_PROBING = compile_policy(
    policy(
        "probe",
        ("field", "object.spec.a.b > 1"),
        ("list", "object.spec.items.all(i, i.x == 'y')"),
        ("size", "size(object.spec) > 2"),
        ("rendered", "rendered.all(r, r.body.k != null)"),
    ),
    PolicyCache(),
)


@settings(max_examples=150, deadline=None)
@given(spec=st.dictionaries(st.sampled_from(["a", "items", "engine", "x"]), json_values, max_size=4), body=json_values)
def test_evaluation_never_raises_and_yields_one_verdict_per_rule(spec: dict[str, Any], body: Any) -> None:
    intent = {"kind": "DatabaseIntent", "metadata": {"name": "x", "namespace": "n"}, "spec": spec}
    rendered = [{"name": "r", "provider": "kubernetes", "body": body if isinstance(body, dict) else {"v": body}}]
    verdicts = evaluate([_PROBING], intent, rendered, now=NOW)
    assert [v.rule for v in verdicts] == ["field", "list", "size", "rendered"]
    assert all(v.outcome in (Outcome.PASS, Outcome.FAIL, Outcome.ERROR) for v in verdicts)
    allowed, _, _ = admission_decision(verdicts)
    assert allowed == all(v.outcome is Outcome.PASS for v in verdicts)


# --- memoisation ---------------------------------------------------------------------------


def test_results_are_memoised_per_policy_version_and_inputs() -> None:
    memo: BoundedCache[Any, Any] = BoundedCache(100)
    compiled = compile_policy(policy("p", ("r", "object.spec.version == '16'")), PolicyCache())
    first = evaluate([compiled], database(), memo=memo, now=NOW)
    kopf_touched = database()
    kopf_touched["metadata"].update(resourceVersion="42", managedFields=[{"manager": "kopf"}])
    assert evaluate([compiled], kopf_touched, memo=memo, now=NOW) == first and len(memo) == 1
    changed = evaluate([compiled], database(version="15"), memo=memo, now=NOW)
    assert changed[0].outcome is Outcome.FAIL and len(memo) == 2
    edited = compile_policy(policy("p", ("r", "object.spec.version == '15'")), PolicyCache())
    assert evaluate([edited], database(version="15"), memo=memo, now=NOW)[0].outcome is Outcome.PASS
    assert len(memo) == 3
    assert evaluate([compiled], database(), memo=None, now=NOW) == first


def test_exceptions_are_applied_after_the_memo() -> None:
    memo: BoundedCache[Any, Any] = BoundedCache(100)
    expires = NOW + timedelta(minutes=1)
    before = evaluate([failing()], database(), exceptions=[exception(expires)], now=NOW, memo=memo)
    after = evaluate([failing()], database(), exceptions=[exception(expires)], now=expires, memo=memo)
    assert (before[0].outcome, after[0].outcome) == (Outcome.EXCEPTED, Outcome.FAIL)


def test_concurrent_evaluation_agrees_with_serial() -> None:
    """Kopf handlers and webhook requests share compiled programs across threads."""
    compiled = compile_policy(
        policy("p", ("v", "object.spec.version == '16'"), ("tags", "[1, 2, 3].map(x, x * 2).exists(x, x == 6)")),
        PolicyCache(),
    )
    intents = [database(name=f"db{i}", version="16" if i % 2 else "15") for i in range(40)]
    serial = [evaluate([compiled], intent, memo=None, now=NOW) for intent in intents]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda intent: evaluate([compiled], intent, memo=None, now=NOW), intents))
    assert parallel == serial


# --- render, then evaluate -----------------------------------------------------------------


def test_check_intent_renders_then_evaluates() -> None:
    root = Path(__file__).resolve().parents[2]
    compositions = [
        doc
        for path in sorted((root / "compositions").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    compiled = compile_policy(
        policy(
            "p",
            ("encrypted", "object.spec.encryption == true"),
            ("rds", "rendered.exists(r, r.provider == 'aws-rds')"),
            match={"kinds": ["DatabaseIntent", "ProgressiveRollout"]},
        ),
        PolicyCache(),
    )
    ok = check_intent(
        dict(database(), metadata={"name": "db", "namespace": "a", "uid": "u"}), compositions, [compiled], now=NOW
    )
    assert ok.render_error is None and ok.composition and ok.resources
    assert [v.outcome for v in ok.verdicts] == [Outcome.PASS, Outcome.PASS]

    bad = dict(database(version="9.6", encryption=False), metadata={"name": "db", "namespace": "a", "uid": "u"})
    broken = check_intent(bad, compositions, [compiled], now=NOW)
    assert broken.render_error is not None and broken.render_error.field == "spec.version"
    assert [v.outcome for v in broken.verdicts] == [Outcome.FAIL, Outcome.FAIL]  # intent rules still report

    rollout = {"kind": "ProgressiveRollout", "metadata": {"name": "r", "namespace": "a"}, "spec": {}}
    unrendered = check_intent(rollout, compositions, [compiled], now=NOW)
    assert unrendered.render_error is None and unrendered.composition is None and unrendered.resources == ()


def test_policy_core_is_pure() -> None:
    """No cluster, cloud, Vault or HTTP client is imported by the policy and render cores (DESIGN: pure cores)."""
    code = (
        "import sys, paved.policy, paved.render;"
        " print(sorted(m for m in ('kopf', 'kubernetes', 'boto3', 'hvac', 'requests') if m in sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


# --- allowances ------------------------------------------------------------------------------


def identity_intent(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": "a", "namespace": "team-a"},
            "spec": {"capabilities": [{"resources": ["pods"], "verbs": ["*"]}], **spec}}


def test_allowances_come_from_matching_policies_and_rules_read_them() -> None:
    match = {"kinds": ["AgentIdentity"], "namespaceSelector": {"matchLabels": {"tier": "platform"}}}
    allows = {"metadata": {"name": "platform-agents"}, "spec": {"match": match, "allow": ["Wildcards", "ClusterScope"]}}
    no_wildcards = policy("no-wildcards", ("verbs", "size(allowed.wildcards) > 0 || object.spec.capabilities.all(c, !('*' in c.verbs))"),
                          match={"kinds": ["AgentIdentity"]})
    compiled = compile_policies([allows, no_wildcards])[0]
    nothing = {"clusterScope": [], "wildcards": [], "adopt": [], "operatorCredentials": [], "anyEndpoint": []}
    assert allowances_for(compiled, "AgentIdentity", {"tier": "platform"}) == {
        **nothing, "clusterScope": ["platform-agents"], "wildcards": ["platform-agents"]}
    assert allowances_for(compiled, "AgentIdentity", {"tier": "apps"}) == nothing
    assert allowances_for(compiled, "DatabaseIntent", {"tier": "platform"}) == nothing
    platform, apps = namespace({"tier": "platform"}), namespace({"tier": "apps"})
    assert [v.outcome for v in evaluate(compiled, identity_intent(), [], platform, now=NOW)] == [Outcome.PASS]
    assert [v.outcome for v in evaluate(compiled, identity_intent(), [], apps, now=NOW)] == [Outcome.FAIL]


def test_a_policy_needs_rules_or_allowances() -> None:
    with pytest.raises(PolicyCompileError) as error:
        compile_policy({"metadata": {"name": "empty"}, "spec": {"match": {"kinds": ["AgentIdentity"]}}}, PolicyCache())
    assert "rules, allow" in str(error.value)
