"""The pure parts of the aws-rds provider: which differences are corrected, which are reported."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paved.providers.aws import rds
from paved.providers.base import Owner

BODY: dict[str, Any] = {
    "DBInstanceIdentifier": "paved-team-a-orders-db-1a2b3c4d",
    "Engine": "postgres",
    "EngineVersion": "16",
    "DBInstanceClass": "db.t3.micro",
    "MultiAZ": True,
    "StorageEncrypted": True,
    "BackupRetentionPeriod": 30,
    "AllocatedStorage": 20,
    "MasterUsername": "app",
    "MasterUserPassword": "s3cret-value-never-shown",
    "DBName": "app",
    "Port": 5432,
    "CopyTagsToSnapshot": True,
    "DeletionProtection": True,
}


def described(**overrides: Any) -> dict[str, Any]:
    """A describe_db_instances entry matching BODY, with overrides."""
    instance = {k: v for k, v in BODY.items() if k not in ("MasterUserPassword", "Port")}
    instance.update(EngineVersion="16.3", DBInstanceStatus="available", Endpoint={"Address": "h", "Port": 5432})
    instance.update(overrides)
    return instance


def test_nothing_drifted_means_no_modify() -> None:
    diff = rds.diff_instance(BODY, described())
    assert diff.modify == {} and diff.immutable == {}


def test_only_the_differing_mutable_fields_are_modified() -> None:
    diff = rds.diff_instance(BODY, described(BackupRetentionPeriod=7, MultiAZ=False))
    assert diff.modify == {"BackupRetentionPeriod": 30, "MultiAZ": True}
    assert diff.drifted == ["BackupRetentionPeriod", "MultiAZ"]


def test_pending_modifications_count_as_applied() -> None:
    instance = described(BackupRetentionPeriod=7, PendingModifiedValues={"BackupRetentionPeriod": 30})
    assert rds.diff_instance(BODY, instance).modify == {}


@pytest.mark.parametrize(
    ("field", "actual"),
    [("StorageEncrypted", False), ("Engine", "mysql"), ("DBName", "other"), ("MasterUsername", "root")],
)
def test_immutable_fields_are_reported_not_modified(field: str, actual: Any) -> None:
    diff = rds.diff_instance(BODY, described(**{field: actual}))
    assert diff.modify == {}
    assert list(diff.immutable) == [field]
    assert field in diff.immutable[field]


@pytest.mark.parametrize(
    ("desired", "actual", "modify", "immutable"),
    [
        ("16", "16.3", {}, []),
        ("16.3", "16.3", {}, []),
        ("16.4", "16.3", {"EngineVersion": "16.4"}, []),
        ("16.2", "16.3", {}, ["EngineVersion"]),
        ("17", "16.3", {}, ["EngineVersion"]),
        ("15", "16.3", {}, ["EngineVersion"]),
    ],
)
def test_engine_version_upgrades_minor_only(desired: str, actual: str, modify: dict[str, str], immutable: list[str]) -> None:
    diff = rds.diff_instance({**BODY, "EngineVersion": desired}, described(EngineVersion=actual))
    assert diff.modify == modify
    assert list(diff.immutable) == immutable


def test_storage_grows_but_never_shrinks() -> None:
    assert rds.diff_instance({**BODY, "AllocatedStorage": 50}, described()).modify == {"AllocatedStorage": 50}
    shrink = rds.diff_instance(BODY, described(AllocatedStorage=50))
    assert shrink.modify == {} and list(shrink.immutable) == ["AllocatedStorage"]
    autoscaled = rds.diff_instance({**BODY, "MaxAllocatedStorage": 100}, described(AllocatedStorage=50))
    assert autoscaled.modify == {} and autoscaled.immutable == {}


def test_fields_absent_from_the_body_are_not_managed() -> None:
    body = {k: v for k, v in BODY.items() if k != "DeletionProtection"}
    assert rds.diff_instance(body, described(DeletionProtection=False)).modify == {}


def test_engine_name_case_is_not_drift() -> None:
    assert rds.diff_instance({**BODY, "Engine": "Postgres"}, described()).immutable == {}


@given(retention=st.integers(0, 35), actual=st.integers(0, 35))
def test_retention_is_modified_iff_it_differs(retention: int, actual: int) -> None:
    diff = rds.diff_instance({**BODY, "BackupRetentionPeriod": retention}, described(BackupRetentionPeriod=actual))
    assert diff.modify == ({} if retention == actual else {"BackupRetentionPeriod": retention})


def test_outputs_never_carry_the_password() -> None:
    outputs = rds.outputs_of(described(MasterUserPassword=BODY["MasterUserPassword"]))
    assert BODY["MasterUserPassword"] not in repr(outputs)
    assert outputs["address"] == "h" and outputs["port"] == 5432


def test_final_snapshot_identifier_is_deterministic_and_valid() -> None:
    owner = Owner("paved.dev/v1alpha1", "DatabaseIntent", "orders-db", "team-a", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    name = rds.final_snapshot_identifier(BODY["DBInstanceIdentifier"], owner)
    assert name == rds.final_snapshot_identifier(BODY["DBInstanceIdentifier"], owner)
    assert name[0].isalpha() and "--" not in name and not name.endswith("-") and len(name) <= 255


# --------------------------------------------------------------------------- network


def test_security_groups_are_exactly_the_bodys() -> None:
    body = {**BODY, "VpcSecurityGroupIds": ["sg-db"]}
    groups = [{"VpcSecurityGroupId": "sg-db", "Status": "active"}]
    assert rds.diff_instance(body, described(VpcSecurityGroups=groups)).modify == {}
    added_by_hand = groups + [{"VpcSecurityGroupId": "sg-open", "Status": "active"}]
    assert rds.diff_instance(body, described(VpcSecurityGroups=added_by_hand)).modify == {"VpcSecurityGroupIds": ["sg-db"]}
    being_removed = groups + [{"VpcSecurityGroupId": "sg-open", "Status": "removing"}]
    assert rds.diff_instance(body, described(VpcSecurityGroups=being_removed)).modify == {}


def test_another_subnet_group_is_reported_never_moved() -> None:
    body = {**BODY, "DBSubnetGroupName": "paved-subnets"}
    assert rds.diff_instance(body, described(DBSubnetGroup={"DBSubnetGroupName": "paved-subnets"})).immutable == {}
    diff = rds.diff_instance(body, described(DBSubnetGroup={"DBSubnetGroupName": "default"}))
    assert diff.modify == {} and "DB subnet group default" in diff.immutable["DBSubnetGroupName"]


# --------------------------------------------------------------------------- master password

PASSWORD_ID = {"Key": rds.TAG_PASSWORD, "Value": "id-1"}


def test_a_password_the_instance_does_not_have_is_pushed_and_named_never_shown() -> None:
    body = {**BODY, "Tags": [PASSWORD_ID]}
    assert rds.diff_instance(body, described(TagList=[PASSWORD_ID])).modify == {}  # in step
    for tags in ([], [{"Key": rds.TAG_PASSWORD, "Value": "id-0"}]):  # restored, or a Secret made again
        diff = rds.diff_instance(body, described(TagList=tags))
        assert diff.modify == {"MasterUserPassword": BODY["MasterUserPassword"]} and diff.drifted == ["MasterUserPassword"]
        assert rds.password_pending(body, described(TagList=tags))
    assert not rds.password_pending(BODY, described())  # a body without an id cannot tell: trusted


def test_moving_between_rds_managed_and_generated_passwords() -> None:
    managed = {**{k: v for k, v in BODY.items() if k != "MasterUserPassword"}, "ManageMasterUserPassword": True}
    assert rds.diff_instance(managed, described()).modify == {"ManageMasterUserPassword": True}
    secret = {"SecretArn": "arn:aws:secretsmanager:us-east-1:1:secret:rds!db-1", "SecretStatus": "active"}
    assert rds.diff_instance(managed, described(MasterUserSecret=secret)).modify == {}
    back = rds.diff_instance({**BODY, "Tags": [PASSWORD_ID]}, described(MasterUserSecret=secret, TagList=[PASSWORD_ID]))
    assert back.modify == {"MasterUserPassword": BODY["MasterUserPassword"], "ManageMasterUserPassword": False}
    assert rds.outputs_of(described(MasterUserSecret=secret))["masterUserSecretArn"] == secret["SecretArn"]


# --------------------------------------------------------------------------- restore

OWNER = Owner("paved.dev/v1alpha1", "DatabaseIntent", "orders-db", "team-a", "9f0e8d7c-0000-4000-8000-000000000002")


def snapshot(**overrides: Any) -> dict[str, Any]:
    """A describe_db_snapshots entry: the final snapshot of a deleted intent team-a/orders-db."""
    old_uid = "11112222-3333-4444-5555-666677778888"
    entry = {"DBSnapshotIdentifier": rds.final_snapshot_name("paved-team-a-orders-db-0a0b0c0d", old_uid),
             "DBInstanceIdentifier": "paved-team-a-orders-db-0a0b0c0d", "Engine": "postgres", "EngineVersion": "16.3",
             "Encrypted": True, "AllocatedStorage": 20, "Status": "available", "SnapshotCreateTime": "2026-01-01T00:00:00Z",
             "TagList": [{"Key": rds.TAG_NAMESPACE, "Value": "team-a"}, {"Key": rds.TAG_NAME, "Value": "orders-db"},
                         {"Key": rds.TAG_UID, "Value": old_uid}]}
    entry.update(overrides)
    return entry


def test_the_final_snapshot_of_a_namespace_and_name_is_recognised() -> None:
    assert rds.final_snapshot_of(snapshot(), "team-a", "orders-db")
    assert not rds.final_snapshot_of(snapshot(), "team-b", "orders-db")
    assert not rds.final_snapshot_of(snapshot(DBSnapshotIdentifier="taken-by-hand"), "team-a", "orders-db")
    newer = snapshot(SnapshotCreateTime="2026-02-01T00:00:00Z", DBSnapshotIdentifier="newer")
    assert rds.latest([snapshot(), newer, snapshot()]) == newer and rds.latest([]) is None


def test_a_snapshot_that_fits_the_intent_has_no_problem() -> None:
    assert rds.restore_problems(BODY, snapshot()) == []
    assert rds.restore_problems({**BODY, "EngineVersion": "16.4"}, snapshot()) == []  # a minor upgrade follows
    assert rds.restore_problems({**BODY, "AllocatedStorage": 100}, snapshot()) == []  # grows on restore


@pytest.mark.parametrize(("overrides", "words"), [
    ({"Engine": "mysql"}, "is of engine mysql, the intent asks for postgres (spec.engine)"),
    ({"Encrypted": False}, "is not encrypted and a restore keeps that, but spec.encryption is true"),
    ({"EngineVersion": "15.7"}, "major version change from 15.7 to 16"),
    ({"AllocatedStorage": 50}, "holds 50 GiB, more than spec.storageGB (20)"),
])
def test_a_snapshot_that_does_not_fit_is_refused_naming_why(overrides: dict[str, Any], words: str) -> None:
    problems = rds.restore_problems(BODY, snapshot(**overrides))
    assert len(problems) == 1 and words in problems[0]


def test_restore_parameters_carry_the_network_and_leave_the_password_to_the_push() -> None:
    body = {**BODY, "DBSubnetGroupName": "subnets", "VpcSecurityGroupIds": ["sg-db"], "PubliclyAccessible": False,
            "Tags": [PASSWORD_ID, {"Key": "app.kubernetes.io/managed-by", "Value": "paved"}],
            "RestoreFromSnapshot": {"DBSnapshotIdentifier": "x"}}
    params = rds.restore_parameters(body, snapshot(DBSnapshotArn="arn:aws:rds:us-east-1:1:snapshot:x"), OWNER)
    assert params["DBSnapshotIdentifier"] == "arn:aws:rds:us-east-1:1:snapshot:x"
    assert params["DBSubnetGroupName"] == "subnets" and params["VpcSecurityGroupIds"] == ["sg-db"]
    assert params["BackupRetentionPeriod"] == 30 and params["DBInstanceClass"] == "db.t3.micro"
    for absent in ("MasterUserPassword", "StorageEncrypted", "EngineVersion", "DBName", "MasterUsername", "RestoreFromSnapshot"):
        assert absent not in params
    tags = {tag["Key"]: tag["Value"] for tag in params["Tags"]}
    assert rds.TAG_PASSWORD not in tags and tags[rds.TAG_UID] == OWNER.uid
