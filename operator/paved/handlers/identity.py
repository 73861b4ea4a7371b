"""AgentIdentity (first slice): ServiceAccount + Role + RoleBinding through the Composition.

Thin Kopf handlers over paved.handlers._compose. The identity-specific parts are the status
fields `serviceAccount` and `grants` (what is live now, with kind/name/namespace/detail) and
the audit Events `Granted` / `Revoked` when that list changes.

The delete handler makes Kopf put the `paved.dev/cleanup` finalizer on every identity: Roles
and RoleBindings in the neighbour namespaces named by `capabilities[].namespaces` cannot
carry an ownerReference (Kubernetes forbids cross-namespace owners), so the garbage
collector cannot remove them; the finalizer does. Vault roles and IAM roles (issue 5) are
external resources that need it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from paved import GROUP, VERSION
from paved.api.common import now_rfc3339
from paved.handlers import _compose
from paved.kube import events

PLURAL = "agentidentities"
RBAC_KINDS = ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")


def _rule_summary(rule: Mapping[str, Any]) -> str:
    groups = [group or "core" for group in rule.get("apiGroups") or [""]]
    text = f"{','.join(rule.get('verbs') or [])} {','.join(rule.get('resources') or [])}"
    if groups != ["core"]:
        text += f" ({','.join(groups)})"
    if rule.get("resourceNames"):
        text += f" named {','.join(rule['resourceNames'])}"
    return text


def grant_detail(body: Mapping[str, Any]) -> str:
    """One line that says what a Role or binding grants; names and verbs, never secret data."""
    if body.get("kind") in ("Role", "ClusterRole"):
        return "; ".join(_rule_summary(rule) for rule in body.get("rules") or [])
    role = body.get("roleRef") or {}
    subjects = ", ".join(
        f"{s.get('kind')} {s.get('namespace') + '/' if s.get('namespace') else ''}{s.get('name')}" for s in body.get("subjects") or []
    )
    return f"{role.get('kind')} {role.get('name')} to {subjects}"


def grants_of(result: _compose.ComposeResult, old: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Live RBAC grants, keeping each unchanged grant's grantedAt (so idle status is stable)."""
    previous = {(g.get("kind"), g.get("name"), g.get("namespace"), g.get("detail")): g.get("grantedAt") for g in old.get("grants") or []}
    grants = []
    for state in result.states:
        body = state.resource.body
        if state.resource.provider != _compose.KUBERNETES or body.get("kind") not in RBAC_KINDS or not state.observation.exists:
            continue
        metadata = body.get("metadata") or {}
        grant = {"kind": body["kind"], "name": metadata.get("name"), "namespace": metadata.get("namespace"), "detail": grant_detail(body)}
        grant["grantedAt"] = previous.get((grant["kind"], grant["name"], grant["namespace"], grant["detail"])) or now_rfc3339()
        grants.append({key: value for key, value in grant.items() if value is not None})
    return grants


def service_account_of(result: _compose.ComposeResult) -> str | None:
    for state in result.states:
        body = state.resource.body
        if state.resource.provider == _compose.KUBERNETES and body.get("kind") == "ServiceAccount":
            return str((body.get("metadata") or {}).get("name"))
    return None


def identity_status(body: Mapping[str, Any], result: _compose.ComposeResult, old: Mapping[str, Any]) -> dict[str, Any]:
    """serviceAccount and grants for the status (the generic fields come from _compose)."""
    extras: dict[str, Any] = {"grants": grants_of(result, old)}
    account = service_account_of(result)
    if account:
        extras["serviceAccount"] = account
    return extras


def audit_grants(owner: _compose.Owner, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """An Event per grant that appeared (Granted) or disappeared (Revoked)."""
    def keyed(status: Mapping[str, Any]) -> dict[tuple[Any, ...], Mapping[str, Any]]:
        return {(g.get("kind"), g.get("namespace"), g.get("name"), g.get("detail")): g for g in status.get("grants") or []}

    before, after = keyed(old), keyed(new)
    for key in after.keys() - before.keys():
        kind, namespace, name, detail = key
        events.post_event(owner, "Granted", f"{kind} {namespace or ''}/{name}: {detail}")
    for key in before.keys() - after.keys():
        kind, namespace, name, detail = key
        events.post_event(owner, "Revoked", f"{kind} {namespace or ''}/{name}: {detail}")


IDENTITY = _compose.register_kind(_compose.IntentKind("AgentIdentity", status_extras=identity_status, audit=audit_grants))


@kopf.on.resume(GROUP, VERSION, PLURAL, retries=_compose.HANDLER_RETRIES)
@kopf.on.create(GROUP, VERSION, PLURAL, retries=_compose.HANDLER_RETRIES)
@kopf.on.update(GROUP, VERSION, PLURAL, retries=_compose.HANDLER_RETRIES)
def reconcile_identity(body: kopf.Body, patch: kopf.Patch, retry: int, composition_index: kopf.Index, **_: Any) -> None:
    """Render and apply; one status PATCH (Kopf's) and only when the status changed."""
    outcome = _compose.reconcile(IDENTITY, body, _compose.compositions_from(composition_index))
    for key, value in outcome.delta.items():
        patch.status[key] = value
    _compose.raise_for_kopf(outcome, retry)


@kopf.on.delete(GROUP, VERSION, PLURAL, retries=_compose.HANDLER_RETRIES)
def finalize_identity(body: kopf.Body, retry: int, composition_index: kopf.Index, **_: Any) -> None:
    """Remove the grants the garbage collector cannot reach, then let Kopf drop the finalizer."""
    unfinished = _compose.finalize(IDENTITY, body, _compose.compositions_from(composition_index))
    if unfinished:
        raise kopf.TemporaryError(f"still deleting: {'; '.join(unfinished)}", delay=_compose.backoff(retry))
