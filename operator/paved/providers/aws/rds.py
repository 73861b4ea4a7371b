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
  adopted again).

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
parameter value in its messages).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from paved.providers.aws import session
from paved.providers.aws.session import AwsError
from paved.providers.base import DeletionResult, Observation, Owner, ProviderError
from paved.render.types import RenderedResource

log = logging.getLogger(__name__)

PROVIDER = "aws-rds"
ADOPT_ANNOTATION = "paved.dev/adopt-db-instance"
TAG_NAMESPACE = "paved.dev/namespace"
TAG_NAME = "paved.dev/name"
TAG_UID = "paved.dev/uid"
TAG_ADOPTED = "paved.dev/adopted"
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


def diff_instance(desired: Mapping[str, Any], instance: Mapping[str, Any]) -> InstanceDiff:
    """Compare a create_db_instance body with a describe_db_instances entry. Pure.

    Fields absent from the body are not managed (AWS defaults are not drift).
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
    return InstanceDiff(modify=modify, immutable=immutable)


def _normalise(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def tags_of(instance: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("TagList", [])}


def owner_tags(owner: Owner) -> list[dict[str, str]]:
    return [
        {"Key": TAG_NAMESPACE, "Value": owner.namespace or ""},
        {"Key": TAG_NAME, "Value": owner.name},
        {"Key": TAG_UID, "Value": owner.uid},
    ]


def final_snapshot_identifier(identifier: str, owner: Owner) -> str:
    """Deterministic and unique per intent (uid), so a retried delete asks for the same
    snapshot and an adopted instance's earlier snapshots never collide. Fits RDS rules:
    letters, digits and single hyphens, at most 255 characters."""
    return f"{identifier}-final-{owner.uid.replace('-', '')[:12]}"


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
        return self._observation(instance, drift=fixable, immutable=diff.immutable, corrected=False)

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
            return self._observation(self._create(resource, owner), changed=True)
        instance = self._claim(instance, resource, owner)
        diff = diff_instance(resource.body, instance)
        status = instance.get("DBInstanceStatus", "")
        if not diff.modify or status != AVAILABLE:  # RDS refuses to modify a busy instance
            return self._observation(instance, immutable=diff.immutable)
        log.info("RDS instance %s drifted in %s; modifying in place", identifier, ", ".join(diff.drifted))
        response = self._call("modify_db_instance", DBInstanceIdentifier=identifier, ApplyImmediately=True, **diff.modify)
        return self._observation(response["DBInstance"], drift=diff.drifted, immutable=diff.immutable, changed=True)

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
        params = dict(resource.body)
        params["Tags"] = _merge_tags(params.get("Tags", []), owner_tags(owner))
        log.info("creating RDS instance %s for %s/%s", identifier, owner.namespace, owner.name)
        try:
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
        self._call("add_tags_to_resource", ResourceName=instance["DBInstanceArn"], Tags=owner_tags(owner))
        tags = _merge_tags(instance.get("TagList", []), owner_tags(owner))
        return {**instance, "TagList": tags}

    def _observation(
        self,
        instance: Mapping[str, Any],
        *,
        drift: list[str] | None = None,
        immutable: Mapping[str, str] | None = None,
        changed: bool = False,
        corrected: bool = True,
    ) -> Observation:
        status = instance.get("DBInstanceStatus", "")
        immutable = dict(immutable or {})
        messages = [f"RDS instance {instance['DBInstanceIdentifier']} is {status}"]
        if drift:
            messages.append(f"{'corrected' if corrected else 'drifted:'} {', '.join(drift)}")
        messages.extend(immutable.values())
        return Observation(
            exists=True,
            ready=status == AVAILABLE,
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


def _merge_tags(tags: list[dict[str, str]], overrides: list[dict[str, str]]) -> list[dict[str, str]]:
    merged = {t["Key"]: t["Value"] for t in tags}
    merged.update({t["Key"]: t["Value"] for t in overrides})
    return [{"Key": k, "Value": v} for k, v in merged.items()]

