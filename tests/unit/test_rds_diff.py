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
