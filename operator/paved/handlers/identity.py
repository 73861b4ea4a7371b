"""AgentIdentity: RBAC, Vault and IAM grants through the Composition, with expiry and delegation.

Thin Kopf handlers over paved.handlers._compose. The identity-specific parts are the status
fields `serviceAccount` and `grants` (what is live now, with kind/name/namespace/detail) and
the audit Events `Granted` / `Revoked` when that list changes.

Expiry and delegation (paved.identity decides, this module acts):
- every reconcile asks `identity.decide` whether to grant (an effective spec: the user's spec,
  or its narrowing to what the parent still holds), to expire (revoke every grant, keep the
  object, Expired=True) or to refuse (a condition naming the field or the exact excess
  permission; nothing new is applied, earlier grants stay until their own expiry);
- the effective spec is what the Composition renders, also on the generic paths (children
  drift watch, Composition changes): `_IdentityKind.parse_spec` returns it, so a drift
  restore can never re-grant what expiry or narrowing removed;
- an async daemon per identity sleeps until `status.expiresAt` (ticks of at most 1 s) and
  re-reconciles when it passes, when an ancestor changes (Kopf index `identity_summaries`),
  so parents expiring or narrowing expire or narrow their descendants, and when what
  IntentPolicies allow it changes (ClusterScope, Wildcards: see paved.policy.allowances): a
  policy change is seen within a tick, a namespace relabelled within ALLOWANCE_RECHECK_SECONDS
  plus the namespace cache's TTL; a withdrawn allowance narrows the grant.

The delete handler makes Kopf put the `paved.dev/cleanup` finalizer on every identity: Roles
and RoleBindings in the neighbour namespaces named by `capabilities[].namespaces` cannot
carry an ownerReference (Kubernetes forbids cross-namespace owners), so the garbage
collector cannot remove them; the finalizer does. Vault roles and IAM roles (issue 5) are
external resources that need it too.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import random
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import kopf

from paved import GROUP, VERSION
from paved.api.common import READY, Model, now_rfc3339, parse_rfc3339
from paved.api.kinds import SpecError, kind_info
from paved.errors import describe
from paved import identity as core
from paved.identity import chain as chains, grants, scope as scopes
from paved.kube import apply as kube
from paved.kube import status as kube_status
from paved.kube.client import ApiError
from paved.providers import base as providers
import paved.providers.vault.admin  # noqa: F401 - registers vault-policy, vault-k8s-role
import paved.providers.aws.iam  # noqa: F401 - registers aws-iam-role
from paved.handlers import _compose
from paved.kube import events

PLURAL = "agentidentities"
log = logging.getLogger(__name__)
EXPIRED, ACCEPTED = "Expired", "Accepted"
REVOKE = "Revoke"
MAX_DEPTH_ENV, NAMESPACES_ENV = "PAVED_DELEGATION_MAX_DEPTH", "PAVED_DELEGATION_NAMESPACES"
TICK_SECONDS = 1.0
_WORKERS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="paved-identity")
ALLOWANCE_RECHECK_SECONDS = 10.0


def grants_of(result: _compose.ComposeResult, old: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Live grants (RBAC, Vault, IAM), keeping each unchanged grant's grantedAt (so idle status is stable)."""
    entries = [
        grants.grant_entry(state.resource.provider, state.resource.body, state.observation.external_id)
        for state in result.states
        if state.observation.exists
    ]
    return grants.stamped([entry for entry in entries if entry], old.get("grants") or [], now_rfc3339())


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
    granted, revoked = grants.changes(old.get("grants") or [], new.get("grants") or [])
    for message in granted:
        audit(owner, "Granted", message, new)
    for message in revoked:
        audit(owner, "Revoked", message, new)


_AUDIT_CONTEXT: dict[str, dict[str, Any]] = {}  # uid -> {owner, purpose} of the spec being reconciled


def audit(owner: _compose.Owner, reason: str, message: str, status: Mapping[str, Any] | None = None, type: str = "Normal") -> None:
    """One audit record: a Kubernetes Event on the intent and one structured (JSON) log line."""
    events.post_event(owner, reason, message, type)  # type: ignore[arg-type]
    context = _AUDIT_CONTEXT.get(owner.uid, {})
    chain = [f"{hop.get('issuer')}->{hop.get('subject')}" for hop in (status or {}).get("delegationChain") or []]
    log.info("audit %s", json.dumps({
        "event": reason, "identity": f"{owner.namespace}/{owner.name}", "uid": owner.uid, "message": message,
        "owner": context.get("owner"), "purpose": context.get("purpose"), "chain": chain,
    }, sort_keys=True))


# --------------------------------------------------------------------------- effective spec

_EFFECTIVE: dict[str, dict[str, Any]] = {}  # uid -> the spec the Composition renders (granted/narrowed/empty)
_EXPIRED: dict[str, tuple[str, str]] = {}  # uid -> (reason, message) of identities expired in this process


def _condition(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any]:
    return next((c for c in (status or {}).get("conditions") or [] if c.get("type") == type_), {})


def _is_true(status: Mapping[str, Any] | None, type_: str) -> bool:
    return _condition(status, type_).get("status") == "True"


class _IdentityKind(_compose.IntentKind):
    """AgentIdentity for the composed reconcile: renders the *effective* spec, not the raw one."""

    def parse_spec(self, body: Mapping[str, Any]) -> Model:
        raw = super().parse_spec(body)
        uid = (body.get("metadata") or {}).get("uid", "")
        effective = _EFFECTIVE.get(uid)
        if effective is None:
            status = body.get("status") or {}
            # Not decided in this process yet (a drift event before the resume handler ran):
            # never render more than is known to be granted.
            if _is_true(status, EXPIRED) or (raw.dump().get("delegatedFrom") and not _is_true(status, ACCEPTED)):
                effective = scopes.empty(raw.dump())
            else:
                return raw
        return kind_info(self.kind).spec.model_validate(effective)


def keep_expired(outcome: _compose.Outcome, body: Mapping[str, Any]) -> _compose.Outcome:
    """On the generic paths (children watch, Composition change) an expired identity stays
    Ready=False/Expired: its empty effective spec rendering fine is not readiness."""
    old = body.get("status") or {}
    uid = (body.get("metadata") or {}).get("uid", "")
    decided_here = uid in _EFFECTIVE  # this process decided: its knowledge wins over a stale status
    if not (uid in _EXPIRED or (not decided_here and _is_true(old, EXPIRED))):
        return outcome
    expired = _condition(old, EXPIRED)
    reason, message = _EXPIRED.get(uid) or (expired.get("reason", "Expired"), expired.get("message", ""))
    status = kube_status.with_conditions(outcome.status, [(READY, False, reason, message), (EXPIRED, True, reason, message)],
                                         (body.get("metadata") or {}).get("generation"))
    status["grants"] = []
    return _compose.Outcome(outcome.result, status, kube_status.status_delta(old, status))


IDENTITY = _compose.register_kind(_IdentityKind("AgentIdentity", status_extras=identity_status, audit=audit_grants, refine=keep_expired))
RAW_IDENTITY = _compose.IntentKind("AgentIdentity")  # the full declared spec: deletion removes everything it could have made


# --------------------------------------------------------------------------- settings, index


def max_depth() -> int:
    return int(os.environ.get(MAX_DEPTH_ENV) or chains.DEFAULT_MAX_DEPTH)


def namespace_allowed(child_namespace: str, parent_namespace: str) -> bool:
    """Cross-namespace delegation: PAVED_DELEGATION_NAMESPACES lists the namespaces whose
    identities may delegate to other namespaces (`*`: any). Same-namespace is always allowed."""
    allowed = {ns.strip() for ns in (os.environ.get(NAMESPACES_ENV) or "").split(",") if ns.strip()}
    return child_namespace == parent_namespace or "*" in allowed or parent_namespace in allowed


def _created(metadata: Mapping[str, Any]) -> datetime:
    text = metadata.get("creationTimestamp")
    return parse_rfc3339(text) or datetime.now(timezone.utc)


def summary(body: Mapping[str, Any]) -> core.Ancestor:
    metadata = body.get("metadata") or {}
    try:
        spec = kind_info("AgentIdentity").parse_spec(body.get("spec")).dump()
    except SpecError:
        spec = {}
    return core.Ancestor(metadata.get("namespace", ""), metadata.get("name", ""), spec, _created(metadata),
                         expired=_is_true(body.get("status"), EXPIRED))


@kopf.index(GROUP, VERSION, PLURAL)
def identity_summaries(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[tuple[str, str], core.Ancestor]:
    """Every identity's spec and expiry by (namespace, name): parents are resolved from here."""
    return {(namespace, name): summary(body)}


def _lookup(index: Mapping[Any, Any]) -> Any:
    def lookup(namespace: str, name: str) -> core.Ancestor | None:
        store = index.get((namespace, name)) if index is not None else None
        return next(iter(store), None) if store is not None else None

    return lookup


def ancestry_digest(body: Mapping[str, Any], index: Mapping[Any, Any]) -> str:
    return core.ancestry_digest(summary(body), _lookup(index), max_depth())


# --------------------------------------------------------------------------- the reconcile


def _accepted(body: Mapping[str, Any]) -> bool:
    condition = _condition(body.get("status"), ACCEPTED)
    return condition.get("status") == "True" and condition.get("observedGeneration") == (body.get("metadata") or {}).get("generation")


def reconcile_now(body: Mapping[str, Any], index: Mapping[Any, Any], compositions: list[Mapping[str, Any]], *,
                  now: datetime | None = None) -> tuple[dict[str, Any], _compose.Outcome | None]:
    """Decide (grant / expire / refuse), act; returns the status delta (not written here) and the
    composed outcome when something was applied (for Kopf's retry mapping)."""
    now = now or datetime.now(timezone.utc)
    owner = _compose.owner_of(body)
    old = dict(body.get("status") or {})
    try:
        raw = kind_info("AgentIdentity").parse_spec(body.get("spec")).dump()
    except SpecError:
        outcome = _compose.reconcile(IDENTITY, body, compositions)  # InvalidSpec, nothing applied
        return outcome.delta, outcome
    _AUDIT_CONTEXT[owner.uid] = {"owner": raw.get("owner"), "purpose": raw.get("purpose")}
    subject = summary(body)
    decision = core.decide(subject, accepted=_accepted(body), now=now, lookup=_lookup(index),
                           namespace_allowed=namespace_allowed, max_depth=max_depth(),
                           previous_chain=old.get("delegationChain") or [],
                           allowed=_compose.allowances("AgentIdentity", owner.namespace))
    generation = owner.generation
    if decision.action == chains.REFUSE:
        status = kube_status.with_conditions(old, [
            (READY, False, decision.reason, f"{decision.field}: {decision.message}"),
            (ACCEPTED, False, decision.reason, f"{decision.field}: {decision.message}"),
        ], generation)
        delta = kube_status.status_delta(old, status)
        if delta:
            audit(owner, decision.reason, f"refused, nothing new granted: {decision.field}: {decision.message}", old, "Warning")
        return delta, None
    if decision.action == chains.EXPIRE:
        return _expire(body, compositions, decision, old), None
    # grant
    _EFFECTIVE[owner.uid] = decision.spec or {}
    _EXPIRED.pop(owner.uid, None)
    if _is_true(old, EXPIRED):  # restored after an extension: apply everything, do not observe first
        body = {**body, "status": {**old, "renderHash": None}}
    outcome = _compose.reconcile(IDENTITY, body, compositions)
    status = dict(outcome.status)
    status["expiresAt"] = now_rfc3339(decision.expires_at) if decision.expires_at else None
    status["delegationChain"] = decision.chain
    conditions: list[kube_status.ConditionSpec] = [(EXPIRED, False, "NotExpired", decision.message)]
    error = outcome.result.error
    if error is None or error.retryable:
        conditions.append((ACCEPTED, True, decision.reason, decision.message))
    status = kube_status.with_conditions(status, conditions, generation)
    status = {key: value for key, value in status.items() if value is not None or key in old}
    delta = kube_status.status_delta(old, status)
    if decision.narrowed and _condition(old, ACCEPTED).get("reason") != "Narrowed":
        audit(owner, "Narrowed", decision.message, status, "Warning")
    if _is_true(old, EXPIRED):
        audit(owner, "Restored", f"expiry extended: {decision.message}", status)
    return delta, outcome


def _expire(body: Mapping[str, Any], compositions: list[Mapping[str, Any]], decision: chains.Decision, old: dict[str, Any]) -> dict[str, Any]:
    """Revoke every grant (RBAC deleted, Vault role+policy deleted and tokens revoked, IAM trust denied)."""
    owner = _compose.owner_of(body)
    raw = kind_info("AgentIdentity").parse_spec(body.get("spec")).dump()
    _EFFECTIVE[owner.uid] = scopes.empty(raw)
    _EXPIRED[owner.uid] = (decision.reason, decision.message)
    unfinished: list[str] = []
    with _compose.owner_lock(owner.uid):
        rendered, _policy = _compose.render_for_deletion(RAW_IDENTITY, body, compositions)
        for resource in reversed(rendered):
            try:
                if resource.provider == _compose.KUBERNETES:
                    if resource.body.get("kind") in grants.RBAC_KINDS:
                        metadata = resource.body.get("metadata") or {}
                        kube.delete(resource.body["apiVersion"], resource.body["kind"], metadata["name"], metadata.get("namespace"))
                    continue
                outcome = providers.get(resource.provider).delete(resource, owner, REVOKE)
                if not outcome.done:
                    unfinished.append(f"{resource.name}: {outcome.message}")
                else:
                    log.info("%s/%s: %s", owner.namespace, owner.name, outcome.message)
            except Exception as error:  # noqa: BLE001 - report and retry on the next tick
                unfinished.append(f"{resource.name}: {describe(error)}")
    message = decision.message if not unfinished else f"{decision.message}; still revoking: {'; '.join(unfinished)}"
    status = dict(old)
    if not unfinished:
        status["grants"] = []
        status["renderHash"] = None
        status["resources"] = [r for r in old.get("resources") or [] if r.get("provider") == _compose.KUBERNETES
                               and str(r.get("externalId", "")).startswith("ServiceAccount/")]
    if decision.expires_at:
        status["expiresAt"] = now_rfc3339(decision.expires_at)
    status = kube_status.with_conditions(status, [
        (READY, False, decision.reason, message),
        (EXPIRED, True if not unfinished else False, decision.reason, message),
    ], owner.generation)
    delta = kube_status.status_delta(old, status)
    if delta:
        audit_grants(owner, old, status)
        audit(owner, decision.reason, f"every grant revoked: {message}" if not unfinished else message, status,
              "Normal" if not unfinished else "Warning")
    if unfinished:
        raise providers.ProviderError(message, retryable=True)
    return delta


# --------------------------------------------------------------------------- handlers


@kopf.on.resume(GROUP, VERSION, PLURAL, retries=_compose.HANDLER_RETRIES)
@kopf.on.create(GROUP, VERSION, PLURAL, retries=_compose.HANDLER_RETRIES)
@kopf.on.update(GROUP, VERSION, PLURAL, retries=_compose.HANDLER_RETRIES)
def reconcile_identity(body: kopf.Body, patch: kopf.Patch, retry: int, composition_index: kopf.Index,
                       identity_summaries: kopf.Index, **_: Any) -> None:
    """Decide, render the effective spec and apply; one status PATCH (Kopf's), only on change."""
    try:
        delta, outcome = reconcile_now(body, identity_summaries, _compose.compositions_from(composition_index))
    except providers.ProviderError as error:
        raise kopf.TemporaryError(str(error), delay=_compose.backoff(retry)) from None
    for key, value in delta.items():
        patch.status[key] = value
    if outcome is not None:
        _compose.raise_for_kopf(outcome, retry)


@kopf.on.delete(GROUP, VERSION, PLURAL, retries=_compose.HANDLER_RETRIES)
def finalize_identity(body: kopf.Body, retry: int, composition_index: kopf.Index, **_: Any) -> None:
    """Remove the grants the garbage collector cannot reach, then let Kopf drop the finalizer."""
    try:
        unfinished = _compose.finalize(RAW_IDENTITY, body, _compose.compositions_from(composition_index))
    except providers.ProviderError as error:  # Vault/IAM unreachable or misconfigured: keep the finalizer, retry
        raise kopf.TemporaryError(f"still deleting: {error}", delay=_compose.backoff(retry)) from None
    uid = body.get("metadata", {}).get("uid", "")
    for memory in (_EFFECTIVE, _EXPIRED, _AUDIT_CONTEXT):
        memory.pop(uid, None)
    if unfinished:
        raise kopf.TemporaryError(f"still deleting: {'; '.join(unfinished)}", delay=_compose.backoff(retry))


def _deadline(status: Mapping[str, Any]) -> datetime | None:
    text = (status or {}).get("expiresAt")
    return parse_rfc3339(text)


def _resync(body: Mapping[str, Any], index: Mapping[Any, Any], compositions: list[Mapping[str, Any]]) -> None:
    """Reconcile outside a Kopf handler cycle and write the status delta (daemon path)."""
    try:
        _compose.reconcile_and_write(IDENTITY, body, lambda fresh: reconcile_now(fresh, index, compositions)[0])
    except (providers.ProviderError, ApiError) as error:  # the next tick or event retries
        log.warning("%s/%s: %s (retrying)", body["metadata"]["namespace"], body["metadata"]["name"], error)


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5.0)
async def expiry_and_ancestry(body: kopf.Body, stopped: Any, composition_index: kopf.Index,
                              identity_summaries: kopf.Index, **_: Any) -> None:
    """Sleep until status.expiresAt (ticks <= 1 s); revoke at expiry; follow ancestors' changes.

    Async so that a thousand identities cost a thousand sleeping coroutines, not threads; a
    tick only reads the live body. The blocking work (revocation through providers, status
    writes, allowance look-ups) runs on `_WORKERS`, sized for I/O: expiries come in bursts
    (hundreds within a minute) and each waits on the API server, Vault and AWS.
    """
    namespace = (body.get("metadata") or {}).get("namespace")

    def digest() -> str:  # only delegated identities follow ancestors (a spec change re-runs the handler)
        return ancestry_digest(body, identity_summaries) if (body.get("spec") or {}).get("delegatedFrom") else ""

    async def resync() -> None:  # on a snapshot: Kopf keeps updating `body` while the worker runs
        snapshot, compositions = copy.deepcopy(dict(body)), _compose.compositions_from(composition_index)
        await asyncio.get_running_loop().run_in_executor(_WORKERS, _resync, snapshot, identity_summaries, compositions)

    async def allowances() -> Mapping[str, list[str]]:
        return await asyncio.get_running_loop().run_in_executor(_WORKERS, _compose.allowances, "AgentIdentity", namespace)

    seen_digest = digest()
    # Re-checks are spread over the interval so that a thousand daemons do not check together.
    seen_epoch, recheck_at = _compose.allowance_epoch(), time.monotonic() + random.uniform(0, ALLOWANCE_RECHECK_SECONDS)
    seen_allowed = await allowances()
    handled: datetime | None = None
    while not stopped:
        now = datetime.now(timezone.utc)
        status = body.get("status") or {}
        deadline = _deadline(status)
        if deadline is not None and now >= deadline and not _is_true(status, EXPIRED) and handled != deadline:
            handled = deadline
            await resync()
        current, allowed = digest(), seen_allowed
        # Some policy's allowances changed (at once), or the namespace's labels may have
        # (they select policies; read through a short cache, so re-checked now and then).
        if _compose.allowance_epoch() != seen_epoch or time.monotonic() >= recheck_at:
            seen_epoch, recheck_at = _compose.allowance_epoch(), time.monotonic() + ALLOWANCE_RECHECK_SECONDS
            allowed = await allowances()
        if current != seen_digest or allowed != seen_allowed:
            seen_digest, seen_allowed = current, allowed
            await resync()
        if deadline is not None and handled == deadline and not _is_true(status, EXPIRED) and now - deadline > timedelta(seconds=10):
            handled = None  # revocation did not finish: try again
        remaining = (deadline - now).total_seconds() if deadline and deadline > now else TICK_SECONDS
        await asyncio.sleep(max(0.01, min(TICK_SECONDS, remaining)))
