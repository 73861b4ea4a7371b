"""The aws-rds provider against a real moto server (boto3 over HTTP on loopback).

Each test starts from an empty moto (the `aws_env` fixture resets it) and counts the calls
the provider made through `paved_provider_api_calls_total`, the same counter /metrics shows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from fixtures._servers import free_port
from paved.metrics import call_counts
from paved.providers import base
from paved.providers.aws import rds
from paved.providers.aws.session import AwsError
from paved.providers.base import Owner, ProviderError
from paved.render.types import RenderedResource

pytestmark = pytest.mark.aws

PASSWORD = "pw-" + uuid.uuid4().hex


def make_owner(name: str = "orders-db") -> Owner:
    return Owner("paved.dev/v1alpha1", "DatabaseIntent", name, "team-a", str(uuid.uuid4()), 1)


def make_resource(owner: Owner, **overrides: Any) -> RenderedResource:
    body: dict[str, Any] = {
        "DBInstanceIdentifier": f"paved-{owner.namespace}-{owner.name}-{owner.uid[:8]}",
        "Engine": "postgres",
        "EngineVersion": "16.3",
        "DBInstanceClass": "db.t3.micro",
        "MultiAZ": True,
        "StorageEncrypted": True,
        "BackupRetentionPeriod": 30,
        "AllocatedStorage": 20,
        "MasterUsername": "app",
        "MasterUserPassword": PASSWORD,
        "DBName": "app",
        "Port": 5432,
        "Tags": [{"Key": "app.kubernetes.io/managed-by", "Value": "paved"}],
        "CopyTagsToSnapshot": True,
        "DeletionProtection": True,
    }
    body.update(overrides)
    return RenderedResource(name="instance", provider="aws-rds", body=body)


class Calls:
    """Deltas of paved_provider_api_calls_total{provider="aws-rds"} since creation."""

    def __init__(self) -> None:
        self._start = {op: self._read(op) for op in self.OPERATIONS}

    OPERATIONS = ("describe_db_instances", "create_db_instance", "modify_db_instance", "delete_db_instance", "add_tags_to_resource")

    @staticmethod
    def _read(operation: str) -> int:
        return call_counts("aws-rds").get(operation, 0)

    def __getitem__(self, operation: str) -> int:
        return int(self._read(operation) - self._start[operation])

    def nonzero(self) -> dict[str, int]:
        return {op: self[op] for op in self.OPERATIONS if self[op]}


@pytest.fixture
def provider(aws_env: Any) -> rds.RdsProvider:
    base.reset()
    provider = base.get("aws-rds")
    assert isinstance(provider, rds.RdsProvider)
    return provider


@pytest.fixture
def rds_client(boto3_client: Callable[..., Any]) -> Any:
    return boto3_client("rds")


def instances(rds_client: Any) -> list[dict[str, Any]]:
    return rds_client.describe_db_instances()["DBInstances"]


def test_apply_creates_once_and_is_idempotent(provider: rds.RdsProvider, rds_client: Any) -> None:
    owner = make_owner()
    resource = make_resource(owner)
    calls = Calls()

    first = provider.apply(resource, owner)
    second = provider.apply(resource, owner)

    assert [i["DBInstanceIdentifier"] for i in instances(rds_client)] == [resource.body["DBInstanceIdentifier"]]
    assert calls["create_db_instance"] == 1 and calls["modify_db_instance"] == 0
    assert first.changed and first.ready and not second.changed and second.ready
    assert second.outputs["address"] and second.outputs["port"] == 5432 and second.outputs["arn"].startswith("arn:aws:rds:")
    assert PASSWORD not in repr(first) + repr(second)
    instance = instances(rds_client)[0]
    assert rds.tags_of(instance)[rds.TAG_UID] == owner.uid
    assert rds.tags_of(instance)["app.kubernetes.io/managed-by"] == "paved"
    assert (instance["MultiAZ"], instance["StorageEncrypted"], instance["BackupRetentionPeriod"]) == (True, True, 30)


def test_steady_state_is_one_describe_and_no_modify(provider: rds.RdsProvider) -> None:
    owner = make_owner()
    resource = make_resource(owner)
    provider.apply(resource, owner)
    calls = Calls()

    provider.apply(resource, owner)
    provider.observe(resource, owner)

    assert calls.nonzero() == {"describe_db_instances": 2}


def test_restart_mid_creation_finds_the_instance(provider: rds.RdsProvider, rds_client: Any) -> None:
    """What a restarted operator sees: the instance it created exists, tagged with the uid."""
    owner = make_owner()
    resource = make_resource(owner)
    rds_client.create_db_instance(**{**resource.body, "Tags": rds.owner_tags(owner)})
    calls = Calls()

    observation = provider.apply(resource, owner)

    assert observation.exists and calls["create_db_instance"] == 0
    assert len(instances(rds_client)) == 1


def test_create_race_resolves_to_found(provider: rds.RdsProvider, rds_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another replica creates the instance between our describe and our create."""
    owner = make_owner()
    resource = make_resource(owner)
    real_describe = provider._describe
    seen: list[str] = []

    def describe_then_lose_race(identifier: str) -> dict[str, Any] | None:
        if not seen:
            seen.append(identifier)
            rds_client.create_db_instance(**{**resource.body, "Tags": rds.owner_tags(owner)})
            return None
        return real_describe(identifier)

    monkeypatch.setattr(provider, "_describe", describe_then_lose_race)
    observation = provider.apply(resource, owner)

    assert observation.exists and observation.external_id == resource.body["DBInstanceIdentifier"]
    assert len(instances(rds_client)) == 1


def test_drifted_retention_is_corrected_with_one_modify(provider: rds.RdsProvider, rds_client: Any) -> None:
    owner = make_owner()
    resource = make_resource(owner)
    provider.apply(resource, owner)
    identifier = resource.body["DBInstanceIdentifier"]
    rds_client.modify_db_instance(DBInstanceIdentifier=identifier, BackupRetentionPeriod=7, ApplyImmediately=True)
    calls = Calls()

    corrected = provider.apply(resource, owner)
    again = provider.apply(resource, owner)

    assert corrected.drift == ["BackupRetentionPeriod"] and corrected.changed
    assert again.drift == [] and not again.changed
    assert calls["modify_db_instance"] == 1
    assert instances(rds_client)[0]["BackupRetentionPeriod"] == 30


def test_immutable_drift_is_reported_and_never_recreated(provider: rds.RdsProvider, rds_client: Any) -> None:
    owner = make_owner()
    provider.apply(make_resource(owner), owner)
    created = instances(rds_client)[0]["InstanceCreateTime"]
    calls = Calls()

    observation = provider.apply(make_resource(owner, StorageEncrypted=False, BackupRetentionPeriod=14), owner)

    assert observation.immutable_drift == ["StorageEncrypted"]
    assert "StorageEncrypted" in observation.message
    assert observation.drift == ["BackupRetentionPeriod"]  # mutable fields are still corrected
    assert calls["delete_db_instance"] == 0 and calls["create_db_instance"] == 0
    [instance] = instances(rds_client)
    assert instance["InstanceCreateTime"] == created and instance["StorageEncrypted"] is True


def test_delete_snapshot_leaves_a_final_snapshot(provider: rds.RdsProvider, rds_client: Any) -> None:
    owner = make_owner()
    resource = make_resource(owner)
    provider.apply(resource, owner)

    result = provider.delete(resource, owner, "Snapshot")
    again = provider.delete(resource, owner, "Snapshot")

    assert result.done and again.done
    assert instances(rds_client) == []
    snapshots = rds_client.describe_db_snapshots()["DBSnapshots"]
    expected = rds.final_snapshot_identifier(resource.body["DBInstanceIdentifier"], owner)
    assert [s["DBSnapshotIdentifier"] for s in snapshots] == [expected]


def test_delete_policy_delete_skips_the_snapshot(provider: rds.RdsProvider, rds_client: Any) -> None:
    owner = make_owner()
    resource = make_resource(owner, DeletionProtection=False)
    provider.apply(resource, owner)

    assert provider.delete(resource, owner, "Delete").done
    assert instances(rds_client) == [] and rds_client.describe_db_snapshots()["DBSnapshots"] == []


def test_retain_leaves_the_instance_untouched(provider: rds.RdsProvider, rds_client: Any) -> None:
    owner = make_owner()
    resource = make_resource(owner)
    provider.apply(resource, owner)
    calls = Calls()

    assert provider.delete(resource, owner, "Retain").done
    assert calls.nonzero() == {}
    [instance] = instances(rds_client)
    assert rds.tags_of(instance)[rds.TAG_UID] == owner.uid


def test_an_instance_of_another_intent_is_never_managed_or_deleted(provider: rds.RdsProvider, rds_client: Any) -> None:
    owner, other = make_owner(), make_owner("other-db")
    resource = make_resource(owner)
    rds_client.create_db_instance(**{**resource.body, "Tags": rds.owner_tags(other), "BackupRetentionPeriod": 7})

    with pytest.raises(ProviderError) as error:
        provider.apply(resource, owner)
    assert not error.value.retryable and "another intent" in str(error.value)
    assert provider.delete(resource, owner, "Delete").done
    [instance] = instances(rds_client)
    assert instance["BackupRetentionPeriod"] == 7


def test_an_unowned_instance_needs_the_adoption_annotation(provider: rds.RdsProvider, rds_client: Any) -> None:
    owner = make_owner()
    resource = make_resource(owner)
    rds_client.create_db_instance(**{**resource.body, "Tags": []})

    with pytest.raises(ProviderError) as error:
        provider.apply(resource, owner)
    assert error.value.field == f"metadata.annotations[{rds.ADOPT_ANNOTATION}]"


def test_observe_reports_drift_without_writing(provider: rds.RdsProvider, rds_client: Any) -> None:
    owner = make_owner()
    resource = make_resource(owner)
    assert not provider.observe(resource, owner).exists
    provider.apply(resource, owner)
    rds_client.modify_db_instance(DBInstanceIdentifier=resource.body["DBInstanceIdentifier"], BackupRetentionPeriod=7, ApplyImmediately=True)
    calls = Calls()

    observation = provider.observe(resource, owner)

    assert observation.drift == ["BackupRetentionPeriod"] and not observation.changed
    assert calls.nonzero() == {"describe_db_instances": 1}


def test_explicit_adoption_tags_and_manages_an_existing_instance(provider: rds.RdsProvider, rds_client: Any) -> None:
    owner = make_owner()
    rds_client.create_db_instance(**{**make_resource(owner).body, "DBInstanceIdentifier": "legacy-orders", "Tags": [], "BackupRetentionPeriod": 1})
    adopted_tag = [{"Key": rds.TAG_ADOPTED, "Value": "true"}]
    resource = make_resource(owner, DBInstanceIdentifier="legacy-orders", Tags=adopted_tag)
    calls = Calls()

    observation = provider.apply(resource, owner)

    assert observation.external_id == "legacy-orders" and observation.drift == ["BackupRetentionPeriod"]
    assert calls["create_db_instance"] == 0 and calls["add_tags_to_resource"] == 1
    assert calls["modify_db_instance"] == 2  # the generated password once, then the drifted retention
    [instance] = instances(rds_client)
    assert rds.tags_of(instance)[rds.TAG_UID] == owner.uid and instance["BackupRetentionPeriod"] == 30
    provider.apply(resource, owner)
    assert calls["add_tags_to_resource"] == 1  # ours from now on


def test_adopting_a_missing_instance_names_the_annotation(provider: rds.RdsProvider) -> None:
    owner = make_owner()
    resource = make_resource(owner, DBInstanceIdentifier="not-there", Tags=[{"Key": rds.TAG_ADOPTED, "Value": "true"}])
    calls = Calls()

    with pytest.raises(ProviderError) as error:
        provider.apply(resource, owner)
    assert error.value.field == f"metadata.annotations[{rds.ADOPT_ANNOTATION}]" and not error.value.retryable
    assert calls["create_db_instance"] == 0


def test_transient_errors_are_retryable_and_bounded(provider: rds.RdsProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAVED_AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    owner = make_owner()
    resource = make_resource(owner)
    calls = Calls()

    for action in (lambda: provider.apply(resource, owner), lambda: provider.delete(resource, owner, "Snapshot")):
        with pytest.raises(AwsError) as error:
            action()
        assert error.value.retryable and error.value.code == "EndpointConnectionError"
        assert PASSWORD not in str(error.value)

    assert calls["describe_db_instances"] == 2 * 3  # three attempts each, then give up
    assert calls["delete_db_instance"] == 0  # bounded: the attempt counts above, not a wall-clock limit


def test_errors_never_contain_the_password(provider: rds.RdsProvider) -> None:
    owner = make_owner()
    resource = make_resource(owner, MasterUserPassword=12345678)  # wrong type: botocore echoes the value

    with pytest.raises(ProviderError) as error:
        provider.apply(resource, owner)
    assert not error.value.retryable
    assert "12345678" not in str(error.value) and "MasterUserPassword" in str(error.value)


@pytest.mark.parametrize("left_by", ["another namespace", "a person (no Paved tags)"])
def test_a_snapshot_by_name_restores_only_what_the_namespace_left_unless_adopt_is_allowed(
        provider: rds.RdsProvider, rds_client: Any, left_by: str) -> None:
    """Paved's credentials read the snapshot, so a tenant naming one must not reach another team's data."""
    source = Owner("paved.dev/v1alpha1", "DatabaseIntent", "ledger", "team-b", str(uuid.uuid4()), 1)
    source_body = make_resource(source, DeletionProtection=False).body
    if left_by == "another namespace":
        provider.apply(make_resource(source, DeletionProtection=False), source)
    else:
        rds_client.create_db_instance(**{k: v for k, v in source_body.items() if k != "Tags"})
    snapshot = f"snap-{uuid.uuid4().hex[:8]}"
    rds_client.create_db_snapshot(DBSnapshotIdentifier=snapshot, DBInstanceIdentifier=source_body["DBInstanceIdentifier"])

    owner = make_owner()
    refused = make_resource(owner, RestoreFromSnapshot={"DBSnapshotIdentifier": snapshot, "AnyNamespace": False})
    with pytest.raises(ProviderError) as error:
        provider.check_restore(refused, owner)
    assert error.value.field == "spec.restoreFrom.snapshot" and not error.value.retryable
    assert "was not left by an intent of namespace team-a" in str(error.value) and "allows Adopt" in str(error.value)
    with pytest.raises(ProviderError):
        provider.apply(refused, owner)
    assert [i["DBInstanceIdentifier"] for i in instances(rds_client)] == [source_body["DBInstanceIdentifier"]]

    allowed = make_resource(owner, RestoreFromSnapshot={"DBSnapshotIdentifier": snapshot, "AnyNamespace": True})
    provider.check_restore(allowed, owner)
    provider.apply(allowed, owner)
    assert len(instances(rds_client)) == 2
