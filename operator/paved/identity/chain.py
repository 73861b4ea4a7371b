"""Expiry and delegation: one decision per reconcile of an AgentIdentity.

`decide` answers, from the identity, its ancestors (as Kopf's index sees them) and the
time: grant (which effective spec, until when, with which chain), expire (revoke all), or
refuse (which field, why; nothing new is granted).

Generations: a generation is *accepted* once it has been granted (the handler records it in
the `Accepted` condition). A new generation that is invalid (expiry already past at creation, missing or
forbidden parent, cycle, chain too long, a permission the parent does not hold) is refused;
what the previously accepted generation granted stays until it expires. An accepted
generation whose parent later narrows is narrowed to what the parent still holds; one whose
parent expires or disappears is expired.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field as dc_field
from datetime import datetime
from typing import Any

from paved.api.common import now_rfc3339, parse_duration, parse_rfc3339
from paved.identity import ceiling as ceilings, scope as scopes

DEFAULT_MAX_DEPTH = 3

GRANT, EXPIRE, REFUSE = "grant", "expire", "refuse"

# Condition reasons
REASON_INVALID_EXPIRY = "InvalidExpiry"
REASON_DELEGATION_REFUSED = "DelegationRefused"
REASON_EXPIRED = "Expired"
REASON_PARENT_EXPIRED = "ParentExpired"
REASON_PARENT_MISSING = "ParentMissing"
REASON_NOT_ALLOWED = "NotAllowed"
REASON_OUTSIDE_CEILING = ceilings.REASON_OUTSIDE_CEILING


@dataclass(frozen=True)
class Ancestor:
    """What decide() needs to know about one identity (the subject or an ancestor)."""

    namespace: str
    name: str
    spec: Mapping[str, Any]  # validated, defaults applied; {} when the spec is invalid
    created: datetime
    expired: bool = False  # its Expired condition is True

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def parent_key(self) -> tuple[str, str] | None:
        ref = self.spec.get("delegatedFrom")
        if not ref:
            return None
        return (ref.get("namespace") or self.namespace, ref["name"])


class DelegationError(Exception):
    def __init__(self, field: str, message: str, *, broken_after_accept: str = REASON_DELEGATION_REFUSED) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.broken_after_accept = broken_after_accept  # the reason to expire with if already accepted


@dataclass
class Decision:
    action: str  # grant | expire | refuse
    reason: str = ""
    message: str = ""
    field: str | None = None
    spec: dict[str, Any] | None = None  # effective spec to render (grant)
    expires_at: datetime | None = None
    chain: list[dict[str, Any]] = dc_field(default_factory=list)
    narrowed: list[scopes.Excess] = dc_field(default_factory=list)


def own_expiry(spec: Mapping[str, Any], created: datetime) -> datetime | None:
    """spec.expiresAt, or creationTimestamp + spec.ttl, or None (no own expiry)."""
    if spec.get("expiresAt"):
        return parse_rfc3339(spec["expiresAt"])
    if spec.get("ttl"):
        return created + parse_duration(spec["ttl"], "spec.ttl")
    return None


def _earliest(*moments: datetime | None) -> datetime | None:
    known = [m for m in moments if m is not None]
    return min(known) if known else None


def ancestors(
    subject: Ancestor,
    lookup: Callable[[str, str], Ancestor | None],
    namespace_allowed: Callable[[str, str], bool],
    max_depth: int,
) -> list[Ancestor]:
    """The subject's ancestors, root first; raises DelegationError naming the field."""
    found: list[Ancestor] = []
    seen = {subject.key}
    current = subject
    while True:
        parent_ref = current.parent_key()
        if parent_ref is None:
            break
        namespace, name = parent_ref
        where = "spec.delegatedFrom" if current is subject else f"spec.delegatedFrom (ancestor {current.key})"
        if namespace != current.namespace and not namespace_allowed(current.namespace, namespace):
            raise DelegationError(f"{where}.namespace", f"delegation from namespace {namespace} to {current.namespace} is not allowed by the platform (PAVED_DELEGATION_NAMESPACES)")
        key = f"{namespace}/{name}"
        if key in seen:
            raise DelegationError(where, f"delegation cycle: {' -> '.join([subject.key, *[a.key for a in reversed(found)], key])}")
        parent = lookup(namespace, name)
        if parent is None:
            raise DelegationError(f"{where}.name", f"parent AgentIdentity {key} does not exist", broken_after_accept=REASON_PARENT_MISSING)
        found.append(parent)
        seen.add(key)
        if len(found) > max_depth:
            raise DelegationError(where, f"delegation chain longer than the platform's cap of {max_depth} hops")
        current = parent
    return list(reversed(found))


def decide(
    subject: Ancestor,
    *,
    accepted: bool,
    now: datetime,
    lookup: Callable[[str, str], Ancestor | None],
    namespace_allowed: Callable[[str, str], bool] = lambda child, parent: child == parent,
    max_depth: int = DEFAULT_MAX_DEPTH,
    previous_chain: Sequence[Mapping[str, Any]] = (),
    allowed: Mapping[str, Sequence[str]] | None = None,
    ceiling: ceilings.Ceiling | None = None,
) -> Decision:
    """What to do with `subject` now (see the module docstring).

    `allowed` (paved.policy.allowances) is what IntentPolicies allow the subject: a new
    generation asking for more (cluster-wide RBAC, wildcards) is refused; an accepted one whose
    allowance was withdrawn is narrowed to what is still allowed. `ceiling` (the platform's
    ceiling ClusterRole, paved.identity.ceiling; None: not checked) works the same way for
    Kubernetes permissions: beyond it, a new generation is refused and an accepted one narrowed.
    """

    def refuse_or_expire(reason: str, field: str | None, message: str, expire_reason: str) -> Decision:
        if accepted:
            return Decision(EXPIRE, expire_reason, message, field)
        return Decision(REFUSE, reason, message, field)

    own = own_expiry(subject.spec, subject.created)
    expiry_field = "spec.expiresAt" if subject.spec.get("expiresAt") else "spec.ttl"
    if own is not None and own <= now:
        if accepted:
            return Decision(EXPIRE, REASON_EXPIRED, f"expired at {now_rfc3339(own)}", expiry_field, expires_at=own)
        if own > subject.created:  # it was in the future when written: time passed, as for any identity
            return Decision(EXPIRE, REASON_EXPIRED, f"expired at {now_rfc3339(own)} (never granted)", expiry_field, expires_at=own)
        if expiry_field == "spec.ttl":  # a duration: say so, not the moment it computes to
            return Decision(REFUSE, REASON_INVALID_EXPIRY,
                            f"{subject.spec['ttl']} ends the identity the moment it is created; set a longer ttl", expiry_field)
        return Decision(REFUSE, REASON_INVALID_EXPIRY,
                        f"{now_rfc3339(own)} was already past when the AgentIdentity was created; set a future expiry", expiry_field)

    try:
        chain = ancestors(subject, lookup, namespace_allowed, max_depth)
    except DelegationError as error:
        return refuse_or_expire(REASON_DELEGATION_REFUSED, error.field, error.message, error.broken_after_accept)

    # Effective scope and expiry down the chain, root first; ancestors are narrowed, never refused here.
    effective: Mapping[str, Any] | None = None
    parent_expiry: datetime | None = None
    hops: list[tuple[Ancestor, Ancestor, Mapping[str, Any]]] = []
    previous: Ancestor | None = None
    for ancestor in chain:
        spec = ancestor.spec if previous is None or effective is None else scopes.narrow(ancestor.spec, ancestor.namespace, effective, previous.namespace)
        parent_expiry = _earliest(own_expiry(ancestor.spec, ancestor.created), parent_expiry)
        if ancestor.expired or (parent_expiry is not None and parent_expiry <= now):
            return refuse_or_expire(REASON_DELEGATION_REFUSED, "spec.delegatedFrom", f"ancestor {ancestor.key} has expired", REASON_PARENT_EXPIRED)
        if previous is not None:
            hops.append((previous, ancestor, spec))
        effective, previous = spec, ancestor

    granted = dict(subject.spec)
    narrowed: list[scopes.Excess] = []
    if previous is not None and effective is not None:
        too_much = scopes.excess(subject.spec, subject.namespace, effective, previous.namespace)
        if too_much:
            if not accepted:
                return Decision(REFUSE, REASON_DELEGATION_REFUSED,
                                f"asks for more than parent {previous.key} holds: {scopes.refusal(too_much)}", too_much[0].field)
            granted = scopes.narrow(subject.spec, subject.namespace, effective, previous.namespace)
            narrowed = too_much
    blocked = scopes.not_allowed(granted, allowed or {})
    if blocked:
        if not accepted:
            return Decision(REFUSE, REASON_NOT_ALLOWED, scopes.refusal(blocked), blocked[0].field)
        granted = scopes.within_allowances(granted, allowed or {})
    outside = ceilings.beyond(granted, subject.namespace, ceiling) if ceiling is not None else []
    if outside and ceiling is not None:
        if not accepted:
            return Decision(REFUSE, REASON_OUTSIDE_CEILING, ceilings.outside_message(outside, ceiling), outside[0].field)
        granted = ceilings.within(granted, subject.namespace, ceiling)
    if previous is not None:
        hops.append((previous, subject, granted))

    old_at = {(h.get("issuer"), h.get("subject"), tuple(h.get("scope") or ())): h.get("at") for h in previous_chain}
    chain_status = []
    for issuer, child, spec in hops:
        lines = scopes.scope_lines(spec, child.namespace)
        at = old_at.get((issuer.key, child.key, tuple(lines))) or now_rfc3339(now)
        chain_status.append({"issuer": issuer.key, "subject": child.key, "scope": lines, "at": at})
    expires = _earliest(own, parent_expiry)
    message = "granted" + (f" until {now_rfc3339(expires)}" if expires else "")
    if own is not None and parent_expiry is not None and parent_expiry < own:
        asked = f"spec.ttl {subject.spec['ttl']} would end it at" if expiry_field == "spec.ttl" else "spec.expiresAt asks for"
        message += f" (capped at the parent's expiry; {asked} {now_rfc3339(own)})"
    if narrowed:
        message += "; narrowed to the parent's scope, removed: " + scopes.shown(narrowed)
    if blocked:
        message += "; narrowed to what IntentPolicies allow, removed: " + scopes.shown(blocked)
    if outside and ceiling is not None:
        message += f"; narrowed to the platform's ceiling ({ceiling.described}), removed: " + scopes.shown(outside)
    return Decision(GRANT, "Accepted" if not (narrowed or blocked or outside) else "Narrowed", message, spec=granted,
                    expires_at=expires, chain=chain_status, narrowed=narrowed + blocked + outside)


def ancestry_digest(subject: Ancestor, lookup: Callable[[str, str], Ancestor | None], max_depth: int) -> str:
    """Changes exactly when an ancestor's spec, expiry state or existence changes (a missing
    parent or a cycle ends the walk; `decide` is what reports them)."""
    parts: list[Any] = []
    seen: set[tuple[str, str]] = set()
    current = subject
    while (ref := current.parent_key()) is not None and ref not in seen and len(seen) <= max_depth + 1:
        seen.add(ref)
        parent = lookup(*ref)
        parts.append([list(ref), parent.spec if parent else None, parent.expired if parent else None])
        if parent is None:
            break
        current = parent
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
