"""Allowances: what IntentPolicies allow the intents they match, beyond the compositions' defaults.

Compositions refuse some requests unless the platform allows them for the intent (the
default AgentIdentity composition: cluster-wide RBAC and wildcards). The platform says so with
an IntentPolicy's `allow`, matched like its rules (kinds and namespaceSelector). Templates
and CEL rules both see the result as `allowed`: a name per allowance, each the sorted list of
policies that allow it (empty: not allowed), so a refusal or an audit record can say who
allowed what.

Pure: compiled policies and namespace labels in, a plain dict out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from paved.api.platform import ALLOWED_KEYS, nothing_allowed
from paved.policy.compile import CompiledPolicy


def allowances_for(policies: Iterable[CompiledPolicy], kind: str, namespace_labels: Mapping[str, str] | None) -> dict[str, list[str]]:
    """{"clusterScope": [policy, ...], "wildcards": [...]} for an intent of `kind` in a namespace
    with `namespace_labels` (None: unknown namespace, so selector policies do not apply)."""
    allowed = nothing_allowed()
    for policy in policies:
        if policy.allow and policy.applies_to(kind, namespace_labels):
            for allowance in policy.allow:
                allowed[ALLOWED_KEYS[allowance]].append(policy.name)
    return {name: sorted(policies) for name, policies in allowed.items()}


def allowance_signature(spec: Mapping[str, Any] | None) -> tuple[str, list[str]] | None:
    """What an IntentPolicy spec allows and to whom (None: it allows nothing): when this changes,
    intents that follow their allowances must look again."""
    if not spec or not spec.get("allow"):
        return None
    return repr(spec.get("match")), sorted(spec["allow"])
