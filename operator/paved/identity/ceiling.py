"""The platform's ceiling: the most any AgentIdentity may ever be granted in Kubernetes RBAC.

The ceiling is a ClusterRole (`paved-agent-ceiling`, deploy/rbac.yaml) that aggregates, by the
label `paved.dev/aggregate-to-agent-ceiling: "true"`, every ClusterRole the platform labels so:
the platform extends it without editing Paved's files. The operator is bound to it and holds
neither `escalate` nor `bind`, so the API server itself refuses any Role or binding beyond it,
whatever Paved's code does. This module decides the same thing up front, from the ceiling's
rules, so that an identity asking for more is refused before anything is applied (no Role, no
RoleBinding, no Vault or IAM grant), and it reads the API server's own refusal (the backstop)
back into the same terms.

Rule semantics are Kubernetes' (paved.identity.scope.rbac_granted): each declared permission
is broken into atomic (apiGroup, resource, verb, resourceName) tuples, and a ceiling rule
covers one when its verbs, apiGroups and resources hold it or `*` (resources also `*/<sub>`
for a subresource) and it has no resourceNames or names this one. Rules with only
nonResourceURLs cover no capability.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from paved.identity import scope as scopes

CLUSTER_ROLE = "paved-agent-ceiling"
AGGREGATION_LABEL = "paved.dev/aggregate-to-agent-ceiling"
REASON_OUTSIDE_CEILING = "OutsideCeiling"
# The API server's words when a Role or binding holds more than its writer
# (ConfirmNoEscalation in k8s.io/kubernetes/pkg/registry/rbac/validation).
ESCALATION_REFUSAL = "is attempting to grant RBAC permissions not currently held:"


@dataclass(frozen=True)
class Ceiling:
    """The ceiling ClusterRole as the operator read it (`found` False: it does not exist)."""

    rules: tuple[Mapping[str, Any], ...] = ()
    name: str = CLUSTER_ROLE
    found: bool = True
    version: str = field(default="", compare=False)  # resourceVersion: changes when the rules may have

    @property
    def described(self) -> str:
        return f"ClusterRole {self.name}" + ("" if self.found else ", which does not exist")


def _capabilities(rules: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """RBAC rules as cluster-wide capabilities (the shape paved.identity.scope compares)."""
    return [
        {"apiGroups": list(rule["apiGroups"]), "resources": list(rule["resources"]), "verbs": list(rule.get("verbs") or []),
         "resourceNames": list(rule.get("resourceNames") or []) or None, "clusterWide": True}
        for rule in rules
        if rule.get("apiGroups") and rule.get("resources")  # nonResourceURLs-only rules cover no capability
    ]


def beyond(spec: Mapping[str, Any], namespace: str, ceiling: Ceiling) -> list[scopes.Excess]:
    """Every atomic Kubernetes permission of `spec` the ceiling does not hold, in spec order."""
    return scopes.excess({"capabilities": spec.get("capabilities") or []}, namespace,
                         {"capabilities": _capabilities(ceiling.rules)}, namespace)


def within(spec: Mapping[str, Any], namespace: str, ceiling: Ceiling) -> dict[str, Any]:
    """`spec` with its capabilities narrowed to the ceiling (secrets and cloud untouched)."""
    capabilities = scopes.narrow({"capabilities": spec.get("capabilities") or []}, namespace,
                                 {"capabilities": _capabilities(ceiling.rules)}, namespace)["capabilities"]
    return {**spec, "capabilities": capabilities}


def outside_message(excess: Sequence[scopes.Excess], ceiling: Ceiling, limit: int = 5) -> str:
    """'<permission> is outside the platform's ceiling (ClusterRole x)[; also outside: <field>: ...]' without the first field."""
    first = scopes.Excess(excess[0].field, f"{excess[0].permission} is outside the platform's ceiling ({ceiling.described})")
    return scopes.refusal([first, *excess[1:]], limit, others="also outside: ")


# --------------------------------------------------------------------------- the API server's refusal

_RULE = re.compile(r"\{((?:[A-Za-z]+:\[[^\]]*\](?:, )?)+)\}")
_FIELD = re.compile(r"([A-Za-z]+):\[([^\]]*)\]")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FIELDS = {"APIGroups": "apiGroups", "Resources": "resources", "ResourceNames": "resourceNames",
           "Verbs": "verbs", "NonResourceURLs": "nonResourceURLs"}


def refused_rules(message: str) -> list[dict[str, list[str]]] | None:
    """The rules the API server said the writer does not hold, or None if `message` is no
    escalation refusal. Parses Kubernetes' compact rule strings, e.g.
    `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get" "list"]}`."""
    _, found, tail = message.partition(ESCALATION_REFUSAL)
    if not found:
        return None
    tail = tail.split("; resolution errors:", 1)[0]
    rules = []
    for match in _RULE.finditer(tail):
        rule = {_FIELDS[key]: _QUOTED.findall(values) for key, values in _FIELD.findall(match.group(1)) if key in _FIELDS}
        rules.append(rule)
    return rules


def refused_capabilities(spec: Mapping[str, Any], namespace: str, rules: Sequence[Mapping[str, Any]]) -> list[scopes.Excess]:
    """The atomic permissions of `spec` that fall under the refused `rules` (what to name in
    the condition); every capability when the refusal named nothing this spec declares."""
    refused = {"capabilities": _capabilities(rules)}
    found = []
    for index, capability in enumerate(spec.get("capabilities") or []):
        for atom in scopes.rbac_tuples(capability, namespace):
            if scopes.rbac_granted(atom, refused["capabilities"], namespace):
                found.append(scopes.Excess(f"spec.capabilities[{index}]", scopes.describe_rbac(atom)))
    if not found:
        found = [scopes.Excess(f"spec.capabilities[{index}]", scopes.describe_rbac(atom))
                 for index, capability in enumerate(spec.get("capabilities") or [])
                 for atom in scopes.rbac_tuples(capability, namespace)][:1]
    return found
