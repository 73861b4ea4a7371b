"""paved.render.render_intent: the one way an intent is rendered, and every caller going through it.

The reconcile, the deletion render, the database engine's checks before its first cloud call,
the policy check (admission, audit, `paved validate`) and `paved render` must judge and act on
the same resources; these tests hold each of them to the entry point.
"""

from __future__ import annotations

import ast
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from support.kube import FakeKube

from paved.api.database import DatabaseIntentSpec
from paved.api.platform import CompositionSpec
from paved.commands.inputs import load_compositions
from paved.engines.compose import ComposeEngine
from paved.engines.compose import engine as compose_engine
from paved.engines import database
from paved.policy import check_intent, compile_policies
from paved.render import everything_allowed, render_intent

ROOT = Path(__file__).resolve().parents[2]
PAVED = ROOT / "operator" / "paved"
NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
ADOPT = "paved.dev/adopt-db-instance"


@pytest.fixture(scope="module")
def compositions() -> list[dict[str, Any]]:
    return load_compositions((), ROOT / "compositions")


def db(*, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "orders-db", "namespace": "orders", "uid": "u-1", "generation": 1,
                                "resourceVersion": "42", "managedFields": [{"manager": "kubectl"}]}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent", "metadata": metadata,
            "spec": {"engine": "postgresql", "version": "16", **spec}}


def composition(kind: str, template: str, name: str = "probe") -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "Composition", "metadata": {"name": name},
            "spec": {"compositeKind": kind, "default": True, "resources": [{"name": "probe", "provider": "kubernetes",
                                                                            "template": template}]}}


ALLOW_ADOPT = {"apiVersion": "paved.dev/v1alpha1", "kind": "IntentPolicy", "metadata": {"name": "adopters"},
               "spec": {"match": {"kinds": ["DatabaseIntent"]}, "allow": ["Adopt"]}}


# --- the entry point ----------------------------------------------------------------------------


def test_selects_applies_defaults_and_renders_with_the_callers_allowances(compositions: list[dict[str, Any]]) -> None:
    adopting = db(annotations={ADOPT: "legacy"})
    refused = render_intent(adopting, compositions, namespace_labels={}, allowed=None)
    assert refused.composition_name == "postgres-aws-rds" and refused.resources == ()  # selected, then refused
    assert refused.error is not None and refused.error.field == f"metadata.annotations[{ADOPT}]"

    allowed = render_intent(adopting, compositions, namespace_labels={}, allowed={"adopt": ["adopters"]})
    assert allowed.error is None and allowed.result is not None
    instance = next(r for r in allowed.resources if r.provider == "aws-rds")
    assert instance.body["DBInstanceIdentifier"] == "legacy" and instance.body["BackupRetentionPeriod"] == 7  # a default
    assert instance.body["MasterUserPassword"] == "<generated:masterPassword>"  # placeholders first

    password, password_id = "Xq7" * 10, "Zk9" * 5
    with_values = allowed.with_values(generated={"masterPassword": password, "masterPasswordId": password_id})
    assert next(r for r in with_values.resources if r.provider == "aws-rds").body["MasterUserPassword"] == password
    assert with_values.hash == allowed.result.hash  # the hash never depends on a secret


SEEN = composition("DatabaseIntent", "{apiVersion: v1, kind: ConfigMap, metadata: {name: probe}, "
                   "data: {keys: {{ metadata.keys() | sort | join(',') | to_json }}, size: {{ spec.size | to_json }}}}")
"""Shows what templates see of the intent's metadata, and a spec default."""


def test_templates_see_the_intent_document_identity_labels_annotations_and_the_defaulted_spec() -> None:
    """Never what only the API server adds (resourceVersion, managedFields): it would differ between callers."""
    rendered = render_intent(db(annotations={"a": "b"}), [SEEN], namespace_labels={}, allowed=None)
    assert rendered.resources[0].body["data"] == {"keys": "annotations,generation,name,namespace,uid", "size": "small"}


def test_admission_renders_the_intent_document_the_reconcile_renders() -> None:
    checked = check_intent(db(annotations={"a": "b"}), [SEEN], [], None, now=NOW)
    assert checked.resources[0].body["data"] == {"keys": "annotations,generation,name,namespace,uid", "size": "small"}


def test_the_selection_uses_the_callers_namespace_labels(compositions: list[dict[str, Any]]) -> None:
    dev = render_intent(db(), compositions, namespace_labels={"paved.dev/environment": "dev"}, allowed=None)
    assert dev.composition_name == "postgres-in-cluster"
    rds = next(c for c in compositions if c["metadata"]["name"] == "postgres-aws-rds")
    chosen = render_intent(db(), compositions, namespace_labels={"paved.dev/environment": "dev"}, allowed=None, composition=rds)
    assert chosen.composition_name == "postgres-aws-rds"


@pytest.mark.parametrize("kind", ["ExternalSecretRef", "ProgressiveRollout"])
def test_kinds_with_their_own_engines_are_never_rendered_through_a_composition(kind: str) -> None:
    claims = composition(kind, "{apiVersion: v1, kind: ConfigMap, metadata: {name: never}}")
    rendered = render_intent({"apiVersion": "paved.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": {}},
                             [claims], namespace_labels={}, allowed=None)
    assert rendered.resources == () and rendered.composition is None
    assert rendered.error is not None and rendered.error.field == "kind" and "not rendered through a Composition" in str(rendered.error)


def test_an_invalid_spec_and_no_composition_are_errors_naming_the_field(compositions: list[dict[str, Any]]) -> None:
    invalid = render_intent(db(engine="oracle"), compositions, namespace_labels={}, allowed=None)
    assert invalid.error is not None and invalid.error.field == "spec.engine" and invalid.composition is None
    assert str(invalid.error).startswith("spec.engine: ") and str(invalid.error).count("spec.engine") == 1
    none = render_intent(db(), [], namespace_labels={}, allowed=None)
    assert none.error is not None and none.error.field == "spec.compositionRef.name" and none.composition is None


def test_composition_kind_is_limited_to_the_kinds_that_are_rendered() -> None:
    with pytest.raises(ValueError, match="compositeKind"):
        CompositionSpec.model_validate({"compositeKind": "ExternalSecretRef", "resources": [
            {"name": "x", "provider": "kubernetes", "template": "{}"}]})


# --- every caller goes through it ---------------------------------------------------------------


def test_nothing_outside_paved_render_selects_or_renders_an_intent_itself() -> None:
    """`render` and `select_composition` are the entry point's parts: a caller using them
    directly would rebuild the preamble (intent document, defaults, allowances) its own way."""
    offenders = []
    for path in sorted(PAVED.rglob("*.py")):
        if (PAVED / "render") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("paved.render"):
                offenders += [f"{path.relative_to(PAVED)}: {alias.name}" for alias in node.names
                              if alias.name in ("render", "select_composition")]
    assert offenders == []


@pytest.fixture
def kube() -> FakeKube:
    """The intents' namespace, as the reconcile reads it."""
    return FakeKube([{"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": "orders", "labels": {"kubernetes.io/metadata.name": "orders"}}}])


def test_an_adopting_intent_gets_its_cleanup_finalizer_before_anything_is_created(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch, compositions: list[dict[str, Any]]
) -> None:
    """The database engine decides on its finalizer from the reconcile's own render: with the
    intent's allowances, an adoption renders an RDS instance, which must be cleaned up."""
    compose = ComposeEngine(kube)
    engine = database.DatabaseEngine(compose)
    finalized: list[str] = []
    monkeypatch.setattr(database, "add_cleanup_finalizer", lambda body: finalized.append(body["metadata"]["name"]))
    monkeypatch.setattr(compose, "reconcile", lambda *args, **kwargs: "composed")
    adopting = db(annotations={ADOPT: "legacy"})

    assert engine.reconcile(adopting, compositions, trigger="test") == "composed"
    assert finalized == []  # not allowed: the render fails, nothing will be created, no finalizer

    compose.set_allowance_source(lambda kind, ns: {"adopt": ["adopters"]} if kind == "DatabaseIntent" else {})
    assert engine.reconcile(adopting, compositions, trigger="test") == "composed"
    assert finalized == ["orders-db"]


def test_the_deletion_render_sees_everything_a_revoked_allowance_let_the_intent_create(
    kube: FakeKube, compositions: list[dict[str, Any]]
) -> None:
    kind = ComposeEngine(kube).register_kind(database.DatabaseEngine(ComposeEngine(kube)).kind)
    resources, policy = compose_engine.render_for_deletion(kind, db(annotations={ADOPT: "legacy"}, deletionPolicy="Retain"),
                                                           compositions, kube=kube)
    assert policy == "Retain" and next(r for r in resources if r.provider == "aws-rds").body["DBInstanceIdentifier"] == "legacy"
    assert everything_allowed("x")["adopt"] == ["x"]


def test_the_policy_check_judges_exactly_what_the_reconcile_renders(
    kube: FakeKube, compositions: list[dict[str, Any]]
) -> None:
    policies, _ = compile_policies([ALLOW_ADOPT])
    adopting = db(annotations={ADOPT: "legacy"})
    checked = check_intent(adopting, compositions, policies, {"metadata": {"name": "orders", "labels": {}}}, now=NOW)
    compose = ComposeEngine(kube)
    compose.set_allowance_source(lambda kind, ns: {"adopt": ["adopters"]})
    reconciled = database.DatabaseEngine(compose).rendering(adopting, DatabaseIntentSpec.model_validate(adopting["spec"]),
                                                            compositions)
    assert checked.render_error is None and reconciled.error is None
    assert checked.resources == reconciled.resources


def test_the_policy_check_judges_nothing_for_kinds_no_composition_renders() -> None:
    """A Composition claiming a kind with its own engine (stored before the enum was narrowed)
    is never rendered: admission must not judge resources no reconcile would create."""
    rules = {"apiVersion": "paved.dev/v1alpha1", "kind": "IntentPolicy", "metadata": {"name": "nothing-rendered"},
             "spec": {"match": {"kinds": ["ExternalSecretRef"]},
                      "rules": [{"name": "none", "expression": "size(rendered) == 0", "message": "rendered something"}]}}
    policies, _ = compile_policies([rules])
    claims = composition("ExternalSecretRef", "{apiVersion: v1, kind: ConfigMap, metadata: {name: never}}")
    ref = {"apiVersion": "paved.dev/v1alpha1", "kind": "ExternalSecretRef", "metadata": {"name": "x", "namespace": "a"},
           "spec": {"storeRef": {"name": "vault"}}}
    checked = check_intent(ref, [claims], policies, None, now=NOW)
    assert checked.resources == () and checked.render_error is None and checked.composition is None
    assert [verdict.outcome.value for verdict in checked.verdicts] == ["pass"]

