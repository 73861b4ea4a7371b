"""The API models accept what the docs promise and refuse bad input naming the field path."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from paved import API_VERSION
from paved.api.common import set_condition
from paved.api.database import DatabaseIntentSpec
from paved.api.kinds import KINDS, SpecError, kind_info, parse_object
from paved.api.rollout import ProgressiveRolloutSpec

SEED = """
apiVersion: paved.dev/v1alpha1
kind: DatabaseIntent
metadata: {name: orders-db}
spec: {engine: postgresql, version: "16", availability: high, encryption: true, backup: {retentionDays: 30}, network: {allowFrom: [{namespace: orders-app}]}}
"""


def problems(body: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_object(body)
    return caught.value.problems


def with_spec(example: str, **changes: Any) -> dict[str, Any]:
    body = yaml.safe_load(example)
    body["spec"].update(changes)
    return body


def test_seed_example_validates_as_written() -> None:
    info, spec = parse_object(yaml.safe_load(SEED))
    assert info.kind == "DatabaseIntent"
    assert isinstance(spec, DatabaseIntentSpec)
    assert (spec.engine, spec.version, spec.availability, spec.encryption) == ("postgresql", "16", "high", True)
    assert spec.backup.retentionDays == 30
    assert spec.network.allowFrom[0].namespace == "orders-app"
    assert (spec.storageGB, spec.size, spec.deletionPolicy, spec.driftCheckInterval) == (20, "small", "Snapshot", "10m")
    assert spec.connection_secret_name("orders-db") == "orders-db-connection"


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_every_kind_example_validates(info: Any) -> None:
    body = yaml.safe_load(info.example)
    assert (body["apiVersion"], body["kind"]) == (API_VERSION, info.kind)
    parsed_info, spec = parse_object(body)
    assert parsed_info is info
    assert isinstance(spec, info.spec)


SEED_BODY = yaml.safe_load(SEED)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"engine": "oracle"}, "spec.engine: Input should be 'postgresql' or 'mysql'"),
        ({"backup": {"retentionDays": 99}}, "spec.backup.retentionDays: Input should be less than or equal to 35"),
        ({"engin": "postgresql"}, "spec.engin: unknown field"),
        ({"backup": {"retentionDay": 3}}, "spec.backup.retentionDay: unknown field"),
        ({"version": 16}, "spec.version: Input should be a valid string"),
        ({"version": "latest"}, "spec.version: String should match pattern"),
        ({"driftCheckInterval": "10 minutes"}, "spec.driftCheckInterval: not a duration; use forms like 30s"),
        ({"network": {"allowFrom": [{"namespace": "Orders_App"}]}}, "spec.network.allowFrom[0].namespace: String should match"),
        ({"storageGB": 5}, "spec.storageGB: Input should be greater than or equal to 20"),
    ],
)
def test_bad_database_input_names_the_field(change: dict[str, Any], expected: str) -> None:
    body = copy.deepcopy(SEED_BODY)
    body["spec"].update(change)
    assert any(problem.startswith(expected) for problem in problems(body)), problems(body)


def test_missing_required_fields_are_named() -> None:
    body = copy.deepcopy(SEED_BODY)
    del body["spec"]["engine"]
    assert problems(body) == ["spec.engine: Field required"]


def test_ttl_and_expires_at_are_exclusive() -> None:
    body = with_spec(kind_info("AgentIdentity").example, ttl="1h", expiresAt="2030-01-01T00:00:00Z")
    assert problems(body) == ["spec: set at most one of: expiresAt, ttl (got expiresAt, ttl)"]


def test_agent_identity_refuses_unknown_verbs_and_naive_times() -> None:
    body = with_spec(kind_info("AgentIdentity").example, ttl=None, expiresAt="2030-01-01T00:00:00")
    body["spec"]["capabilities"][0]["verbs"] = ["get", "own"]
    found = problems(body)
    assert any(p.startswith("spec.capabilities[0].verbs[1]:") for p in found), found
    assert any(p.startswith("spec.expiresAt:") for p in found), found


def test_agent_identity_defaults() -> None:
    spec = kind_info("AgentIdentity").parse_spec({"capabilities": [{"resources": ["pods"], "verbs": ["get"]}]})
    assert spec.capabilities[0].apiGroups == [""]
    assert (spec.tokenTTL, spec.audience, spec.service_account_name("agent")) == ("1h", "paved", "agent")


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ({}, "spec.provider: set exactly one of: vault, aws (got none)"),
        (
            {"aws": {"region": "eu-west-1"}, "vault": {"server": "http://v:8200", "auth": {"tokenSecretRef": {"name": "t", "key": "k"}}}},
            "spec.provider: set exactly one of: vault, aws (got vault, aws)",
        ),
        ({"vault": {"server": "http://v:8200", "auth": {}}}, "spec.provider.vault.auth: set exactly one of: kubernetes, tokenSecretRef, appRole (got none)"),
    ],
)
def test_store_provider_is_one_of(provider: dict[str, Any], expected: str) -> None:
    body = {"apiVersion": API_VERSION, "kind": "SecretStore", "spec": {"provider": provider}}
    assert expected in problems(body)


def test_aws_service_account_auth_needs_a_role_and_defaults_to_the_sts_audience() -> None:
    body = {"apiVersion": API_VERSION, "kind": "SecretStore",
            "spec": {"provider": {"aws": {"region": "eu-west-1", "auth": {"serviceAccountRef": {"name": "reader"}}}}}}
    assert problems(body) == ["spec.provider.aws.auth: serviceAccountRef needs role: the IAM role its token is exchanged "
                              "for (AssumeRoleWithWebIdentity)"]
    body["spec"]["provider"]["aws"]["auth"]["role"] = "arn:aws:iam::123456789012:role/reader"
    spec = kind_info("SecretStore").parse_spec(body["spec"])
    assert spec.provider.aws.auth.serviceAccountRef.audiences == ["sts.amazonaws.com"]  # type: ignore[attr-defined]


def test_policies_may_match_secret_stores_to_allow_not_to_judge() -> None:
    policy = {"apiVersion": API_VERSION, "kind": "IntentPolicy", "metadata": {"name": "p"},
              "spec": {"match": {"kinds": ["SecretStore"]}, "allow": ["OperatorCredentials", "AnyEndpoint"]}}
    parse_object(policy)
    policy["spec"]["rules"] = [{"name": "r", "expression": "true", "message": "m"}]
    assert problems(policy) == ["spec: match.kinds: SecretStore may be matched only by a policy without rules (rules judge "
                                "intents); put the rules in a separate policy"]


def test_cluster_store_access_needs_namespaces_or_selector() -> None:
    body = yaml.safe_load(kind_info("ClusterSecretStore").example)
    body["spec"]["access"].append({"keyPrefixes": ["shared/"]})
    assert problems(body) == ["spec.access[1]: set exactly one of: namespaces, namespaceSelector (got none)"]


def test_external_secret_ref_needs_some_data() -> None:
    body = with_spec(kind_info("ExternalSecretRef").example, data=[])
    assert problems(body) == ["spec: set at least one of: data, dataFrom (got none)"]


def test_rollout_steps_or_shorthand() -> None:
    example = kind_info("ProgressiveRollout").example
    assert problems(with_spec(example, maxWeight=50, stepWeight=10, stepInterval="1m")) == [
        "spec: set either steps or the maxWeight/stepWeight/stepInterval shorthand (got steps, maxWeight)"
    ]
    found = problems(with_spec(example, steps=None, maxWeight=50))
    assert found == ["spec: set all or none of: maxWeight, stepWeight, stepInterval (got maxWeight)"]


def test_rollout_step_has_exactly_one_action() -> None:
    body = with_spec(kind_info("ProgressiveRollout").example)
    body["spec"]["steps"][1] = {"setWeight": 10, "pause": {}}
    assert problems(body) == ["spec.steps[1]: set exactly one of: setWeight, pause, analysis (got setWeight, pause)"]


def test_rollout_cross_references_and_unique_names() -> None:
    body = with_spec(kind_info("ProgressiveRollout").example)
    body["spec"]["steps"].append({"analysis": {"metrics": ["latency"]}})
    assert problems(body) == ["spec: steps[6].analysis.metrics: unknown metric(s) latency"]
    body = with_spec(kind_info("ProgressiveRollout").example)
    metrics = body["spec"]["analysis"]["metrics"]
    metrics.append(dict(metrics[0]))
    assert problems(body) == ["spec.analysis.metrics: duplicate name 'success-rate': each name may appear once"]
    del metrics[1]
    del metrics[0]["samplesQuery"]
    assert problems(body) == ["spec.analysis.metrics[0]: minSamples needs samplesQuery"]


def test_rollout_shorthand_expands_to_steps() -> None:
    spec = ProgressiveRolloutSpec.model_validate(
        {"targetRef": {"name": "app"}, "service": {"name": "app", "port": 80}, "maxWeight": 50, "stepWeight": 20, "stepInterval": "1m"}
    )
    assert [step.setWeight for step in spec.expanded_steps() if step.setWeight is not None] == [20, 40, 50]
    assert spec.trafficRouting.replicaRatio is not None and spec.trafficRouting.gatewayAPI is None


def test_composition_resource_names_are_unique() -> None:
    body = yaml.safe_load(kind_info("Composition").example)
    body["spec"]["resources"].append(dict(body["spec"]["resources"][0]))
    assert problems(body) == ["spec.resources: duplicate name 'connection': each name may appear once"]


def test_unknown_kind_and_wrong_api_version() -> None:
    assert problems({"apiVersion": API_VERSION, "kind": "Database"})[0].startswith("kind: unknown kind 'Database'")
    assert problems({"apiVersion": "paved.dev/v1", "kind": "DatabaseIntent"}) == [
        "apiVersion: expected paved.dev/v1alpha1, got 'paved.dev/v1'"
    ]


def test_dump_round_trips_with_defaults() -> None:
    spec = kind_info("DatabaseIntent").parse_spec(SEED_BODY["spec"])
    dumped = spec.dump()
    assert dumped["backup"] == {"retentionDays": 30} and dumped["storageGB"] == 20
    assert DatabaseIntentSpec.model_validate(dumped) == spec


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_status_models_accept_operator_conditions(info: Any) -> None:
    conditions = set_condition(None, "Ready", True, "Reconciled", "all good", generation=3)
    status = info.parse_status({"observedGeneration": 3, "conditions": conditions})
    assert status.dump()["conditions"][0]["status"] == "True"


def test_parse_rfc3339_reads_kubernetes_timestamps_as_utc_and_refuses_garbage() -> None:
    from datetime import datetime, timedelta, timezone

    from paved.api.common import parse_rfc3339

    assert parse_rfc3339("2026-11-22T10:00:00Z") == datetime(2026, 11, 22, 10, tzinfo=timezone.utc)
    assert parse_rfc3339("2026-11-22T12:00:00+02:00") == datetime(2026, 11, 22, 10, tzinfo=timezone.utc)
    assert parse_rfc3339("2026-11-22T10:00:00") == datetime(2026, 11, 22, 10, tzinfo=timezone.utc)  # naive = UTC
    later = datetime(2026, 11, 22, 11, tzinfo=timezone(timedelta(hours=1)))
    assert parse_rfc3339(later) == datetime(2026, 11, 22, 10, tzinfo=timezone.utc)
    assert parse_rfc3339("yesterday") is None
    assert parse_rfc3339("") is None
    assert parse_rfc3339(None) is None
