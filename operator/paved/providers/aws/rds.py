"""`aws-rds`: one RDS DB instance per rendered resource, through boto3.

The rendered body is exactly the parameters of `create_db_instance`. The provider:

- observes with ONE `describe_db_instances` by the deterministic identifier, so the steady
  state costs one call per resource per drift interval;
- creates idempotently: describe first, and a `DBInstanceAlreadyExists` race resolves to
  "found it"; the identifier and the `paved.dev/{namespace,name,uid}` tags come from the
  intent, so a restart mid-creation finds the instance instead of making a second one;
- corrects drift of the mutable fields with one `modify_db_instance(ApplyImmediately=True)`
  carrying only the fields that differ (none when nothing drifted);
- reports differences in immutable fields (engine, encryption, database name, master user,
  a version downgrade or major upgrade, shrinking storage) and never "fixes" them by
  deleting and recreating a database;
- deletes per policy: `Snapshot` (final snapshot with a deterministic name), `Delete`, or
  `Retain` (the instance is left exactly as it is, tags included, so it can be found and
  adopted again);
- keeps the network the composition gives it: `VpcSecurityGroupIds` exactly (a group added
  by hand is removed), `DBSubnetGroupName` reported when it differs (never moved);
- restores instead of creating when the body says `RestoreFromSnapshot` (not a create
  parameter): `{DBSnapshotIdentifier: <id or ARN>, AnyNamespace: <bool>}` (without
  AnyNamespace, only a snapshot tagged with the intent's own namespace), or `{LatestFinalSnapshotOf: {Namespace,
  Name}}` for the newest final snapshot a deleted intent of that namespace/name left. The
  snapshot is checked first (it exists, is available, same engine, encryption and major
  version, no more storage than asked: restore_problems), also by `check_restore`, which the
  database engine calls before anything of the intent is created. The restored instance gets
  the body's network, class and backups in the restore call and the rest (the generated
  password, a minor upgrade) from the drift correction once it is available.

Ownership: an instance is ours when its `paved.dev/uid` tag is the intent's uid. An existing
instance without Paved tags is managed only when the intent adopts it explicitly: the
annotation `paved.dev/adopt-db-instance: <identifier>` makes the composition render that
identifier and the tag `paved.dev/adopted: "true"` in the body, and only where an
IntentPolicy allows Adopt for the intent (the composition refuses otherwise): adopting sets the master
password to the one Paved generated (so the connection Secret works; clients of the old
password must move to the Secret) and then tags the instance with the intent's
namespace/name/uid, after which it is ours, including for deletion by policy. The password
is set before the tags, so an interrupted adoption is simply repeated. An instance tagged
for another intent is never touched.

Secrets: the body carries `MasterUserPassword`. It is sent to AWS on create and never
compared, logged, returned in outputs or included in an error (the session wrapper keeps no
parameter value in its messages). Whether the instance has it is known from the tag
`paved.dev/master-password-id`: the id of the generated password (generated with it, kept
beside it, unrelated to its value). A body whose id differs (the generated Secret was lost and
made again, a restore, a move back from an RDS-managed password) has its password pushed with
`modify_db_instance` and then the tag set; until then the instance is not ready and its
message says so. `ManageMasterUserPassword: true` instead lets RDS keep the password in
Secrets Manager (output `masterUserSecretArn`, a name, for the composition's secret sync).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from paved.providers.aws import session
from paved.providers.aws.session import AwsError
from paved.providers.aws.tags import TAG_NAME, TAG_NAMESPACE, TAG_UID, merge_tags, owner_tags, tags_of
from paved.providers.base import DeletionResult, Observation, Owner, ProviderError
from paved.render.types import RenderedResource

log = logging.getLogger(__name__)

PROVIDER = "aws-rds"
ADOPT_ANNOTATION = "paved.dev/adopt-db-instance"
TAG_ADOPTED = "paved.dev/adopted"
# Names (never holds) the generated password the instance has: a random id generated with the
# password and kept beside it. A body whose id differs from the instance's tag carries a password
# the instance does not have yet (its Secret was lost and made again, a restore brought the
# snapshot's, the intent moves back from an RDS-managed password): it is pushed, then tagged.
TAG_PASSWORD = "paved.dev/master-password-id"  # noqa: S105 - a name, not a secret
# Not a create_db_instance parameter: where to restore from instead of creating an empty instance.
RESTORE_KEY = "RestoreFromSnapshot"
RESTORE_FIELD = "spec.restoreFrom"
AVAILABLE = "available"
DELETION_POLICIES = ("Snapshot", "Retain", "Delete")

# create_db_instance parameter -> corrected in place by modify_db_instance when it differs.
MUTABLE_FIELDS = (
    "DBInstanceClass",
    "AllocatedStorage",  # grow only
    "MultiAZ",
    "EngineVersion",  # minor upgrade only
    "BackupRetentionPeriod",
    "DeletionProtection",
    "CopyTagsToSnapshot",
)
# create_db_instance parameter -> cannot change on an existing instance; reported, not fixed.
IMMUTABLE_FIELDS = ("Engine", "StorageEncrypted", "DBName", "MasterUsername")
# create_db_instance parameters restore_db_instance_from_db_snapshot takes as well. The rest
# comes from the snapshot (data, engine, encryption, master user, database name) or is applied
# by the drift correction once the restored instance is available (the generated password,
# a minor version upgrade, ...).
RESTORE_PARAMETERS = (
    "DBInstanceIdentifier", "DBInstanceClass", "Engine", "Port", "DBSubnetGroupName", "VpcSecurityGroupIds", "MultiAZ",
    "PubliclyAccessible", "AllocatedStorage", "StorageType", "BackupRetentionPeriod", "CopyTagsToSnapshot",
    "DeletionProtection", "ManageMasterUserPassword",
)


@dataclass(frozen=True)
class InstanceDiff:
    """How a live instance differs from the rendered body."""

    modify: dict[str, Any] = field(default_factory=dict)  # modify_db_instance params, differing fields only
    immutable: dict[str, str] = field(default_factory=dict)  # field -> why it cannot be corrected

    @property
    def drifted(self) -> list[str]:
        return sorted(self.modify)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in str(text).split("."))


def _version_change(desired: str, actual: str) -> str:
    """"same", "upgrade" (minor, in place), or why the change cannot be made in place."""
    want, have = _version(desired), _version(actual)
    if have[: len(want)] == want:  # "16" is satisfied by "16.3"
        return "same"
    if want[:1] != have[:1]:
        return f"major version change from {actual} to {desired} is not done automatically"
    if want < have:
        return f"downgrade from {actual} to {desired} is not possible"
    return "upgrade"


def effective_state(instance: Mapping[str, Any]) -> dict[str, Any]:
    """The instance as it will be once pending modifications apply (so a modify that AWS has
    accepted but not finished is not sent again on the next check)."""
    return {**instance, **instance.get("PendingModifiedValues", {})}


def security_groups_of(instance: Mapping[str, Any]) -> list[str] | None:
    """The instance's VPC security groups, those being removed left out (None: not answered)."""
    groups = instance.get("VpcSecurityGroups")
    if groups is None:
        return None
    return sorted(str(g["VpcSecurityGroupId"]) for g in groups if g.get("Status") != "removing")


def desired_password_id(desired: Mapping[str, Any]) -> str | None:
    return next((str(t.get("Value")) for t in desired.get("Tags") or [] if t.get("Key") == TAG_PASSWORD), None)


def password_pending(desired: Mapping[str, Any], instance: Mapping[str, Any]) -> bool:
    """Whether the body's generated password is not (known to be) the instance's. Pure.

    Known only through the password id tag: a body without one cannot tell, and is trusted."""
    if not desired.get("MasterUserPassword"):
        return False
    if instance.get("MasterUserSecret"):
        return True  # RDS manages the password; the intent moved back to a generated one
    want = desired_password_id(desired)
    return want is not None and tags_of(instance).get(TAG_PASSWORD) != want


def diff_instance(desired: Mapping[str, Any], instance: Mapping[str, Any]) -> InstanceDiff:
    """Compare a create_db_instance body with a describe_db_instances entry. Pure.

    Fields absent from the body are not managed (AWS defaults are not drift). Besides
    MUTABLE_FIELDS: the security groups (exactly the body's), the subnet group (reported: a
    move between subnet groups is an outage, never done automatically), who manages the master
    password, and the generated password itself (password_pending).
    """
    actual = effective_state(instance)
    modify: dict[str, Any] = {}
    immutable: dict[str, str] = {}
    for name in IMMUTABLE_FIELDS:
        if name in desired and name in actual and _normalise(desired[name]) != _normalise(actual[name]):
            immutable[name] = f"{name} is {actual[name]!r} on the instance but {desired[name]!r} is desired; it cannot be changed on an existing instance"
    for name in MUTABLE_FIELDS:
        if name not in desired or name not in actual or _normalise(desired[name]) == _normalise(actual[name]):
            continue
        want, have = desired[name], actual[name]
        if name == "EngineVersion":
            change = _version_change(str(want), str(have))
            if change == "upgrade":
                modify[name] = want
            elif change != "same":
                immutable[name] = f"EngineVersion: {change}"
        elif name == "AllocatedStorage":
            ceiling = desired.get("MaxAllocatedStorage")
            if int(want) > int(have):
                modify[name] = want
            elif not (ceiling and int(have) <= int(ceiling)):  # storage autoscaling may grow it
                immutable[name] = f"AllocatedStorage: storage cannot shrink from {have} to {want} GiB"
        else:
            modify[name] = want
    if "VpcSecurityGroupIds" in desired:
        have_groups = security_groups_of(actual)
        if have_groups is not None and have_groups != sorted(str(g) for g in desired["VpcSecurityGroupIds"]):
            modify["VpcSecurityGroupIds"] = list(desired["VpcSecurityGroupIds"])
    want_subnets = desired.get("DBSubnetGroupName")
    have_subnets = actual.get("DBSubnetGroupName") or (actual.get("DBSubnetGroup") or {}).get("DBSubnetGroupName")
    if want_subnets and have_subnets and str(want_subnets) != str(have_subnets):
        immutable["DBSubnetGroupName"] = (f"DBSubnetGroupName: the instance is in DB subnet group {have_subnets}, the composition "
                                          f"places it in {want_subnets}; moving a database to other subnets is not done "
                                          "automatically")
    if desired.get("ManageMasterUserPassword") and not actual.get("MasterUserSecret"):
        modify["ManageMasterUserPassword"] = True
    if password_pending(desired, actual):
        modify["MasterUserPassword"] = desired["MasterUserPassword"]
        if actual.get("MasterUserSecret"):
            modify["ManageMasterUserPassword"] = False
    return InstanceDiff(modify=modify, immutable=immutable)


# --------------------------------------------------------------------------- restore


def final_snapshot_of(snapshot: Mapping[str, Any], namespace: str, name: str) -> bool:
    """Whether `snapshot` is the final snapshot a deleted intent `namespace/name` left behind
    (deletionPolicy: Snapshot): tagged with that namespace and name (CopyTagsToSnapshot), and
    named as Paved names final snapshots of the instance it was taken from. Pure."""
    tags = tags_of(snapshot)
    if tags.get(TAG_NAMESPACE) != namespace or tags.get(TAG_NAME) != name or not tags.get(TAG_UID):
        return False
    return snapshot.get("DBSnapshotIdentifier") == final_snapshot_name(str(snapshot.get("DBInstanceIdentifier")), tags[TAG_UID])


def latest(snapshots: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return max(snapshots, key=lambda snapshot: str(snapshot.get("SnapshotCreateTime") or ""), default=None)


def restore_problems(desired: Mapping[str, Any], snapshot: Mapping[str, Any]) -> list[str]:
    """Why the instance `desired` cannot be restored from `snapshot` ([]: it can). Pure.

    A restore keeps the snapshot's engine, encryption and data, so the intent must ask for the
    same engine and encryption, the same major version (a minor upgrade follows the restore),
    and at least the snapshot's storage."""
    identifier = snapshot.get("DBSnapshotIdentifier")
    problems = []
    if "Engine" in desired and _normalise(desired["Engine"]) != _normalise(snapshot.get("Engine")):
        problems.append(f"DB snapshot {identifier} is of engine {snapshot.get('Engine')}, the intent asks for "
                        f"{desired['Engine']} (spec.engine); restore a snapshot of the same engine")
    if "StorageEncrypted" in desired and bool(desired["StorageEncrypted"]) != bool(snapshot.get("Encrypted")):
        problems.append(f"DB snapshot {identifier} is {'' if snapshot.get('Encrypted') else 'not '}encrypted and a restore "
                        f"keeps that, but spec.encryption is {str(bool(desired['StorageEncrypted'])).lower()}")
    if "EngineVersion" in desired and snapshot.get("EngineVersion") and not problems:
        change = _version_change(str(desired["EngineVersion"]), str(snapshot["EngineVersion"]))
        if change not in ("same", "upgrade"):
            problems.append(f"DB snapshot {identifier} is of version {snapshot['EngineVersion']}, the intent asks for "
                            f"{desired['EngineVersion']} (spec.version): {change}")
    if "AllocatedStorage" in desired and int(snapshot.get("AllocatedStorage") or 0) > int(desired["AllocatedStorage"]):
        problems.append(f"DB snapshot {identifier} holds {snapshot['AllocatedStorage']} GiB, more than spec.storageGB "
                        f"({desired['AllocatedStorage']}); a restore cannot shrink storage")
    return problems


def restore_parameters(desired: Mapping[str, Any], snapshot: Mapping[str, Any], owner: Owner) -> dict[str, Any]:
    """restore_db_instance_from_db_snapshot's parameters for the body `desired`. Pure.

    The generated password's id tag is left out: the restored instance has the snapshot's
    password, so the drift correction pushes the intent's once the instance is available."""
    params = {name: desired[name] for name in RESTORE_PARAMETERS if name in desired}
    params["DBSnapshotIdentifier"] = snapshot.get("DBSnapshotArn") or snapshot["DBSnapshotIdentifier"]
    tags = [tag for tag in desired.get("Tags") or [] if tag.get("Key") != TAG_PASSWORD]
    params["Tags"] = merge_tags(tags, owner_tags(owner))
    return params


def _normalise(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def final_snapshot_identifier(identifier: str, owner: Owner) -> str:
    """Deterministic and unique per intent (uid), so a retried delete asks for the same
    snapshot and an adopted instance's earlier snapshots never collide. Fits RDS rules:
    letters, digits and single hyphens, at most 255 characters."""
    return final_snapshot_name(identifier, owner.uid)


def final_snapshot_name(identifier: str, uid: str) -> str:
    return f"{identifier}-final-{uid.replace('-', '')[:12]}"


def outputs_of(instance: Mapping[str, Any]) -> dict[str, Any]:
    """What later resources may read (outputs.instance.address, ...). Never the password."""
    endpoint = instance.get("Endpoint") or {}
    return {
        "identifier": instance.get("DBInstanceIdentifier", ""),
        "address": endpoint.get("Address", ""),
        "port": endpoint.get("Port") or instance.get("DbInstancePort"),
        "arn": instance.get("DBInstanceArn", ""),
        "status": instance.get("DBInstanceStatus", ""),
        "engineVersion": instance.get("EngineVersion", ""),
        # Where RDS keeps the master password it manages (ManageMasterUserPassword): a name, not the value.
        "masterUserSecretArn": (instance.get("MasterUserSecret") or {}).get("SecretArn", ""),
    }


class RdsProvider:
    """ResourceProvider for `aws-rds` (see the module docstring for the rules)."""

    name = PROVIDER

    def __init__(self, region_name: str | None = None) -> None:
        self._region = region_name

    # -- the ResourceProvider protocol -------------------------------------------------------

    def observe(self, resource: RenderedResource, owner: Owner) -> Observation:
        identifier = _identifier(resource)
        instance = self._describe(identifier)
        if instance is None:
            return Observation(exists=False, external_id=identifier, message=f"RDS instance {identifier} does not exist")
        diff = diff_instance(resource.body, instance)
        # `drift` here means "differs" (observe never writes): the composed reconcile then
        # calls apply, which corrects exactly these fields. A busy instance cannot be
        # modified, so its differences wait for a check that finds it available.
        fixable = diff.drifted if instance.get("DBInstanceStatus") == AVAILABLE else []
        return self._observation(instance, drift=fixable, immutable=diff.immutable, corrected=False,
                                 password=password_pending(resource.body, effective_state(instance)))

    def apply(self, resource: RenderedResource, owner: Owner) -> Observation:
        """Create the instance if missing, else correct mutable drift; never deletes."""
        identifier = _identifier(resource)
        instance = self._describe(identifier)
        if instance is None:
            if adoption_requested(resource):
                raise ProviderError(
                    f"RDS instance {identifier} named by annotation {ADOPT_ANNOTATION} does not exist; "
                    "fix the identifier or remove the annotation to let Paved create one",
                    retryable=False,
                    field=f"metadata.annotations[{ADOPT_ANNOTATION}]",
                )
            created = self._create(resource, owner)  # a restored one has the snapshot's password
            return self._observation(created, changed=True, password=password_pending(resource.body, created))
        instance = self._claim(instance, resource, owner)
        diff = diff_instance(resource.body, instance)
        status = instance.get("DBInstanceStatus", "")
        if not diff.modify or status != AVAILABLE:  # RDS refuses to modify a busy instance
            return self._observation(instance, immutable=diff.immutable, password="MasterUserPassword" in diff.modify)
        log.info("RDS instance %s drifted in %s; modifying in place", identifier, ", ".join(diff.drifted))
        response = self._call("modify_db_instance", DBInstanceIdentifier=identifier, ApplyImmediately=True, **diff.modify)
        password_id = desired_password_id(resource.body)
        if "MasterUserPassword" in diff.modify and password_id is not None:
            # After the password: an interrupted push is simply repeated (the tag still differs).
            self._call("add_tags_to_resource", ResourceName=instance["DBInstanceArn"],
                       Tags=[{"Key": TAG_PASSWORD, "Value": password_id}])
        return self._observation(response["DBInstance"], drift=diff.drifted, immutable=diff.immutable, changed=True)

    def check_restore(self, resource: RenderedResource, owner: Owner) -> None:
        """Before anything of the intent is created: the snapshot a body restores from exists, is
        available and fits the intent (restore_problems); raises ProviderError naming
        spec.restoreFrom. Nothing to check once the instance exists (one describe)."""
        if RESTORE_KEY in resource.body and self._describe(_identifier(resource)) is None:
            self._restore_source(resource, owner)

    def delete(self, resource: RenderedResource, owner: Owner, policy: str) -> DeletionResult:
        """Carry out `policy`; idempotent; `done=False` while AWS is still deleting."""
        if policy not in DELETION_POLICIES:
            raise ProviderError(f"unknown deletion policy {policy!r}; use one of {', '.join(DELETION_POLICIES)}", retryable=False, field="spec.deletionPolicy")
        identifier = _identifier(resource)
        if policy == "Retain":
            return DeletionResult(done=True, message=f"RDS instance {identifier} retained")
        instance = self._describe(identifier)
        if instance is None:
            return DeletionResult(done=True, message=f"RDS instance {identifier} is gone")
        if tags_of(instance).get(TAG_UID) != owner.uid:
            return DeletionResult(done=True, message=f"RDS instance {identifier} is not owned by this intent; left in place")
        status = instance.get("DBInstanceStatus", "")
        if status == "deleting":
            return DeletionResult(done=False, message=f"RDS instance {identifier} is being deleted")
        if instance.get("DeletionProtection"):
            # The intent's deletionPolicy is the owner's explicit decision; protection guards
            # against deletion from anywhere else, so it is lifted only here, only for ours.
            self._call("modify_db_instance", DBInstanceIdentifier=identifier, DeletionProtection=False, ApplyImmediately=True)
        params: dict[str, Any] = {"DBInstanceIdentifier": identifier, "SkipFinalSnapshot": policy == "Delete"}
        if policy == "Snapshot":
            params["FinalDBSnapshotIdentifier"] = final_snapshot_identifier(identifier, owner)
        try:
            response = self._call("delete_db_instance", **params)
        except AwsError as error:
            if error.code == "DBInstanceNotFound":
                return DeletionResult(done=True, message=f"RDS instance {identifier} is gone")
            raise
        remaining = response.get("DBInstance", {}).get("DBInstanceStatus", "deleting")
        done = self._describe(identifier) is None
        snapshot = f" (final snapshot {params['FinalDBSnapshotIdentifier']})" if policy == "Snapshot" else ""
        return DeletionResult(done=done, message=f"RDS instance {identifier} {'deleted' if done else remaining}{snapshot}")

    # -- helpers -------------------------------------------------------------------------

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return session.call(PROVIDER, session.client("rds", self._region), operation, **params)

    def _describe(self, identifier: str) -> dict[str, Any] | None:
        try:
            instances = self._call("describe_db_instances", DBInstanceIdentifier=identifier)["DBInstances"]
        except AwsError as error:
            if error.code == "DBInstanceNotFound":
                return None
            raise
        return instances[0] if instances else None

    def _create(self, resource: RenderedResource, owner: Owner) -> dict[str, Any]:
        identifier = _identifier(resource)
        params = {key: value for key, value in resource.body.items() if key != RESTORE_KEY}
        params["Tags"] = merge_tags(params.get("Tags", []), owner_tags(owner))
        try:
            if RESTORE_KEY in resource.body:
                snapshot = self._restore_source(resource, owner)
                log.info("restoring RDS instance %s for %s/%s from DB snapshot %s", identifier, owner.namespace, owner.name,
                         snapshot["DBSnapshotIdentifier"])
                restore = restore_parameters(resource.body, snapshot, owner)
                return self._call("restore_db_instance_from_db_snapshot", **restore)["DBInstance"]
            log.info("creating RDS instance %s for %s/%s", identifier, owner.namespace, owner.name)
            return self._call("create_db_instance", **params)["DBInstance"]
        except AwsError as error:
            if error.code != "DBInstanceAlreadyExists":
                raise  # parameter errors are already non-retryable (session._classify)
        # Lost a race with ourselves (a retry, or another operator replica): find it.
        instance = self._describe(identifier)
        if instance is None:
            raise ProviderError(f"RDS instance {identifier} reported as existing but not found; retrying", retryable=True)
        return self._claim(instance, resource, owner)

    def _claim(self, instance: dict[str, Any], resource: RenderedResource, owner: Owner) -> dict[str, Any]:
        """Return the instance if it is ours; tag it if the intent adopts it; else refuse."""
        identifier = instance["DBInstanceIdentifier"]
        tagged = tags_of(instance).get(TAG_UID)
        if tagged == owner.uid:
            return instance
        if tagged:
            raise ProviderError(
                f"RDS instance {identifier} belongs to another intent ({tags_of(instance).get(TAG_NAMESPACE)}/"
                f"{tags_of(instance).get(TAG_NAME)}); Paved will not manage it from this one",
                retryable=False,
                field=f"metadata.annotations[{ADOPT_ANNOTATION}]" if adoption_requested(resource) else None,
            )
        if not adoption_requested(resource):
            raise ProviderError(
                f"RDS instance {identifier} already exists and was not created by this intent; to manage it, "
                f"set annotation {ADOPT_ANNOTATION}: {identifier}",
                retryable=False,
                field=f"metadata.annotations[{ADOPT_ANNOTATION}]",
            )
        log.info("adopting RDS instance %s for %s/%s", identifier, owner.namespace, owner.name)
        if resource.body.get("MasterUserPassword"):
            # The connection Secret carries the password Paved generated; an adopted instance
            # gets that password once, or the Secret would not work. Clients still using the
            # old password must switch to the Secret (documented on the annotation).
            self._call("modify_db_instance", DBInstanceIdentifier=identifier, ApplyImmediately=True,
                       MasterUserPassword=resource.body["MasterUserPassword"])
        password_id = desired_password_id(resource.body) if resource.body.get("MasterUserPassword") else None
        tags = owner_tags(owner) + ([{"Key": TAG_PASSWORD, "Value": password_id}] if password_id else [])
        self._call("add_tags_to_resource", ResourceName=instance["DBInstanceArn"], Tags=tags)
        return {**instance, "TagList": merge_tags(instance.get("TagList", []), tags)}

    def _restore_source(self, resource: RenderedResource, owner: Owner) -> dict[str, Any]:
        """The snapshot the body restores from, checked (restore_problems); else a ProviderError
        naming spec.restoreFrom: retryable only while the snapshot is still being made."""
        source = resource.body[RESTORE_KEY] or {}
        if source.get("DBSnapshotIdentifier"):
            missing, field = f"DB snapshot {source['DBSnapshotIdentifier']} does not exist", f"{RESTORE_FIELD}.snapshot"
            try:
                found = self._call("describe_db_snapshots", DBSnapshotIdentifier=str(source["DBSnapshotIdentifier"]))["DBSnapshots"]
            except AwsError as error:
                if error.code != "DBSnapshotNotFound":
                    raise
                found = []
            snapshot = found[0] if found else None
            if snapshot is not None and not source.get("AnyNamespace") and tags_of(snapshot).get(TAG_NAMESPACE) != owner.namespace:
                # Paved's own credentials read it: a tenant restores only what its namespace left.
                raise ProviderError(
                    f"{field}: DB snapshot {source['DBSnapshotIdentifier']} was not left by an intent of namespace "
                    f"{owner.namespace}; restoring another namespace's or a hand-made snapshot needs an IntentPolicy "
                    "that allows Adopt for this intent; nothing was created", retryable=False, field=field)
        else:
            of = source.get("LatestFinalSnapshotOf") or {}
            namespace, name = str(of.get("Namespace") or owner.namespace), str(of.get("Name") or owner.name)
            missing = f"no DatabaseIntent {namespace}/{name} deleted with deletionPolicy: Snapshot left a final snapshot"
            field = f"{RESTORE_FIELD}.latestFinalSnapshot"
            snapshot = latest([s for s in self._manual_snapshots() if final_snapshot_of(s, namespace, name)])
        if snapshot is None:
            raise ProviderError(f"{field}: {missing}; nothing was created", retryable=False, field=field)
        if snapshot.get("Status") != AVAILABLE:
            raise ProviderError(f"{field}: DB snapshot {snapshot['DBSnapshotIdentifier']} is {snapshot.get('Status')}, "
                                "not yet available; waiting for it", retryable=True, field=field)
        problems = restore_problems(resource.body, snapshot)
        if problems:
            raise ProviderError(f"{field}: {'; '.join(problems)}; nothing was created", retryable=False, field=field)
        return dict(snapshot)

    def _manual_snapshots(self) -> list[dict[str, Any]]:
        """Every manual DB snapshot of the account and region (final snapshots are manual), page by page."""
        snapshots: list[dict[str, Any]] = []
        marker: str | None = None
        while True:
            page = self._call("describe_db_snapshots", SnapshotType="manual", MaxRecords=100, **({"Marker": marker} if marker else {}))
            snapshots.extend(page.get("DBSnapshots") or [])
            marker = page.get("Marker")
            if not marker:
                return snapshots

    def _observation(
        self,
        instance: Mapping[str, Any],
        *,
        drift: list[str] | None = None,
        immutable: Mapping[str, str] | None = None,
        changed: bool = False,
        corrected: bool = True,
        password: bool = False,
    ) -> Observation:
        """`password`: the instance does not have the body's password yet (never silent: not
        ready, and the message says the connection Secret does not work until it is set)."""
        status = instance.get("DBInstanceStatus", "")
        immutable = dict(immutable or {})
        messages = [f"RDS instance {instance['DBInstanceIdentifier']} is {status}"]
        if drift:
            messages.append(f"{'corrected' if corrected else 'drifted:'} {', '.join(drift)}")
        if password:
            messages.append("its master password is not yet the one in the connection Secret (a new password was "
                            "generated, or it was restored from a snapshot); it is set once the instance is available")
        messages.extend(immutable.values())
        return Observation(
            exists=True,
            ready=status == AVAILABLE and not password,
            outputs=outputs_of(instance),
            message="; ".join(messages),
            external_id=instance["DBInstanceIdentifier"],
            drift=list(drift or []),
            immutable_drift=sorted(immutable),
            changed=changed,
        )


def _identifier(resource: RenderedResource) -> str:
    try:
        return str(resource.body["DBInstanceIdentifier"])
    except KeyError:
        raise ProviderError(f"resource {resource.name!r}: the aws-rds body has no DBInstanceIdentifier", retryable=False) from None


def adoption_requested(resource: RenderedResource) -> bool:
    """Whether the intent explicitly adopts the instance named in the body.

    The composition renders the annotation's identifier as DBInstanceIdentifier and adds the
    tag `paved.dev/adopted: "true"`; the tag travels in the body, so every path that applies
    the resource (handler, drift check, children watch) sees the same explicit decision.
    """
    tags = {t.get("Key"): t.get("Value") for t in resource.body.get("Tags") or []}
    return str(tags.get(TAG_ADOPTED, "")).lower() == "true"


