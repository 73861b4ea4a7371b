"""The AgentIdentity engine: RBAC, Vault and IAM grants through the Composition, with expiry
and delegation (paved.identity decides, this engine acts).

The identity-specific parts of the composed reconcile are the status fields `serviceAccount`
and `grants` (what is live now, with kind/name/namespace/detail) and the audit Events
`Granted` / `Revoked` when that list changes.

- every reconcile asks `identity.decide` whether to grant (an effective spec: the user's spec,
  or its narrowing to what the parent still holds), to expire (revoke every grant, keep the
  object, Expired=True) or to refuse (a condition naming the field or the exact excess
  permission; nothing new is applied, earlier grants stay until their own expiry);
- the effective spec is what the Composition renders, also on the generic paths (children
  drift watch, Composition changes): the engine's intent kind parses to it, so a drift
  restore can never re-grant what expiry or narrowing removed.

What the engine remembers per identity (the effective spec, an expiry decided in this
process, who owns it and why) lives only here, for as long as the process leads.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from paved import identity as core
from paved.api.common import READY, SYNCED, Model, get_condition, now_rfc3339, parse_rfc3339
from paved.api.kinds import SpecError, kind_info
from paved.errors import describe
from paved.engines.compose import (
    KUBERNETES,
    ComposeEngine,
    ComposeResult,
    IntentKind,
    Outcome,
    owner_of,
    render_for_deletion,
)
from paved.identity import ceiling as ceilings, chain as chains, grants, scope as scopes
from paved.kube import apply as kube
from paved.kube.ceiling import CeilingReader
from paved.kube import status as kube_status
from paved.kube.client import ApiError
from paved.providers import base as providers
from paved.providers.base import Owner

log = logging.getLogger(__name__)

KIND = "AgentIdentity"
EXPIRED, ACCEPTED = "Expired", "Accepted"
REVOKE = "Revoke"
MAX_DEPTH_ENV, NAMESPACES_ENV = "PAVED_DELEGATION_MAX_DEPTH", "PAVED_DELEGATION_NAMESPACES"
WORKERS = 16  # revocations come in bursts (hundreds within a minute), each waiting on the API server, Vault and AWS

Lookup = Callable[[str, str], "core.Ancestor | None"]


# --------------------------------------------------------------------------- status (pure)


def grants_of(result: ComposeResult, old: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Live grants (RBAC, Vault, IAM), keeping each unchanged grant's grantedAt (so idle status is stable)."""
    entries = [
        grants.grant_entry(state.resource.provider, state.resource.body, state.observation.external_id)
        for state in result.states
        if state.observation.exists
    ]
    return grants.stamped([entry for entry in entries if entry], old.get("grants") or [], now_rfc3339())


def service_account_of(result: ComposeResult) -> str | None:
    for state in result.states:
        body = state.resource.body
        if state.resource.provider == KUBERNETES and body.get("kind") == "ServiceAccount":
            return str((body.get("metadata") or {}).get("name"))
    return None


def identity_status(body: Mapping[str, Any], result: ComposeResult, old: Mapping[str, Any]) -> dict[str, Any]:
    """serviceAccount and grants for the status (the generic fields come from the compose engine)."""
    extras: dict[str, Any] = {"grants": grants_of(result, old)}
    account = service_account_of(result)
    if account:
        extras["serviceAccount"] = account
    return extras


def condition(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any]:
    return get_condition((status or {}).get("conditions"), type_) or {}


def is_true(status: Mapping[str, Any] | None, type_: str) -> bool:
    return condition(status, type_).get("status") == "True"


def deadline_of(status: Mapping[str, Any]) -> datetime | None:
    return parse_rfc3339((status or {}).get("expiresAt"))


# --------------------------------------------------------------------------- delegation settings


def max_depth() -> int:
    return int(os.environ.get(MAX_DEPTH_ENV) or chains.DEFAULT_MAX_DEPTH)


def namespace_allowed(child_namespace: str, parent_namespace: str) -> bool:
    """Cross-namespace delegation: PAVED_DELEGATION_NAMESPACES lists the namespaces whose
    identities may delegate to other namespaces (`*`: any). Same-namespace is always allowed."""
    allowed = {ns.strip() for ns in (os.environ.get(NAMESPACES_ENV) or "").split(",") if ns.strip()}
    return child_namespace == parent_namespace or "*" in allowed or parent_namespace in allowed


def summary(body: Mapping[str, Any]) -> core.Ancestor:
    """What descendants need to know of an identity (the Kopf index `identity_summaries` holds these)."""
    metadata = body.get("metadata") or {}
    try:
        spec = kind_info(KIND).parse_spec(body.get("spec")).dump()
    except SpecError:
        spec = {}
    created = parse_rfc3339(metadata.get("creationTimestamp")) or datetime.now(timezone.utc)
    return core.Ancestor(metadata.get("namespace", ""), metadata.get("name", ""), spec, created,
                         expired=is_true(body.get("status"), EXPIRED))


def lookup_in(index: Mapping[Any, Any]) -> Lookup:
    def lookup(namespace: str, name: str) -> core.Ancestor | None:
        store = index.get((namespace, name)) if index is not None else None
        return next(iter(store), None) if store is not None else None

    return lookup


def ancestry_digest(body: Mapping[str, Any], index: Mapping[Any, Any]) -> str:
    return core.ancestry_digest(summary(body), lookup_in(index), max_depth())


def _accepted(body: Mapping[str, Any]) -> bool:
    accepted = condition(body.get("status"), ACCEPTED)
    return accepted.get("status") == "True" and accepted.get("observedGeneration") == (body.get("metadata") or {}).get("generation")


def refused_by_api_server(outcome: Outcome, namespace: str) -> str | None:
    """The backstop: the API server refused a Role or binding holding more than the operator
    (that is, beyond the ceiling it is bound to). The condition message naming the capability,
    or None when the outcome is no such refusal."""
    error = outcome.result.error
    rules = ceilings.refused_rules(error.message) if error is not None else None
    if rules is None:
        return None
    spec = outcome.result.spec.dump() if outcome.result.spec is not None else {}
    outside = ceilings.refused_capabilities(spec, namespace, rules)
    return f"{outside[0].field}: {ceilings.outside_message(outside, ceilings.Ceiling())} (refused by the API server)"


def ceiling_backstop(kind: IntentKind, outcome: Outcome, body: Mapping[str, Any]) -> Outcome:
    """On every path (handler, children watch, Composition change) the API server's escalation
    refusal reads as the same Ready=False/OutsideCeiling the up-front check gives."""
    refusal = refused_by_api_server(outcome, (body.get("metadata") or {}).get("namespace", ""))
    if refusal is None:
        return outcome
    status = kube_status.with_conditions(outcome.status, [(READY, False, chains.REASON_OUTSIDE_CEILING, refusal)],
                                         (body.get("metadata") or {}).get("generation"))
    return kind.outcome(outcome.result, body, status)


# --------------------------------------------------------------------------- the engine


@dataclass(frozen=True)
class _IdentityKind(IntentKind):
    """AgentIdentity for the composed reconcile: renders the *effective* spec, not the raw one."""

    effective: Mapping[str, dict[str, Any]] = field(default_factory=dict, compare=False, hash=False)  # the engine's, by uid

    def parse_spec(self, body: Mapping[str, Any]) -> Model:
        raw = super().parse_spec(body)
        uid = (body.get("metadata") or {}).get("uid", "")
        effective = self.effective.get(uid)
        if effective is None:
            status = body.get("status") or {}
            # Not decided in this process yet (a drift event before the resume handler ran):
            # never render more than is known to be granted.
            if is_true(status, EXPIRED) or (raw.dump().get("delegatedFrom") and not is_true(status, ACCEPTED)):
                effective = scopes.empty(raw.dump())
            else:
                return raw
        return kind_info(self.kind).spec.model_validate(effective)


class IdentityEngine:
    """Decides and acts for every AgentIdentity; registers the identity kind with `compose`."""

    def __init__(self, compose: ComposeEngine) -> None:
        self.compose = compose
        self.workers = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="paved-identity")
        self._effective: dict[str, dict[str, Any]] = {}  # uid -> the spec the Composition renders (granted/narrowed/empty)
        self._expired: dict[str, tuple[str, str]] = {}  # uid -> (reason, message) of identities expired in this process
        self._context: dict[str, dict[str, Any]] = {}  # uid -> {owner, purpose} of the spec being reconciled
        self.ceilings = CeilingReader()
        self.kind: IntentKind = compose.register_kind(_IdentityKind(
            KIND, status_extras=identity_status, audit=self.audit_grants, effective=self._effective,
            conditions=frozenset({READY, SYNCED, EXPIRED, ACCEPTED}),
            refine=lambda outcome, body: self.keep_expired(ceiling_backstop(self.kind, outcome, body), body)))
        self.raw_kind = IntentKind(KIND)  # the full declared spec: deletion removes everything it could have made

    # --- audit records ----------------------------------------------------------------

    def audit_grants(self, owner: Owner, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        """An Event per grant that appeared (Granted) or disappeared (Revoked)."""
        granted, revoked = grants.changes(old.get("grants") or [], new.get("grants") or [])
        for message in granted:
            self.audit(owner, "Granted", message, new)
        for message in revoked:
            self.audit(owner, "Revoked", message, new)

    def audit(self, owner: Owner, reason: str, message: str, status: Mapping[str, Any] | None = None,
              type: str = "Normal") -> None:
        """One audit record: a Kubernetes Event on the intent and one structured (JSON) log line."""
        self.compose.kube.event(owner, reason, message, type)  # type: ignore[arg-type]
        context = self._context.get(owner.uid, {})
        chain = [f"{hop.get('issuer')}->{hop.get('subject')}" for hop in (status or {}).get("delegationChain") or []]
        log.info("audit %s", json.dumps({
            "event": reason, "identity": f"{owner.namespace}/{owner.name}", "uid": owner.uid, "message": message,
            "owner": context.get("owner"), "purpose": context.get("purpose"), "chain": chain,
        }, sort_keys=True))

    def keep_expired(self, outcome: Outcome, body: Mapping[str, Any]) -> Outcome:
        """On the generic paths (children watch, Composition change) an expired identity stays
        Ready=False/Expired: its empty effective spec rendering fine is not readiness."""
        old = body.get("status") or {}
        uid = (body.get("metadata") or {}).get("uid", "")
        decided_here = uid in self._effective  # this process decided: its knowledge wins over a stale status
        if not (uid in self._expired or (not decided_here and is_true(old, EXPIRED))):
            return outcome
        expired = condition(old, EXPIRED)
        reason, message = self._expired.get(uid) or (expired.get("reason", "Expired"), expired.get("message", ""))
        status = kube_status.with_conditions(outcome.status, [(READY, False, reason, message), (EXPIRED, True, reason, message)],
                                             (body.get("metadata") or {}).get("generation"))
        status["grants"] = []
        return self.kind.outcome(outcome.result, body, status)

    # --- the platform's ceiling ----------------------------------------------------------

    def ceiling(self) -> ceilings.Ceiling:
        """The ceiling ClusterRole's rules (read through a cache of a few seconds)."""
        try:
            return self.ceilings.read()
        except ApiError as error:
            raise providers.ProviderError(f"reading the ceiling ClusterRole {ceilings.CLUSTER_ROLE}: {error.status} "
                                          f"{error.reason}", retryable=True) from None

    def grant_bounds(self, namespace: str | None) -> tuple[Mapping[str, list[str]], str]:
        """What bounds an identity beyond its own spec, for the daemon to notice a change: what
        IntentPolicies allow it and the ceiling's version ("" while it cannot be read)."""
        try:
            version = self.ceilings.read().version
        except ApiError:
            version = ""
        return self.compose.allowances(KIND, namespace), version

    # --- the reconcile ----------------------------------------------------------------

    def reconcile_now(self, body: Mapping[str, Any], index: Mapping[Any, Any], compositions: list[Mapping[str, Any]], *,
                      now: datetime | None = None) -> tuple[dict[str, Any], Outcome | None]:
        """Decide (grant / expire / refuse), act; returns the new status (not written here:
        `reconcile_and_write`) and the composed outcome when something was applied (for Kopf's
        retry mapping)."""
        now = now or datetime.now(timezone.utc)
        owner = owner_of(body)
        old = dict(body.get("status") or {})
        try:
            raw = kind_info(KIND).parse_spec(body.get("spec")).dump()
        except SpecError:
            outcome = self.compose.reconcile(self.kind, body, compositions)  # InvalidSpec, nothing applied
            return outcome.status, outcome
        self._context[owner.uid] = {"owner": raw.get("owner"), "purpose": raw.get("purpose")}
        decision = core.decide(summary(body), accepted=_accepted(body), now=now, lookup=lookup_in(index),
                               namespace_allowed=namespace_allowed, max_depth=max_depth(),
                               previous_chain=old.get("delegationChain") or [],
                               allowed=self.compose.allowances(KIND, owner.namespace), ceiling=self.ceiling())
        generation = owner.generation
        if decision.action == chains.REFUSE:
            status = kube_status.with_conditions(old, [
                (READY, False, decision.reason, f"{decision.field}: {decision.message}"),
                (ACCEPTED, False, decision.reason, f"{decision.field}: {decision.message}"),
            ], generation)
            if self.kind.status_writer.changed(old, status):
                self.audit(owner, decision.reason, f"refused, nothing new granted: {decision.field}: {decision.message}",
                           old, "Warning")
            return status, None
        if decision.action == chains.EXPIRE:
            return self._expire(body, compositions, decision, old), None
        # grant
        self._effective[owner.uid] = decision.spec or {}
        self._expired.pop(owner.uid, None)
        if is_true(old, EXPIRED):  # restored after an extension: apply everything, do not observe first
            body = {**body, "status": {**old, "renderHash": None}}
        outcome = self.compose.reconcile(self.kind, body, compositions)
        status = dict(outcome.status)
        status["expiresAt"] = now_rfc3339(decision.expires_at) if decision.expires_at else None
        status["delegationChain"] = decision.chain
        conditions: list[kube_status.ConditionSpec] = [(EXPIRED, False, "NotExpired", decision.message)]
        error = outcome.result.error
        refusal = refused_by_api_server(outcome, owner.namespace or "")
        if refusal is not None:  # Ready says it already (ceiling_backstop)
            conditions.append((ACCEPTED, False, chains.REASON_OUTSIDE_CEILING, refusal))
        elif error is None or error.retryable:
            conditions.append((ACCEPTED, True, decision.reason, decision.message))
        status = kube_status.with_conditions(status, conditions, generation)
        changed = self.kind.status_writer.changed(old, status)
        if decision.narrowed and condition(old, ACCEPTED).get("reason") != "Narrowed":
            self.audit(owner, "Narrowed", decision.message, status, "Warning")
        if is_true(old, EXPIRED):
            self.audit(owner, "Restored", f"expiry extended: {decision.message}", status)
        if refusal is not None and changed:
            self.audit(owner, chains.REASON_OUTSIDE_CEILING, f"refused: {refusal}", status, "Warning")
        return status, outcome

    def _expire(self, body: Mapping[str, Any], compositions: list[Mapping[str, Any]], decision: chains.Decision,
                old: dict[str, Any]) -> dict[str, Any]:
        """Revoke every grant (RBAC deleted, Vault role+policy deleted and tokens revoked, IAM trust denied)."""
        owner = owner_of(body)
        raw = kind_info(KIND).parse_spec(body.get("spec")).dump()
        self._effective[owner.uid] = scopes.empty(raw)
        self._expired[owner.uid] = (decision.reason, decision.message)
        unfinished: list[str] = []
        with self.compose.owner_lock(owner.uid):
            rendered, _policy = render_for_deletion(self.raw_kind, body, compositions, self.compose.revisions(),
                                                     kube=self.compose.kube)
            for resource in reversed(rendered):
                try:
                    if resource.provider == KUBERNETES:
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
            status["resources"] = [r for r in old.get("resources") or [] if r.get("provider") == KUBERNETES
                                   and str(r.get("externalId", "")).startswith("ServiceAccount/")]
        if decision.expires_at:
            status["expiresAt"] = now_rfc3339(decision.expires_at)
        status = kube_status.with_conditions(status, [
            (READY, False, decision.reason, message),
            (EXPIRED, True if not unfinished else False, decision.reason, message),
        ], owner.generation)
        if self.kind.status_writer.changed(old, status):
            self.audit_grants(owner, old, status)
            self.audit(owner, decision.reason, f"every grant revoked: {message}" if not unfinished else message, status,
                       "Normal" if not unfinished else "Warning")
        if unfinished:
            raise providers.ProviderError(message, retryable=True)
        return status

    def reconcile_and_write(self, body: Mapping[str, Any], index: Mapping[Any, Any],
                            compositions: list[Mapping[str, Any]]) -> Outcome | None:
        """`reconcile_now` and its status written (compose.reconcile_and_write: one path at a time
        per identity, each from the status as last written)."""
        return self.compose.reconcile_and_write(self.kind, body, lambda current: self.reconcile_now(current, index, compositions))

    def resync(self, body: Mapping[str, Any], index: Mapping[Any, Any], compositions: list[Mapping[str, Any]]) -> None:
        """Reconcile outside a Kopf handler cycle and write the status (the daemon's path)."""
        try:
            self.reconcile_and_write(body, index, compositions)
        except (providers.ProviderError, ApiError) as error:  # the next tick or event retries
            log.warning("%s/%s: %s (retrying)", body["metadata"]["namespace"], body["metadata"]["name"], error)

    def finalize(self, body: Mapping[str, Any], compositions: list[Mapping[str, Any]]) -> list[str]:
        """Remove the grants the garbage collector cannot reach; forget the identity once done."""
        unfinished = self.compose.finalize(self.raw_kind, body, compositions)
        uid = (body.get("metadata") or {}).get("uid", "")
        for memory in (self._effective, self._expired, self._context):
            memory.pop(uid, None)
        return unfinished

    def stop(self) -> None:
        self.workers.shutdown(wait=False, cancel_futures=True)
