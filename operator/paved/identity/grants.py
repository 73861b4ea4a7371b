"""An identity's grants in words: the `status.grants` entries and the audit trail of their changes.

Pure: rendered bodies in, plain dicts and strings out. Entries name kinds, objects, verbs,
Vault paths and AWS actions, never secret values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

KUBERNETES = "kubernetes"
EXTERNAL_GRANT_KINDS = {"vault-policy": "VaultPolicy", "vault-k8s-role": "VaultRole", "aws-iam-role": "IAMRole"}
RBAC_KINDS = ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")


def _rule_summary(rule: Mapping[str, Any]) -> str:
    groups = [group or "core" for group in rule.get("apiGroups") or [""]]
    text = f"{','.join(rule.get('verbs') or [])} {','.join(rule.get('resources') or [])}"
    if groups != ["core"]:
        text += f" ({','.join(groups)})"
    if rule.get("resourceNames"):
        text += f" named {','.join(rule['resourceNames'])}"
    return text


def rbac_detail(body: Mapping[str, Any]) -> str:
    """One line that says what a Role or binding grants."""
    if body.get("kind") in ("Role", "ClusterRole"):
        return "; ".join(_rule_summary(rule) for rule in body.get("rules") or [])
    role = body.get("roleRef") or {}
    subjects = ", ".join(
        f"{s.get('kind')} {s.get('namespace') + '/' if s.get('namespace') else ''}{s.get('name')}" for s in body.get("subjects") or []
    )
    return f"{role.get('kind')} {role.get('name')} to {subjects}"


def external_detail(provider: str, body: Mapping[str, Any]) -> str:
    """Vault/IAM grant summary: paths, bindings, actions."""
    if provider == "vault-policy":
        return " ".join(line.strip() for line in str(body.get("policy", "")).splitlines() if line.strip())[:300]
    if provider == "vault-k8s-role":
        return (f"login for {','.join(body.get('bound_service_account_namespaces') or [])}/"
                f"{','.join(body.get('bound_service_account_names') or [])}, ttl {body.get('token_ttl')}, audience {body.get('audience')}")
    if provider == "aws-iam-role":
        for policy in body.get("InlinePolicies") or []:
            document = json.loads(policy["PolicyDocument"])
            statement = (document.get("Statement") or [{}])[0]
            return f"{','.join(statement.get('Action') or [])} on {','.join(statement.get('Resource') or [])}"
    return ""


def grant_entry(provider: str, body: Mapping[str, Any], external_id: str) -> dict[str, Any] | None:
    """The grant one applied resource makes (kind, name, namespace, detail), or None if it grants nothing."""
    if provider in EXTERNAL_GRANT_KINDS:
        return {"kind": EXTERNAL_GRANT_KINDS[provider], "name": external_id, "detail": external_detail(provider, body)}
    if provider == KUBERNETES and body.get("kind") in RBAC_KINDS:
        metadata = body.get("metadata") or {}
        return {"kind": body["kind"], "name": metadata.get("name"), "namespace": metadata.get("namespace"), "detail": rbac_detail(body)}
    return None


def stamped(entries: Sequence[Mapping[str, Any]], old: Sequence[Mapping[str, Any]], now: str) -> list[dict[str, Any]]:
    """`entries` with grantedAt: an unchanged grant keeps its old one (so an idle status is stable)."""
    previous = {(g.get("kind"), g.get("name"), g.get("namespace"), g.get("detail")): g.get("grantedAt") for g in old}
    grants = []
    for entry in entries:
        granted_at = previous.get((entry["kind"], entry["name"], entry.get("namespace"), entry["detail"])) or now
        grants.append({key: value for key, value in {**entry, "grantedAt": granted_at}.items() if value is not None})
    return grants


def changes(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(granted, revoked): one audit message per grant that appeared or disappeared, in a stable order."""
    def keyed(grants: Sequence[Mapping[str, Any]]) -> set[tuple[Any, ...]]:
        return {(g.get("kind"), g.get("namespace"), g.get("name"), g.get("detail")) for g in grants}

    def message(key: tuple[Any, ...]) -> str:
        kind, namespace, name, detail = key
        return f"{kind} {namespace or ''}/{name}: {detail}"

    before, after = keyed(old), keyed(new)
    return [message(k) for k in sorted(after - before, key=str)], [message(k) for k in sorted(before - after, key=str)]
