"""ClusterSecretStore allowances: which namespace may read which key prefixes.

A cluster-wide store is never a cluster-wide read grant. A ref in namespace N may use a
ClusterSecretStore only if some `access[]` entry selects N (by name or by namespace labels),
and every remote key it names must start with one of that entry's `keyPrefixes`, with
`{namespace}` replaced by N. A ref with even one key outside its allowance is refused as a
whole, before the store is asked anything. An empty `access` list allows nobody.

Keys with `.`/`..` segments are refused earlier (paved.secretsync.model.key_problem), so a
prefix cannot be escaped with `teams/a/../b`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from paved.api.secrets import NamespaceAccess
from paved.secretsync.model import RefSpec


@dataclass(frozen=True)
class AccessDecision:
    allowed: bool
    field: str = ""  # the spec path refused, e.g. spec.data[1].remoteRef.key
    message: str = ""


def selects(rule: NamespaceAccess, namespace: str, labels: Mapping[str, str] | None) -> bool:
    """Whether `rule` grants `namespace` (labels None: the namespace could not be read)."""
    if rule.namespaces is not None:
        return namespace in rule.namespaces
    if rule.namespaceSelector is not None:
        if labels is None:
            return False
        return all(labels.get(key) == value for key, value in rule.namespaceSelector.matchLabels.items())
    return False


def prefixes_for(access: Sequence[NamespaceAccess], namespace: str, labels: Mapping[str, str] | None) -> list[str]:
    """Every key prefix `namespace` may read through the store (empty: none)."""
    prefixes: list[str] = []
    for rule in access:
        if selects(rule, namespace, labels):
            prefixes.extend(prefix.replace("{namespace}", namespace) for prefix in rule.keyPrefixes)
    return prefixes


def check(store_name: str, access: Sequence[NamespaceAccess], ref: RefSpec, labels: Mapping[str, str] | None) -> AccessDecision:
    """Whether `ref` may read all of its keys through ClusterSecretStore `store_name`."""
    prefixes = prefixes_for(access, ref.namespace, labels)
    if not prefixes:
        return AccessDecision(
            False,
            "spec.storeRef.name",
            f"ClusterSecretStore {store_name} does not allow namespace {ref.namespace} "
            "(no spec.access entry selects it); ask the platform team for an allowance",
        )
    for remote in ref.remote_keys:
        if not any(remote.key.startswith(prefix) for prefix in prefixes):
            field = ref.fields_of(remote)[0]
            allowed = ", ".join(sorted(set(prefixes)))
            return AccessDecision(
                False,
                field,
                f"key {remote.key!r} is outside what ClusterSecretStore {store_name} allows namespace "
                f"{ref.namespace} to read ({allowed}); nothing was read",
            )
    return AccessDecision(True)
