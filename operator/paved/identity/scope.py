"""What an identity may do, as sets of atomic permissions, and the subset relation.

Subset, precisely:
- Kubernetes: a capability expands to tuples (apiGroup, resource, verb, resourceName, namespace)
  over its apiGroups x resources x verbs x (resourceNames or "all names") x (the identity's own
  namespace + capabilities[].namespaces). A child tuple is granted by the parent when some
  parent tuple has the same namespace and each other element equal or `*` (the parent's "all
  names" covers every resourceName; a child's "all names" needs the parent's "all names"). A
  subresource (`deployments/scale`) is also covered by `*/scale`, never by `deployments`.
  These are the rules of the API server's own escalation check (ruleCovers in
  k8s.io/component-helpers/auth/rbac/validation), so `rbac_granted` answers what it would.
- Vault: (path, capability). A parent path covers a child path when it is equal, when it ends
  in `*` and the child path starts with the part before it, and `+` matches exactly one
  segment. A child glob is treated literally (secret/a/* is covered by secret/* and by
  secret/a/*, not by secret/a/b).
- AWS: (action, resource). Covered when some parent action matches the child's action (IAM
  wildcards `*`/`?`, case-insensitive for actions) and some parent resource matches the
  child's resource (wildcards, case-sensitive). The parent's statement is actions x resources.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ALL_NAMES = None  # a rule without resourceNames
CLUSTER_WIDE = "*"  # the "namespace" of a clusterWide capability's tuples: every namespace


@dataclass(frozen=True)
class Excess:
    """One permission the child asks for and the parent does not hold."""

    field: str  # spec path of the child's entry, e.g. spec.capabilities[1].verbs
    permission: str  # the exact atomic permission, e.g. "delete pods in namespace team-a"

    def __str__(self) -> str:
        return f"{self.field}: {self.permission}"


def shown(excess: Sequence[Excess], limit: int = 5) -> str:
    """'<field>: <permission>; ...; and N more'."""
    text = "; ".join(str(e) for e in excess[:limit])
    return text + (f"; and {len(excess) - limit} more" if len(excess) > limit else "")


def refusal(excess: Sequence[Excess], limit: int = 5, *, others: str = "") -> str:
    """The first permission without its field (the condition message starts with that field),
    then `others` and the rest with their fields: a message never names one field twice."""
    rest = f"; {others}{shown(excess[1:], limit - 1)}" if len(excess) > 1 else ""
    return excess[0].permission + rest


# --------------------------------------------------------------------------- kubernetes


def _namespaces(capability: Mapping[str, Any], own_namespace: str) -> list[str]:
    if capability.get("clusterWide"):
        return [CLUSTER_WIDE]
    return [own_namespace] + [ns for ns in capability.get("namespaces") or [] if ns != own_namespace]


def rbac_tuples(capability: Mapping[str, Any], own_namespace: str) -> list[tuple[str, str, str, str | None, str]]:
    names: Sequence[str | None] = capability.get("resourceNames") or [ALL_NAMES]
    return [
        (group, resource, verb, name, namespace)
        for namespace in _namespaces(capability, own_namespace)
        for group in capability.get("apiGroups") or [""]
        for resource in capability.get("resources") or []
        for verb in capability.get("verbs") or []
        for name in names
    ]


def _match(parent: str, child: str) -> bool:
    return parent == "*" or parent == child


def _resource_match(parent: str, child: str) -> bool:
    """RBAC's resource rule: `*`, the same resource, or `*/<sub>` for a subresource <sub>."""
    return _match(parent, child) or ("/" in child and parent == "*/" + child.split("/", 1)[1])


def rbac_granted(child: tuple[str, str, str, str | None, str], parent_caps: Sequence[Mapping[str, Any]], parent_namespace: str) -> bool:
    group, resource, verb, name, namespace = child
    for capability in parent_caps:
        reach = _namespaces(capability, parent_namespace)
        if namespace not in reach and CLUSTER_WIDE not in reach:
            continue
        names = capability.get("resourceNames") or [ALL_NAMES]
        if (
            any(_match(g, group) for g in capability.get("apiGroups") or [""])
            and any(_resource_match(r, resource) for r in capability.get("resources") or [])
            and any(_match(v, verb) for v in capability.get("verbs") or [])
            and (ALL_NAMES in names or name in names)
        ):
            return True
    return False


def describe_rbac(t: tuple[str, str, str, str | None, str]) -> str:
    group, resource, verb, name, namespace = t
    what = f"{resource}.{group}" if group else resource
    named = f" named {name}" if name is not None else ""
    where = "in every namespace (clusterWide)" if namespace == CLUSTER_WIDE else f"in namespace {namespace}"
    return f'verb "{verb}" on {what}{named} {where}'


# --------------------------------------------------------------------------- vault


def _vault_regex(parent_path: str) -> re.Pattern[str]:
    parts = []
    for index, char in enumerate(parent_path):
        if char == "*" and index == len(parent_path) - 1:
            parts.append(".*")
        elif char == "+":
            parts.append("[^/]+")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts))


def vault_covers(parent_path: str, child_path: str) -> bool:
    return parent_path == child_path or bool(_vault_regex(parent_path).fullmatch(child_path))


def vault_granted(path: str, capability: str, parent_secrets: Sequence[Mapping[str, Any]]) -> bool:
    return any(
        vault_covers(secret["path"], path) and capability in (secret.get("capabilities") or ["read"])
        for secret in parent_secrets
    )


# --------------------------------------------------------------------------- aws


def _aws_action_covers(parent: str, child: str) -> bool:
    return fnmatch.fnmatchcase(child.lower(), parent.lower())


def _aws_resource_covers(parent: str, child: str) -> bool:
    return fnmatch.fnmatchcase(child, parent)


def aws_granted(action: str, resource: str, parent_aws: Mapping[str, Any] | None) -> bool:
    if not parent_aws:
        return False
    return any(_aws_action_covers(a, action) for a in parent_aws.get("actions") or []) and any(
        _aws_resource_covers(r, resource) for r in parent_aws.get("resources") or ["*"]
    )


def _aws(spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return (spec.get("cloud") or {}).get("aws")


# --------------------------------------------------------------------------- subset


def excess(child: Mapping[str, Any], child_namespace: str, parent: Mapping[str, Any], parent_namespace: str) -> list[Excess]:
    """Every atomic permission of `child` (a spec dict) that `parent` does not grant, in spec order."""
    found: list[Excess] = []
    parent_caps = parent.get("capabilities") or []
    for index, capability in enumerate(child.get("capabilities") or []):
        for t in rbac_tuples(capability, child_namespace):
            if not rbac_granted(t, parent_caps, parent_namespace):
                found.append(Excess(f"spec.capabilities[{index}]", describe_rbac(t)))
    for index, secret in enumerate(child.get("secrets") or []):
        for capability in secret.get("capabilities") or ["read"]:
            if not vault_granted(secret["path"], capability, parent.get("secrets") or []):
                found.append(Excess(f"spec.secrets[{index}]", f'Vault capability "{capability}" on path {secret["path"]}'))
    aws = _aws(child)
    if aws:
        for action in aws.get("actions") or []:
            for resource in aws.get("resources") or ["*"]:
                if not aws_granted(action, resource, _aws(parent)):
                    found.append(Excess("spec.cloud.aws", f'AWS action "{action}" on {resource}'))
    return found


def narrow(child: Mapping[str, Any], child_namespace: str, parent: Mapping[str, Any], parent_namespace: str) -> dict[str, Any]:
    """The largest expressible part of `child` that `parent` grants (sound: result ⊆ parent).

    Kubernetes: per capability, keep the verbs all of whose tuples in the own namespace are
    granted, then the extra namespaces where all kept verbs are granted; drop empty
    capabilities. Vault: keep each path's granted capabilities. AWS: keep the resources some
    parent resource covers, then the actions granted on all of them.
    """
    result = dict(child)
    parent_caps = parent.get("capabilities") or []
    capabilities = []
    for capability in child.get("capabilities") or []:
        if capability.get("clusterWide") and not all(
                rbac_granted(t, parent_caps, parent_namespace) for t in rbac_tuples(capability, child_namespace)):
            capability = {**capability, "clusterWide": False}  # what is left is the own namespace
        if capability.get("clusterWide"):
            capabilities.append(capability)
            continue
        own_only = {**capability, "namespaces": None}
        verbs = [
            verb for verb in capability.get("verbs") or []
            if all(rbac_granted(t, parent_caps, parent_namespace) for t in rbac_tuples({**own_only, "verbs": [verb]}, child_namespace))
        ]
        if not verbs:
            continue
        namespaces = [
            ns for ns in capability.get("namespaces") or []
            if all(rbac_granted(t, parent_caps, parent_namespace) for t in rbac_tuples({**own_only, "verbs": verbs, "namespaces": [ns]}, child_namespace))
        ]
        capabilities.append({**capability, "verbs": verbs, "namespaces": namespaces or None})
    result["capabilities"] = capabilities
    secrets = []
    for secret in child.get("secrets") or []:
        kept = [c for c in secret.get("capabilities") or ["read"] if vault_granted(secret["path"], c, parent.get("secrets") or [])]
        if kept:
            secrets.append({**secret, "capabilities": kept})
    result["secrets"] = secrets
    aws = _aws(child)
    cloud = dict(child.get("cloud") or {})
    if aws:
        parent_aws = _aws(parent)
        resources = [r for r in aws.get("resources") or ["*"] if parent_aws and any(_aws_resource_covers(p, r) for p in parent_aws.get("resources") or ["*"])]
        actions = [a for a in aws.get("actions") or [] if resources and all(aws_granted(a, r, parent_aws) for r in resources)]
        cloud["aws"] = {**aws, "actions": actions, "resources": resources} if actions else None
    if cloud.get("aws") is None:
        cloud.pop("aws", None)
    result["cloud"] = cloud
    return result


def empty(spec: Mapping[str, Any]) -> dict[str, Any]:
    """`spec` without any grant: what an expired identity renders (the ServiceAccount only)."""
    return {**spec, "capabilities": [], "secrets": [], "cloud": {}}


def scope_lines(spec: Mapping[str, Any], namespace: str) -> list[str]:
    """Short, human-readable scope of a spec (for the delegation chain in status)."""
    lines = []
    for capability in spec.get("capabilities") or []:
        groups = ",".join(g or "core" for g in capability.get("apiGroups") or [""])
        names = f" named {','.join(capability['resourceNames'])}" if capability.get("resourceNames") else ""
        where = "every namespace" if capability.get("clusterWide") else ",".join(_namespaces(capability, namespace))
        lines.append(f"k8s {','.join(capability.get('verbs') or [])} {','.join(capability.get('resources') or [])} ({groups}){names} in {where}")
    for secret in spec.get("secrets") or []:
        lines.append(f"vault {','.join(secret.get('capabilities') or ['read'])} {secret['path']}")
    aws = _aws(spec)
    if aws:
        lines.append(f"aws {','.join(aws.get('actions') or [])} on {','.join(aws.get('resources') or ['*'])}")
    return lines


# --------------------------------------------------------------------------- allowances


RBAC_WILDCARD_FIELDS = ("verbs", "resources", "apiGroups")


def _wildcard_path(path: str) -> bool:
    """A Vault path made only of wildcards and separators (`*`, `+/*`): everything."""
    return not path.replace("*", "").replace("+", "").replace("/", "")


def _rbac_wildcards(capability: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, value) of each `*` in a capability's verbs, resources (`pods/*` too) or API groups."""
    return [(field, value) for field in RBAC_WILDCARD_FIELDS for value in capability.get(field) or [] if "*" in value]


def not_allowed(spec: Mapping[str, Any], allowed: Mapping[str, Sequence[str]]) -> list[Excess]:
    """What `spec` asks for that needs an IntentPolicy allowance it does not have.

    ClusterScope: clusterWide capabilities. Wildcards: any `*` in a Kubernetes verb, resource
    or API group; in Vault and AWS only the everything-patterns (a path of wildcards only, the
    action `*`): `secret/data/team/*` or `s3:Get*` are explicit, reviewable declarations.
    `within_allowances` removes exactly these.
    """
    found: list[Excess] = []
    wildcards, cluster_scope = bool(allowed.get("wildcards")), bool(allowed.get("clusterScope"))
    for index, capability in enumerate(spec.get("capabilities") or []):
        where = f"spec.capabilities[{index}]"
        if capability.get("clusterWide") and not cluster_scope:
            found.append(Excess(f"{where}.clusterWide", "cluster-wide RBAC needs an IntentPolicy that allows ClusterScope"))
        if not wildcards:
            found += [Excess(f"{where}.{field}", f'the wildcard "{value}" needs an IntentPolicy that allows Wildcards')
                      for field, value in _rbac_wildcards(capability)]
    if not wildcards:
        for index, secret in enumerate(spec.get("secrets") or []):
            if _wildcard_path(secret["path"]):
                found.append(Excess(f"spec.secrets[{index}].path", f'the Vault path "{secret["path"]}" (everything) needs an IntentPolicy that allows Wildcards'))
        for index, action in enumerate((_aws(spec) or {}).get("actions") or []):
            if action == "*":
                found.append(Excess(f"spec.cloud.aws.actions[{index}]", 'the AWS action "*" needs an IntentPolicy that allows Wildcards'))
    return found


def within_allowances(spec: Mapping[str, Any], allowed: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """`spec` without what `not_allowed` reports: clusterWide capabilities become own-namespace
    ones, entries with a disallowed wildcard are dropped (a wildcard cannot be narrowed)."""
    wildcards, cluster_scope = bool(allowed.get("wildcards")), bool(allowed.get("clusterScope"))
    result = dict(spec)
    result["capabilities"] = [
        {**capability, "clusterWide": False} if capability.get("clusterWide") and not cluster_scope else capability
        for capability in spec.get("capabilities") or []
        if wildcards or not _rbac_wildcards(capability)
    ]
    if not wildcards:
        result["secrets"] = [secret for secret in spec.get("secrets") or [] if not _wildcard_path(secret["path"])]
        aws = _aws(spec)
        if aws and "*" in (aws.get("actions") or []):
            actions = [action for action in aws["actions"] if action != "*"]
            cloud = {key: value for key, value in (spec.get("cloud") or {}).items() if key != "aws"}
            result["cloud"] = {**cloud, "aws": {**aws, "actions": actions}} if actions else cloud
    return result
