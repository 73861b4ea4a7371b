"""What Paved derives from names and keys stays valid for the longest input the API admits,
and keys and labels are checked as the API server checks them on the objects they become."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from paved.api.database import DatabaseIntentSpec
from paved.api.fields import derived_label_value, derived_name
from paved.api.kinds import SpecError, kind_info, with_defaults
from paved.engines.compose import generated_secret_name
from paved.kube.events import event_body
from paved.providers.base import Owner
from paved.providers.routing import RolloutContext
from paved.render import render
from paved.secretsync.model import key_problem

ROOT = Path(__file__).resolve().parents[2]
SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
LONGEST = ".".join(["a" * 61] * 5)[:249] + "-end"  # 253 characters, a valid subdomain
OTHER = LONGEST[:240] + "-other-end"  # shares the first 240 characters


def valid_name(name: str) -> bool:
    return len(name) <= 253 and SUBDOMAIN.fullmatch(name) is not None


def test_the_longest_names_are_valid_subdomains() -> None:
    assert len(LONGEST) == 253 and valid_name(LONGEST) and valid_name(OTHER)


def test_derived_names_stay_valid_distinct_and_stable() -> None:
    assert derived_name("orders", "-connection") == "orders-connection"  # short names unchanged
    long_one, other = derived_name(LONGEST, "-connection"), derived_name(OTHER, "-connection")
    assert valid_name(long_one) and valid_name(other) and long_one != other
    assert long_one == derived_name(LONGEST, "-connection") and long_one.endswith("-connection")
    for suffix in ("-paved-generated", ".0123456789abcdef", "-stable", "-canary"):
        assert valid_name(derived_name(LONGEST, suffix))


def test_derived_label_values_stay_valid_and_distinct() -> None:
    assert derived_label_value("checkout") == "checkout"
    assert derived_label_value("a.b-c_d") == "a.b-c_d"
    values = {derived_label_value(name) for name in (LONGEST, OTHER, "x" * 64, "-leading", "trailing.")}
    assert len(values) == 5
    assert all(len(value) <= 63 and LABEL_VALUE.fullmatch(value) for value in values)


def test_a_database_named_with_253_characters_gets_valid_secret_names() -> None:
    owner = Owner("paved.dev/v1alpha1", "DatabaseIntent", LONGEST, "orders", "uid-1")
    spec = DatabaseIntentSpec.model_validate({"engine": "postgresql", "version": "16"})
    assert valid_name(spec.connection_secret_name(LONGEST))
    assert valid_name(generated_secret_name(owner))
    for path in ("postgres-aws-rds.yaml", "postgres-in-cluster.yaml"):
        composition = yaml.safe_load((ROOT / "compositions" / path).read_text())
        intent = with_defaults({"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent",
                                "metadata": {"name": LONGEST, "namespace": "orders", "uid": "uid-1"},
                                "spec": {"engine": "postgresql", "version": "16"}})
        secrets = [r.body["metadata"]["name"] for r in render(composition, intent).resources if r.body.get("kind") == "Secret"]
        assert secrets == [spec.connection_secret_name(LONGEST)], path


def test_a_cloud_managed_password_of_a_253_character_database_syncs_into_its_connection_secret() -> None:
    composition = yaml.safe_load((ROOT / "compositions" / "postgres-aws-rds.yaml").read_text())
    composition["spec"]["parameters"]["managedPasswordStore"] = "rds-passwords"
    spec = {"engine": "postgresql", "version": "16", "masterPassword": {"managedBy": "Cloud"}}
    intent = with_defaults({"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent",
                            "metadata": {"name": LONGEST, "namespace": "orders", "uid": "uid-1"}, "spec": spec})
    outputs = {"instance": {"address": "db.example", "port": 5432, "masterUserSecretArn": "arn:secret:rds!db-1"}}
    (ref,) = [r.body for r in render(composition, intent, outputs=outputs).resources if r.body.get("kind") == "ExternalSecretRef"]
    expected = DatabaseIntentSpec.model_validate(spec).connection_secret_name(LONGEST)
    assert ref["metadata"]["name"] == ref["spec"]["target"]["name"] == expected


def test_events_of_long_names_have_valid_names() -> None:
    owner = Owner("paved.dev/v1alpha1", "AgentIdentity", LONGEST, "orders", "uid-1")
    name = str(event_body(owner, "Ready", "ready")["metadata"]["name"])  # type: ignore[index]
    assert valid_name(name)


def test_a_rollout_named_with_253_characters_labels_and_names_its_copies_validly() -> None:
    context = RolloutContext(Owner("paved.dev/v1alpha1", "ProgressiveRollout", LONGEST, "orders", "uid-1"),
                             target=LONGEST, service="web", port=80)
    assert len(context.label) <= 63 and LABEL_VALUE.fullmatch(context.label)
    assert valid_name(context.deployment_name("stable")) and valid_name(context.deployment_name("canary"))
    short = RolloutContext(Owner("paved.dev/v1alpha1", "ProgressiveRollout", "checkout", "orders", "u"),
                           target="checkout", service="checkout", port=80)
    assert (short.label, short.deployment_name("stable")) == ("checkout", "checkout-stable")  # unchanged


@pytest.mark.parametrize("key", [
    "teams/a/../b/db", "teams/a/%2e%2e/b/db", "teams/a/%2E%2E/b/db", "teams/a/.%2e/b/db", "teams/a/..%2fb/db",
    "teams/a/%252e%252e/b/db", "teams/a//b", "teams/a/./db", "teams/a/db\u202e", "teams/a/db\u0000", "teams/a/db\u001b",
    "teams/a/db\u200b", "teams/a/%00db", "teams/a/..\\b/db",
])
def test_remote_keys_that_could_leave_a_prefix_are_refused(key: str) -> None:
    assert key_problem(key) is not None


@pytest.mark.parametrize("key", ["teams/a/db", "/teams/a/db", "prod/db.v2", "a/b..c/d", "arn:aws:secretsmanager:eu-west-1:1:secret:x"])
def test_ordinary_remote_keys_are_accepted(key: str) -> None:
    assert key_problem(key) is None


@pytest.mark.parametrize(("labels", "field"), [
    ({"te\u202eam": "a"}, "spec.target.labels"),
    ({"team": "a\u202eb"}, "spec.target.labels.team"),
    ({"-team": "a"}, "spec.target.labels"),
    ({"x" * 64: "a"}, "spec.target.labels"),
])
def test_target_label_keys_and_values_are_checked_as_on_a_secret(labels: dict[str, str], field: str) -> None:
    spec = {"storeRef": {"name": "s"}, "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}], "target": {"labels": labels}}
    with pytest.raises(SpecError) as error:
        kind_info("ExternalSecretRef").parse_spec(spec)
    assert any(problem.startswith(field + ":") for problem in error.value.problems), error.value.problems


def test_label_keys_with_a_prefix_are_accepted() -> None:
    spec = {"storeRef": {"name": "s"}, "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}],
            "target": {"labels": {"app.kubernetes.io/name": "web"}, "annotations": {"example.com/note": "x\u202ey"}}}
    kind_info("ExternalSecretRef").parse_spec(spec)


def test_an_expiry_must_be_text_as_the_api_server_requires() -> None:
    with pytest.raises(SpecError, match=r"spec.expiresAt: .*RFC 3339"):
        kind_info("AgentIdentity").parse_spec({"expiresAt": 12345})
    kind_info("AgentIdentity").parse_spec({"expiresAt": "2031-01-01T00:00:00Z"})
