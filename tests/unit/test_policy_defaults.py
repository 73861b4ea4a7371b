"""The default IntentPolicies in compositions/policies/: each passes good intents and fails bad ones.

DatabaseIntent rules over `rendered` are checked against what the shipped composition really
renders (pure engine, no cluster), so a composition change that breaks a policy shows up here.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from paved.api.kinds import with_defaults
from paved.policy import CompiledPolicy, Outcome, PolicyCache, compile_policy, evaluate
from paved.render import RenderedResource, render, select_composition

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
PRODUCTION = {"metadata": {"name": "shop", "labels": {"paved.dev/environment": "production"}}}
STAGING = {"metadata": {"name": "shop", "labels": {"paved.dev/environment": "staging"}}}


def load(name: str) -> CompiledPolicy:
    return compile_policy(
        yaml.safe_load((ROOT / "compositions" / "policies" / f"{name}.yaml").read_text()), PolicyCache()
    )


def compositions() -> list[dict[str, Any]]:
    docs = [yaml.safe_load(path.read_text()) for path in sorted((ROOT / "compositions").glob("*.yaml"))]
    return [doc for doc in docs if doc and doc.get("kind") == "Composition"]


def intent(kind: str, spec: dict[str, Any], name: str = "x") -> dict[str, Any]:
    return {
        "apiVersion": "paved.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "shop", "uid": "00000000-0000-0000-0000-000000000001"},
        "spec": spec,
    }


def database(**spec: Any) -> dict[str, Any]:
    return intent("DatabaseIntent", {"engine": "postgresql", "version": "16", **spec})


def rendered_for(body: dict[str, Any]) -> list[RenderedResource]:
    full = with_defaults(body)
    composition = select_composition(full, compositions(), {})
    return list(render(composition, full).resources)


def outcomes(policy: CompiledPolicy, body: dict[str, Any], rendered: Any = None, ns: Any = None) -> dict[str, Outcome]:
    if rendered is None:
        rendered = rendered_for(body) if body["kind"] == "DatabaseIntent" else []
    return {v.rule: v.outcome for v in evaluate([policy], body, rendered, ns, now=NOW)}


def test_every_default_policy_compiles_and_is_enforced() -> None:
    names = sorted(path.stem for path in (ROOT / "compositions" / "policies").glob("*.yaml"))
    assert names == [
        "backup-retention-production",
        "canary-max-step",
        "encryption-required",
        "instance-class-allowlist",
        "no-wildcard-rbac",
    ]
    for name in names:
        assert load(name).mode.value == "Enforce"


# --- encryption-required ---------------------------------------------------------------------


def test_encryption_required() -> None:
    policy = load("encryption-required")
    assert outcomes(policy, database(encryption=True)) == {
        "storage-encrypted": Outcome.PASS,
        "rendered-rds-encrypted": Outcome.PASS,
    }
    assert outcomes(policy, database())["storage-encrypted"] is Outcome.PASS  # the model default is true
    failed = outcomes(policy, database(encryption=False))
    assert failed == {"storage-encrypted": Outcome.FAIL, "rendered-rds-encrypted": Outcome.FAIL}


def test_encryption_required_catches_a_composition_that_drops_the_flag() -> None:
    unencrypted = [
        RenderedResource("instance", "aws-rds", {"StorageEncrypted": False, "DBInstanceClass": "db.t3.micro"})
    ]
    assert (
        outcomes(load("encryption-required"), database(encryption=True), unencrypted)["rendered-rds-encrypted"]
        is Outcome.FAIL
    )


# --- backup-retention-production -------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "expected"), [(7, Outcome.PASS), (30, Outcome.PASS), (6, Outcome.FAIL), (0, Outcome.FAIL)]
)
def test_backup_retention_in_production(days: int, expected: Outcome) -> None:
    policy = load("backup-retention-production")
    assert outcomes(policy, database(backup={"retentionDays": days}), [], PRODUCTION) == {
        "min-retention-days": expected
    }


def test_backup_retention_only_in_production_namespaces() -> None:
    policy = load("backup-retention-production")
    short = database(backup={"retentionDays": 1})
    assert outcomes(policy, short, [], STAGING) == {}
    assert outcomes(policy, short, [], None) == {}
    assert outcomes(policy, database(), [], PRODUCTION) == {"min-retention-days": Outcome.PASS}  # default 7 days


# --- no-wildcard-rbac ------------------------------------------------------------------------


def agent(*capabilities: dict[str, Any]) -> dict[str, Any]:
    return intent("AgentIdentity", {"ttl": "8h", "capabilities": list(capabilities)})


def test_no_wildcard_rbac() -> None:
    policy = load("no-wildcard-rbac")
    ok = {"no-wildcard-verbs": Outcome.PASS, "no-wildcard-resources": Outcome.PASS}
    assert outcomes(policy, agent({"resources": ["configmaps"], "verbs": ["get", "list"]})) == ok
    assert outcomes(policy, agent()) == ok
    assert outcomes(policy, intent("AgentIdentity", {"ttl": "1h"})) == ok  # capabilities defaulted to []
    assert outcomes(
        policy, agent({"resources": ["pods"], "verbs": ["get"]}, {"resources": ["secrets"], "verbs": ["*"]})
    ) == {
        "no-wildcard-verbs": Outcome.FAIL,
        "no-wildcard-resources": Outcome.PASS,
    }
    for resource in ("*", "pods/*"):
        assert (
            outcomes(policy, agent({"resources": [resource], "verbs": ["get"]}))["no-wildcard-resources"]
            is Outcome.FAIL
        )


# --- instance-class-allowlist ----------------------------------------------------------------


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_instance_classes_of_the_shipped_composition_are_allowed(size: str) -> None:
    assert outcomes(load("instance-class-allowlist"), database(size=size)) == {"allowed-instance-class": Outcome.PASS}


def test_instance_class_outside_the_allowlist_fails() -> None:
    policy = load("instance-class-allowlist")
    expensive = [
        RenderedResource("instance", "aws-rds", {"DBInstanceClass": "db.x2iedn.32xlarge"}),
        RenderedResource("secret", "kubernetes", {"kind": "Secret"}),
    ]
    assert outcomes(policy, database(), expensive) == {"allowed-instance-class": Outcome.FAIL}
    assert outcomes(policy, database(), [RenderedResource("cm", "kubernetes", {"kind": "ConfigMap"})]) == {
        "allowed-instance-class": Outcome.PASS  # in-cluster compositions render no RDS instance
    }
    missing = [RenderedResource("instance", "aws-rds", {})]
    assert outcomes(policy, database(), missing) == {"allowed-instance-class": Outcome.ERROR}  # never a silent pass


# --- canary-max-step -------------------------------------------------------------------------


def rollout(**spec: Any) -> dict[str, Any]:
    return intent("ProgressiveRollout", {"targetRef": {"name": "web"}, "service": {"name": "web", "port": 80}, **spec})


def steps(*weights: int) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for weight in weights:
        result += [{"setWeight": weight}, {"pause": {"duration": "1m"}}]
    return result


def test_canary_steps() -> None:
    policy = load("canary-max-step")
    ok = {"max-set-weight-increase": Outcome.PASS, "max-step-weight": Outcome.PASS}
    assert outcomes(policy, rollout(steps=steps(5, 20, 50, 100))) == ok
    assert outcomes(policy, rollout(steps=steps(50, 100))) == ok
    assert outcomes(policy, rollout(steps=[{"pause": {}}])) == ok
    assert outcomes(policy, rollout(steps=steps(10, 80)))["max-set-weight-increase"] is Outcome.FAIL
    assert outcomes(policy, rollout(steps=steps(60)))["max-set-weight-increase"] is Outcome.FAIL  # from 0
    assert (
        outcomes(policy, rollout(steps=steps(40, 10, 90)))["max-set-weight-increase"] is Outcome.FAIL
    )  # order matters


def test_canary_shorthand_step_weight() -> None:
    policy = load("canary-max-step")
    assert outcomes(policy, rollout(maxWeight=100, stepWeight=50, stepInterval="1m")) == {
        "max-set-weight-increase": Outcome.PASS,
        "max-step-weight": Outcome.PASS,
    }
    assert outcomes(policy, rollout(maxWeight=100, stepWeight=60, stepInterval="1m"))["max-step-weight"] is Outcome.FAIL


@settings(max_examples=80, deadline=None)
@given(weights=st.lists(st.integers(min_value=0, max_value=100), max_size=8))
def test_canary_rule_matches_a_reference_implementation(weights: list[int]) -> None:
    previous = [0, *weights]
    expected = all(later - earlier <= 50 for earlier, later in itertools.pairwise(previous))
    result = outcomes(load("canary-max-step"), rollout(steps=steps(*weights)))["max-set-weight-increase"]
    assert result is (Outcome.PASS if expected else Outcome.FAIL)
