"""`aws-security-group`: one VPC security group per rendered resource, through boto3.

The rendered body is the parameters of `create_security_group` plus the group's exact
ingress:

    GroupName, Description, VpcId       create_security_group
    IpPermissions                        every ingress rule the group has, nothing more
    Tags                                 with the paved.dev/{namespace,name,uid} tags

The provider:

- observes with ONE `describe_security_groups` (filtered by name and VPC), which returns the
  rules too, so the steady state costs one call per group per drift interval;
- creates idempotently: the name comes from the intent (uid included), and a
  `InvalidGroup.Duplicate` race resolves to "found it";
- keeps the ingress exact: a rule added by hand is revoked, a rule removed by hand is
  authorized again, with calls carrying only the rules that differ (none at rest). Rules are
  compared one source at a time (protocol, ports, and one group, CIDR or prefix list), so
  AWS's grouping of sources into one permission, and descriptions, are not drift;
- does not manage egress (AWS's default allow-all stays): what a database may reach is not
  what the intent says; who may reach it is;
- never touches a group it did not create (its `paved.dev/uid` tag is another intent's or
  absent): a clash is reported naming the group;
- deletes (policy Snapshot or Delete; Retain keeps it, like the instance that uses it), and
  reports a group still in use (`DependencyViolation`: an instance's or a pod's network
  interface) as not done yet, so deletion is retried rather than the group leaked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from paved.providers.aws import session
from paved.providers.aws.tags import TAG_UID, merge_tags, owner_tags, tags_of
from paved.providers.aws.session import AwsError
from paved.providers.base import DeletionResult, Observation, Owner, ProviderError
from paved.render.types import RenderedResource

log = logging.getLogger(__name__)

PROVIDER = "aws-security-group"
NOT_FOUND_CODES = ("InvalidGroup.NotFound", "InvalidGroupId.NotFound")


class Rule(NamedTuple):
    """One ingress rule: protocol, ports and ONE source (group, CIDR, IPv6 CIDR or prefix list)."""

    protocol: str
    from_port: int | None
    to_port: int | None
    source: str  # "group" | "cidr" | "cidr6" | "prefix-list"
    value: str

    def describe(self) -> str:
        ports = "" if self.from_port is None else (
            f" port {self.from_port}" if self.from_port == self.to_port else f" ports {self.from_port}-{self.to_port}")
        return f"{self.protocol}{ports} from {self.value}"

    def permission(self) -> dict[str, Any]:
        """The IpPermissions entry that names exactly this rule."""
        entry: dict[str, Any] = {"IpProtocol": self.protocol}
        if self.from_port is not None:
            entry.update(FromPort=self.from_port, ToPort=self.to_port)
        key, inner = _SOURCES[self.source]
        entry[key] = [{inner: self.value}]
        return entry


# source kind -> (IpPermissions key, key of one entry)
_SOURCES = {
    "group": ("UserIdGroupPairs", "GroupId"),
    "cidr": ("IpRanges", "CidrIp"),
    "cidr6": ("Ipv6Ranges", "CidrIpv6"),
    "prefix-list": ("PrefixListIds", "PrefixListId"),
}


def rules_of(permissions: Iterable[Mapping[str, Any]]) -> set[Rule]:
    """IpPermissions (as rendered or as described) as a set of single-source rules. Pure."""
    rules: set[Rule] = set()
    for permission in permissions:
        protocol = str(permission.get("IpProtocol", "-1")).lower()
        ports = (None, None) if protocol == "-1" else (permission.get("FromPort"), permission.get("ToPort"))
        from_port, to_port = (None if port is None else int(port) for port in ports)
        for source, (key, inner) in _SOURCES.items():
            for entry in permission.get(key) or []:
                if entry.get(inner):
                    rules.add(Rule(protocol, from_port, to_port, source, str(entry[inner])))
    return rules


def rule_of(entry: Mapping[str, Any]) -> Rule | None:
    """A describe_security_group_rules entry as a Rule (None for a source kind not managed). Pure."""
    protocol = str(entry.get("IpProtocol", "-1")).lower()
    ports = (None, None) if protocol == "-1" else (entry.get("FromPort"), entry.get("ToPort"))
    from_port, to_port = (None if port is None else int(port) for port in ports)
    sources = {"group": (entry.get("ReferencedGroupInfo") or {}).get("GroupId"), "cidr": entry.get("CidrIpv4"),
               "cidr6": entry.get("CidrIpv6"), "prefix-list": entry.get("PrefixListId")}
    return next((Rule(protocol, from_port, to_port, kind, str(value)) for kind, value in sources.items() if value), None)


class IngressDiff(NamedTuple):
    revoke: list[Rule]  # on the group, not in the body: added by hand
    authorize: list[Rule]  # in the body, not on the group

    @property
    def drifted(self) -> bool:
        return bool(self.revoke or self.authorize)

    def describe(self) -> str:
        parts = [f"removed ingress {', '.join(rule.describe() for rule in self.revoke)}"] if self.revoke else []
        parts += [f"added ingress {', '.join(rule.describe() for rule in self.authorize)}"] if self.authorize else []
        return "; ".join(parts)


def diff_ingress(desired: Mapping[str, Any], group: Mapping[str, Any]) -> IngressDiff:
    """What must be revoked and authorized for the group's ingress to be exactly the body's. Pure."""
    want, have = rules_of(desired.get("IpPermissions") or []), rules_of(group.get("IpPermissions") or [])
    return IngressDiff(sorted(have - want), sorted(want - have))


class SecurityGroupProvider:
    """ResourceProvider for `aws-security-group` (see the module docstring for the rules)."""

    name = PROVIDER

    def __init__(self, region_name: str | None = None) -> None:
        self._region = region_name

    def observe(self, resource: RenderedResource, owner: Owner) -> Observation:
        group = self._find(resource, owner)
        if group is None:
            return Observation(exists=False, external_id=_name(resource), message=f"security group {_name(resource)} does not exist")
        self._check_owner(group, owner)
        diff = diff_ingress(resource.body, group)
        return _observation(group, drift=["IpPermissions"] if diff.drifted else [], message=diff.describe())

    def apply(self, resource: RenderedResource, owner: Owner) -> Observation:
        """Create the group if missing, then make its ingress exactly the body's; never deletes."""
        group = self._find(resource, owner)
        created = group is None
        if group is None:
            group = self._create(resource, owner)
        self._check_owner(group, owner)
        diff = diff_ingress(resource.body, group)
        if diff.revoke:
            log.info("security group %s: %s", group["GroupId"], diff.describe())
            self._revoke(group["GroupId"], diff.revoke)
        if diff.authorize:
            self._call("authorize_security_group_ingress", GroupId=group["GroupId"],
                       IpPermissions=[rule.permission() for rule in diff.authorize])
        observation = _observation(group, drift=["IpPermissions"] if diff.drifted and not created else [],
                                   message="created" if created else diff.describe())
        observation.changed = created or diff.drifted
        return observation

    def delete(self, resource: RenderedResource, owner: Owner, policy: str) -> DeletionResult:
        name = _name(resource)
        if policy == "Retain":
            return DeletionResult(done=True, message=f"security group {name} retained")
        # By name and our uid tag: rendered for deletion without outputs, the body's VpcId is unknown.
        groups = self._describe([{"Name": "group-name", "Values": [name]}, {"Name": f"tag:{TAG_UID}", "Values": [owner.uid]}])
        if not groups:
            return DeletionResult(done=True, message=f"security group {name} is gone")
        unfinished = []
        for group in groups:
            try:
                self._call("delete_security_group", GroupId=group["GroupId"])
            except AwsError as error:
                if error.code in NOT_FOUND_CODES:
                    continue
                if error.code != "DependencyViolation":
                    raise
                unfinished.append(f"security group {name} ({group['GroupId']}) is still in use (a network interface of the "
                                  "database or of a pod that was granted it); deleting it again later")
        if unfinished:
            return DeletionResult(done=False, message="; ".join(unfinished))
        return DeletionResult(done=True, message=f"security group {name} deleted")

    # -- helpers -------------------------------------------------------------------------

    def _revoke(self, group_id: str, rules: list[Rule]) -> None:
        try:
            self._call("revoke_security_group_ingress", GroupId=group_id, IpPermissions=[rule.permission() for rule in rules])
        except AwsError as error:
            if error.code not in NOT_FOUND_CODES:
                raise
            # A rule from a group that no longer exists cannot be named by that group: by its rule id.
            described = self._call("describe_security_group_rules", Filters=[{"Name": "group-id", "Values": [group_id]}])
            ids = [entry["SecurityGroupRuleId"] for entry in described.get("SecurityGroupRules") or []
                   if not entry.get("IsEgress") and rule_of(entry) in rules]
            if ids:
                self._call("revoke_security_group_ingress", GroupId=group_id, SecurityGroupRuleIds=ids)

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return session.call(PROVIDER, session.client("ec2", self._region), operation, **params)

    def _describe(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(self._call("describe_security_groups", Filters=filters).get("SecurityGroups") or [])

    def _find(self, resource: RenderedResource, owner: Owner) -> dict[str, Any] | None:
        vpc = resource.body.get("VpcId")
        if not vpc:
            raise ProviderError(f"resource {resource.name!r}: the aws-security-group body has no VpcId", retryable=False)
        groups = self._describe([{"Name": "group-name", "Values": [_name(resource)]}, {"Name": "vpc-id", "Values": [str(vpc)]}])
        return groups[0] if groups else None

    def _create(self, resource: RenderedResource, owner: Owner) -> dict[str, Any]:
        body = resource.body
        tags = merge_tags(body.get("Tags") or [], owner_tags(owner))
        log.info("creating security group %s for %s/%s", _name(resource), owner.namespace, owner.name)
        try:
            response = self._call("create_security_group", GroupName=_name(resource), VpcId=body["VpcId"],
                                  Description=str(body.get("Description") or _name(resource)),
                                  TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}])
        except AwsError as error:
            if error.code != "InvalidGroup.Duplicate":
                raise
            # Lost a race with ourselves (a retry, or another replica): find it.
            found = self._find(resource, owner)
            if found is None:
                raise ProviderError(f"security group {_name(resource)} reported as existing but not found; retrying",
                                    retryable=True) from None
            return found
        return {"GroupId": response["GroupId"], "GroupName": _name(resource), "VpcId": body["VpcId"], "Tags": tags,
                "IpPermissions": []}

    @staticmethod
    def _check_owner(group: Mapping[str, Any], owner: Owner) -> None:
        tagged = tags_of(group).get(TAG_UID)
        if tagged != owner.uid:
            whose = "another intent" if tagged else "no Paved intent"
            raise ProviderError(f"security group {group.get('GroupName')} ({group.get('GroupId')}) in VPC {group.get('VpcId')} "
                                f"belongs to {whose}; Paved will not manage it from this one", retryable=False)


def _name(resource: RenderedResource) -> str:
    try:
        return str(resource.body["GroupName"])
    except KeyError:
        raise ProviderError(f"resource {resource.name!r}: the aws-security-group body has no GroupName", retryable=False) from None


def _observation(group: Mapping[str, Any], *, drift: list[str], message: str) -> Observation:
    return Observation(
        exists=True,
        ready=True,
        outputs={"groupId": group["GroupId"], "groupName": group.get("GroupName", ""), "vpcId": group.get("VpcId", "")},
        message=message,
        external_id=str(group["GroupId"]),
        drift=drift,
    )

