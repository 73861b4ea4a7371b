"""`aws-db-subnet-group`: the DB subnet group an RDS instance is placed in, through boto3.

The rendered body is exactly the parameters of `rds.create_db_subnet_group`
(DBSubnetGroupName, DBSubnetGroupDescription, SubnetIds, Tags); the subnets come from the
Composition's platform parameters (the cluster VPC's subnets). The provider:

- observes with ONE `describe_db_subnet_groups` by the deterministic name (it answers the
  VPC too, which the security groups of the intent are created in: output `vpcId`), plus one
  `list_tags_for_resource` when the group exists (describe answers no tags);
- observes, corrects or takes (after `DBSubnetGroupAlreadyExists`: a race with itself) only
  a group tagged with the intent's `paved.dev/uid`: a group of the same name that another
  intent, or no intent, made is never taken over nor modified (an error, not retried);
- corrects the subnet list with one `modify_db_subnet_group` when it differs;
- deletes after the instance (the compose engine deletes in reverse order and waits for each),
  only a group tagged with the intent's uid; a group still in use is "not done yet".
  Retain keeps it, like the instance that lives in it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from paved.providers.aws import session
from paved.providers.aws.session import AwsError
from paved.providers.aws.tags import TAG_UID, merge_tags, owner_tags
from paved.providers.base import DeletionResult, Observation, Owner, ProviderError
from paved.render.types import RenderedResource

log = logging.getLogger(__name__)

PROVIDER = "aws-db-subnet-group"
NOT_FOUND = "DBSubnetGroupNotFoundFault"
SUBNETS_PARAMETER = "spec.parameters.network.subnetIds"  # of the Composition: what the platform team must set


def subnets_of(group: Mapping[str, Any]) -> set[str]:
    return {str(subnet["SubnetIdentifier"]) for subnet in group.get("Subnets") or []}


class DBSubnetGroupProvider:
    """ResourceProvider for `aws-db-subnet-group` (see the module docstring for the rules)."""

    name = PROVIDER

    def __init__(self, region_name: str | None = None) -> None:
        self._region = region_name

    def observe(self, resource: RenderedResource, owner: Owner) -> Observation:
        subnets = _subnets(resource)
        group = self._describe(_name(resource))
        if group is None:
            return Observation(exists=False, external_id=_name(resource), message=f"DB subnet group {_name(resource)} does not exist")
        self._check_owner(group, owner)
        drift = ["SubnetIds"] if subnets_of(group) != set(subnets) else []
        return _observation(group, drift=drift)

    def apply(self, resource: RenderedResource, owner: Owner) -> Observation:
        name, subnets = _name(resource), _subnets(resource)
        group = self._describe(name)
        if group is None:
            return _observation(self._create(resource, owner), changed=True)
        self._check_owner(group, owner)
        if subnets_of(group) == set(subnets):
            return _observation(group)
        log.info("DB subnet group %s: subnets differ; modifying", name)
        response = self._call("modify_db_subnet_group", DBSubnetGroupName=name, SubnetIds=subnets,
                              DBSubnetGroupDescription=str(resource.body.get("DBSubnetGroupDescription") or name))
        return _observation(response["DBSubnetGroup"], drift=["SubnetIds"], changed=True)

    def delete(self, resource: RenderedResource, owner: Owner, policy: str) -> DeletionResult:
        name = _name(resource)
        if policy == "Retain":
            return DeletionResult(done=True, message=f"DB subnet group {name} retained")
        group = self._describe(name)
        if group is None:
            return DeletionResult(done=True, message=f"DB subnet group {name} is gone")
        if not self._owned(group, owner):
            return DeletionResult(done=True, message=f"DB subnet group {name} is not owned by this intent; left in place")
        try:
            self._call("delete_db_subnet_group", DBSubnetGroupName=name)
        except AwsError as error:
            if error.code == NOT_FOUND:
                return DeletionResult(done=True, message=f"DB subnet group {name} is gone")
            if error.code != "InvalidDBSubnetGroupStateFault":
                raise
            return DeletionResult(done=False, message=f"DB subnet group {name} is still in use; deleting it again later")
        return DeletionResult(done=True, message=f"DB subnet group {name} deleted")

    # -- helpers -------------------------------------------------------------------------

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return session.call(PROVIDER, session.client("rds", self._region), operation, **params)

    def _describe(self, name: str) -> dict[str, Any] | None:
        try:
            groups = self._call("describe_db_subnet_groups", DBSubnetGroupName=name)["DBSubnetGroups"]
        except AwsError as error:
            if error.code == NOT_FOUND:
                return None
            raise
        return groups[0] if groups else None

    def _owned(self, group: Mapping[str, Any], owner: Owner) -> bool:
        """Whether the group carries the intent's uid tag (describe does not answer tags: one call)."""
        tags = self._call("list_tags_for_resource", ResourceName=group["DBSubnetGroupArn"]).get("TagList") or []
        return any(tag.get("Key") == TAG_UID and tag.get("Value") == owner.uid for tag in tags)

    def _create(self, resource: RenderedResource, owner: Owner) -> dict[str, Any]:
        name = _name(resource)
        params = {**resource.body, "Tags": merge_tags(resource.body.get("Tags") or [], owner_tags(owner))}
        log.info("creating DB subnet group %s for %s/%s", name, owner.namespace, owner.name)
        try:
            return dict(self._call("create_db_subnet_group", **params)["DBSubnetGroup"])
        except AwsError as error:
            if error.code != "DBSubnetGroupAlreadyExists":
                raise
        group = self._describe(name)  # a race with ourselves (a retry, another replica), or a clash
        if group is None:
            raise ProviderError(f"DB subnet group {name} reported as existing but not found; retrying", retryable=True)
        self._check_owner(group, owner)
        return group

    def _check_owner(self, group: Mapping[str, Any], owner: Owner) -> None:
        if not self._owned(group, owner):
            raise ProviderError(f"DB subnet group {group['DBSubnetGroupName']} already exists and was not created by "
                                "this intent; Paved will not take it over", retryable=False)


def _name(resource: RenderedResource) -> str:
    try:
        return str(resource.body["DBSubnetGroupName"])
    except KeyError:
        raise ProviderError(f"resource {resource.name!r}: the aws-db-subnet-group body has no DBSubnetGroupName",
                            retryable=False) from None


def _subnets(resource: RenderedResource) -> list[str]:
    subnets = [str(subnet) for subnet in resource.body.get("SubnetIds") or []]
    if not subnets:  # before any call: nothing of the intent is created in AWS
        raise ProviderError(f"{SUBNETS_PARAMETER}: the platform parameters of the intent's Composition (status.composition) "
                            "list no subnets of the cluster VPC, so the database has nowhere to go; the platform team "
                            "must set them (docs/database.md); nothing was created", retryable=False, field=SUBNETS_PARAMETER)
    return subnets


def _observation(group: Mapping[str, Any], *, drift: list[str] | None = None, changed: bool = False) -> Observation:
    name = str(group["DBSubnetGroupName"])
    return Observation(
        exists=True,
        ready=True,
        outputs={"name": name, "vpcId": group.get("VpcId", ""), "arn": group.get("DBSubnetGroupArn", "")},
        message=(f"corrected {', '.join(drift)}" if changed else f"drifted: {', '.join(drift)}") if drift else "",
        external_id=name,
        drift=list(drift or []),
        changed=changed,
    )

