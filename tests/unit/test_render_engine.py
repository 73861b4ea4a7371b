"""The composition engine on small, purpose-built compositions: selection, rendering
mechanics (pending outputs, generated secrets, when/forEach, the hash), errors and helpers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paved.render import RenderError, check_composition, generate_missing, render, select_composition
from paved.render.helpers import b64encode, dns_label, stable_id, to_json, to_yaml

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def composition(name: str = "test", kind: str = "DatabaseIntent", **spec: Any) -> dict[str, Any]:
    spec.setdefault("compositeKind", kind)
    spec.setdefault("resources", [])
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "Composition", "metadata": {"name": name}, "spec": spec}


def resource(name: str, template: str, provider: str = "kubernetes", **extra: Any) -> dict[str, Any]:
    return {"name": name, "provider": provider, "template": template, **extra}


def intent(
    spec: dict[str, Any] | None = None, kind: str = "DatabaseIntent", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "paved.dev/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": "orders-db",
            "namespace": "orders",
            "uid": "uid-1",
            "generation": 1,
            "labels": labels or {},
        },
        "spec": spec if spec is not None else {"size": "small"},
    }


CONFIG_MAP = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ metadata.name | to_json }}\n"
    "data:\n  size: {{ spec.size | to_json }}\n"
)


# --------------------------------------------------------------------------- selection


def test_explicit_reference_wins_over_default_and_selectors() -> None:
    chosen = composition("chosen")
    candidates = [
        composition("a-default", default=True),
        chosen,
        composition("sel", selector={"matchLabels": {"x": "y"}}),
    ]
    picked = select_composition(intent({"compositionRef": {"name": "chosen"}}, labels={"x": "y"}), candidates)
    assert picked is chosen


def test_explicit_reference_must_exist_and_serve_the_kind() -> None:
    candidates = [composition("db", default=True), composition("agents", kind="AgentIdentity")]
    with pytest.raises(RenderError) as missing:
        select_composition(intent({"compositionRef": {"name": "nope"}}), candidates)
    assert missing.value.field == "spec.compositionRef.name"
    assert "'nope' does not exist" in str(missing.value) and "db" in str(missing.value)
    with pytest.raises(RenderError) as wrong_kind:
        select_composition(intent({"compositionRef": {"name": "agents"}}), candidates)
    assert wrong_kind.value.field == "spec.compositionRef.name"
    assert "serves AgentIdentity, not DatabaseIntent" in str(wrong_kind.value)


def test_most_specific_selector_wins_and_ties_break_by_name() -> None:
    broad = composition("broad", namespaceSelector={"matchLabels": {"paved.dev/environment": "dev"}})
    narrow = composition(
        "narrow",
        selector={"matchLabels": {"tier": "gold"}},
        namespaceSelector={"matchLabels": {"paved.dev/environment": "dev"}},
    )
    twin = composition("b-twin", selector={"matchLabels": {"tier": "gold"}})
    also = composition("a-twin", selector={"matchLabels": {"tier": "gold"}})
    dev = {"paved.dev/environment": "dev"}
    assert select_composition(intent(labels={"tier": "gold"}), [broad, narrow], dev) is narrow
    assert select_composition(intent(), [broad, narrow], dev) is broad
    assert select_composition(intent(labels={"tier": "gold"}), [twin, also]) is also
    assert select_composition(intent(labels={"tier": "gold"}), [also, twin]) is also


def test_namespace_environment_selects_then_default_applies() -> None:
    default = composition("cloud", default=True)
    dev = composition("in-cluster", namespaceSelector={"matchLabels": {"paved.dev/environment": "dev"}})
    assert select_composition(intent(), [default, dev], {"paved.dev/environment": "dev"}) is dev
    assert select_composition(intent(), [default, dev], {"paved.dev/environment": "prod"}) is default
    assert select_composition(intent(), [default, dev], None) is default


def test_selectorless_non_default_composition_is_only_reachable_by_reference() -> None:
    with pytest.raises(RenderError) as error:
        select_composition(
            intent(), [composition("manual"), composition("other-kind", kind="AgentIdentity", default=True)]
        )
    assert error.value.field == "spec.compositionRef.name"
    assert "no composition selected for DatabaseIntent" in str(error.value)
    assert "manual" in str(error.value)


# --------------------------------------------------------------------------- rendering


def test_render_produces_bodies_defaults_namespace_and_is_deterministic() -> None:
    comp = composition(resources=[resource("config", CONFIG_MAP, readiness="none")])
    first, second = render(comp, intent()), render(comp, intent())
    (config,) = first.resources
    assert config.body == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "orders-db", "namespace": "orders"},
        "data": {"size": "small"},
    }
    assert (config.readiness, config.pending, config.depends_on) == ("none", False, ())
    assert first.hash == second.hash and re.fullmatch(r"[0-9a-f]{64}", first.hash)
    assert render(comp, intent({"size": "large"})).hash != first.hash


def test_explicit_and_cluster_scoped_namespaces_are_kept() -> None:
    explicit = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: elsewhere}\n"
    cluster = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x}\n"
    result = render(composition(resources=[resource("a", explicit), resource("b", cluster)]), intent())
    assert result.resources[0].body["metadata"]["namespace"] == "elsewhere"
    assert "namespace" not in result.resources[1].body["metadata"]


def test_pending_outputs_are_placeholders_tracked_per_resource() -> None:
    comp = composition(
        resources=[
            resource("db", "Identifier: x\n", provider="aws-rds"),
            resource("plain", CONFIG_MAP),
            resource(
                "secret",
                "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData:\n"
                "  host: {{ outputs.db.address | to_json }}\n"
                "  uri: {{ ('pg://' ~ outputs['db'].address ~ ':' ~ outputs.db.port) | to_json }}\n",
            ),
        ]
    )
    offline = render(comp, intent(), outputs=None)
    db, plain, secret = offline.resources
    assert (db.pending, plain.pending, secret.pending) == (False, False, True)
    assert secret.depends_on == ("db",)
    assert secret.body["stringData"] == {
        "host": "<pending:db.address>",
        "uri": "pg://<pending:db.address>:<pending:db.port>",
    }

    partial = render(comp, intent(), outputs={"db": {"address": "db.example"}}).resources[2]
    assert partial.pending and partial.body["stringData"]["uri"] == "pg://db.example:<pending:db.port>"

    known = render(comp, intent(), outputs={"db": {"address": "db.example", "port": 5432}}).resources[2]
    assert not known.pending and known.body["stringData"] == {"host": "db.example", "uri": "pg://db.example:5432"}


def test_outputs_of_later_unknown_or_omitted_resources_are_composition_errors() -> None:
    reads_later = composition(
        resources=[
            resource("first", "a: {{ outputs.second.x }}\n", provider="test"),
            resource("second", "b: 1\n", provider="test"),
        ]
    )
    with pytest.raises(RenderError, match="no earlier resource is named 'second'") as error:
        render(reads_later, intent())
    assert (error.value.resource, error.value.line) == ("first", 1)
    reads_omitted = composition(
        resources=[
            resource("iam", "a: 1\n", provider="test", when="false"),
            resource("sa", "arn: {{ outputs.iam.arn }}\n", provider="test"),
        ]
    )
    with pytest.raises(RenderError, match="resource 'iam' is omitted"):
        render(reads_omitted, intent())


def test_generated_secrets_are_placeholders_offline_and_never_move_the_hash() -> None:
    comp = composition(
        generatedSecrets=[{"name": "password", "length": 16}],
        resources=[
            resource(
                "secret",
                "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"
                "stringData: {password: {{ generated.password | to_json }}}\n"
                "data: {password: {{ generated.password | b64encode | to_json }}}\n",
            )
        ],
    )
    offline = render(comp, intent())
    assert offline.resources[0].body["stringData"]["password"] == "<generated:password>"
    one = render(comp, intent(), generated={"password": "correct-horse-battery"})
    two = render(comp, intent(), generated={"password": "another-password-value"})
    assert one.resources[0].body["stringData"]["password"] == "correct-horse-battery"
    assert one.resources[0].body["data"]["password"] == b64encode("correct-horse-battery")
    assert one.hash == two.hash == offline.hash
    assert not one.resources[0].pending


def test_undeclared_or_unsupplied_generated_secret_is_an_error() -> None:
    undeclared = composition(resources=[resource("s", "p: {{ generated.passwd }}\n")])
    with pytest.raises(RenderError, match="declares only: none"):
        render(undeclared, intent())
    declared = composition(
        generatedSecrets=[{"name": "password"}], resources=[resource("s", "p: {{ generated.password }}\n")]
    )
    with pytest.raises(RenderError, match="'password' was not supplied"):
        render(declared, intent(), generated={})


def test_generate_missing_keeps_existing_values_and_makes_the_rest() -> None:
    comp = composition(generatedSecrets=[{"name": "a", "length": 8}, {"name": "b", "length": 40}])
    values = generate_missing(comp, {"a": "kept-value"})
    assert values["a"] == "kept-value"
    assert re.fullmatch(r"[A-Za-z0-9]{40}", values["b"])
    assert generate_missing(comp, {})["b"] != values["b"]


def test_when_omits_resources_and_for_each_expands_them() -> None:
    comp = composition(
        resources=[
            resource("never", CONFIG_MAP, when="spec.size == 'huge'"),
            resource(
                "per-ns",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: {{ item | to_json }}}\n",
                forEach="spec.namespaces",
                when="item != 'skipped'",
            ),
        ]
    )
    result = render(comp, intent({"size": "small", "namespaces": ["a", "b", "skipped"]}))
    assert [r.name for r in result.resources] == ["per-ns-a", "per-ns-b"]
    assert [r.body["metadata"]["namespace"] for r in result.resources] == ["a", "b"]


def test_for_each_items_must_be_unique_names() -> None:
    comp = composition(resources=[resource("r", "a: 1\n", provider="test", forEach="['x', 'x']")])
    with pytest.raises(RenderError, match="two resources are named 'r-x'"):
        render(comp, intent())
    with pytest.raises(RenderError, match="forEach must give a list"):
        render(composition(resources=[resource("r", "a: 1\n", provider="test", forEach="'x'")]), intent())


def test_warnings_are_collected_once() -> None:
    comp = composition(
        resources=[
            resource("r", "{{ warn('careful') }}{{ warn('careful') }}a: 1\n", provider="test", forEach="['x', 'y']")
        ]
    )
    assert render(comp, intent()).warnings == ("careful",)


def test_templates_are_compiled_once_per_text() -> None:
    from paved.render.engine import _compile_template

    comp = composition(name="cache-check", resources=[resource("config", CONFIG_MAP)])
    render(comp, intent())
    before = _compile_template.cache_info()
    for _ in range(5):
        render(comp, intent({"size": "large"}))
    after = _compile_template.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 5


def test_dict_keys_win_over_dict_methods() -> None:
    comp = composition(resources=[resource("r", "n: {{ spec.items | to_json }}\n", provider="test")])
    assert render(comp, intent({"items": 3})).resources[0].body == {"n": 3}


# --------------------------------------------------------------------------- errors


def test_unknown_variable_names_composition_resource_line_and_path() -> None:
    template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\n  size: {{ spec.sizee }}\n"
    with pytest.raises(RenderError) as error:
        render(composition("postgres-aws-rds", resources=[resource("instance", template)]), intent())
    assert (
        str(error.value)
        == """composition postgres-aws-rds, resource "instance", line 7: 'spec' has no attribute 'sizee'"""
    )
    assert (error.value.variable, error.value.line, error.value.field) == ("spec.sizee", 7, None)


def test_unknown_variable_inside_a_loop_is_named_by_its_path() -> None:
    template = "rules:\n{% for cap in spec.capabilities %}\n  - {{ cap.verbz }}\n{% endfor %}\n"
    with pytest.raises(RenderError) as error:
        render(composition(resources=[resource("role", template)]), intent({"capabilities": [{"verbs": ["get"]}]}))
    assert error.value.variable == "spec.capabilities[0].verbz" and error.value.line == 3


def test_undefined_top_level_name() -> None:
    with pytest.raises(RenderError, match="'nothing' is undefined") as error:
        render(composition(resources=[resource("r", "a: {{ nothing }}\n")]), intent())
    assert error.value.variable == "nothing"


def test_fail_names_the_field_and_line() -> None:
    template = "a: 1\n{% if spec.size == 'huge' %}\n{{ fail('spec.size', 'too big') }}\n{% endif %}\n"
    with pytest.raises(RenderError) as error:
        render(composition("c", resources=[resource("r", template)]), intent({"size": "huge"}))
    assert (error.value.field, error.value.line, error.value.message) == ("spec.size", 3, "too big")
    assert str(error.value) == 'composition c, resource "r", line 3: spec.size: too big'
    assert error.value.user_message == "spec.size: too big"


def test_syntax_error_invalid_yaml_and_non_mapping_are_reported() -> None:
    with pytest.raises(RenderError, match="syntax error") as syntax:
        render(composition(resources=[resource("r", "a: 1\nb: {{ spec.size \n")]), intent())
    assert syntax.value.line == 2
    with pytest.raises(RenderError, match="did not produce valid YAML") as bad_yaml:
        render(composition(resources=[resource("r", "a: [1\nsecret: hunter2\n")]), intent())
    assert "hunter2" not in str(bad_yaml.value)
    with pytest.raises(RenderError, match="one YAML mapping, got list"):
        render(composition(resources=[resource("r", "- 1\n")]), intent())


def test_kubernetes_bodies_need_identity_fields() -> None:
    with pytest.raises(RenderError, match=r"apiVersion, kind and metadata\.name"):
        render(composition(resources=[resource("r", "kind: ConfigMap\n")]), intent())


def test_sandbox_refuses_mutation_and_internals() -> None:
    with pytest.raises(RenderError, match=r"not allowed in a composition template: .*'update' of 'dict' object"):
        render(composition(resources=[resource("r", "{{ spec.update({'a': 1}) }}a: 1\n")]), intent())
    with pytest.raises(RenderError):
        render(composition(resources=[resource("r", "a: {{ spec.__class__.__subclasses__() }}\n")]), intent())


def test_intent_is_never_mutated() -> None:
    original = intent({"size": "small", "nested": {"k": "v"}})
    snapshot = repr(original)
    render(composition(resources=[resource("config", CONFIG_MAP)]), original)
    assert repr(original) == snapshot


# --------------------------------------------------------------------------- helpers


def test_helpers() -> None:
    assert stable_id("a", "b") == stable_id("a", "b") != stable_id("a", "c")
    assert len(stable_id("x", length=12)) == 12
    assert dns_label("Orders_DB..v2") == "orders-db-v2"
    assert dns_label("x" * 80) == "x" * 54 + "-" + stable_id("x" * 80)
    assert dns_label("---") == stable_id("---")
    assert to_json({"a": [1, "b"]}) == '{"a": [1, "b"]}'
    assert to_yaml({"a": [1]}) == "a:\n- 1"
    assert b64encode("hi") == "aGk="


@given(st.text(max_size=200), st.integers(min_value=1, max_value=63))
def test_dns_label_is_always_a_valid_deterministic_label(value: str, limit: int) -> None:
    label = dns_label(value, limit)
    assert DNS_LABEL.fullmatch(label) and len(label) <= limit and "--" not in label
    assert dns_label(value, limit) == label


@given(st.text(min_size=1, max_size=100), st.text(min_size=1, max_size=100))
def test_dns_label_keeps_truncated_names_distinct(a: str, b: str) -> None:
    long_a, long_b = "prefix-" * 10 + a, "prefix-" * 10 + b
    if long_a != long_b:
        assert dns_label(long_a, 20) != dns_label(long_b, 20)


def test_check_composition_finds_problems_without_an_intent() -> None:
    good = composition(resources=[resource("config", CONFIG_MAP, when="spec.size", forEach="['a']")])
    assert check_composition(good) == []
    bad = composition(
        "bad",
        generatedSecrets=[{"name": "not an identifier"}],
        resources=[
            resource("a", "x: {{ spec.size \n"),
            resource("b", "x: 1\n", when="spec.size =="),
            resource("b", "x: 1\n"),
            {"name": "c", "template": "x: 1\n"},
        ],
    )
    problems = [str(problem) for problem in check_composition(bad)]
    assert len(problems) == 5
    assert problems[0].startswith("composition bad: spec.generatedSecrets[0].name")
    assert problems[1].startswith('composition bad, resource "a", line 1: template syntax error')
    assert problems[2].startswith('composition bad, resource "b": when expression syntax error')
    assert "two resources are named 'b'" in problems[3]
    assert "spec.resources[3].provider is required" in problems[4]


def test_errors_never_carry_generated_values() -> None:
    comp = composition(
        generatedSecrets=[{"name": "password"}],
        resources=[
            resource(
                "r",
                "a: {{ generated.password | int }}{{ fail('spec.x', 'bad ' ~ generated.password) }}\n",
                provider="test",
            )
        ],
    )
    with pytest.raises(RenderError) as error:
        render(comp, intent(), generated={"password": "Sup3rS3cretValue"})
    assert "Sup3rS3cretValue" not in str(error.value) and "<generated:password>" in str(error.value)
