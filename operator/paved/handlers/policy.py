"""IntentPolicies and PolicyExceptions in the cluster: their status, allowances, and the audit's inputs.

- IntentPolicy status: Ready=True (Compiled) or Ready=False (CompileError, naming the rule,
  line and column). A broken policy is left out of every evaluation: it never blocks or
  reports unrelated objects. Compiled policies come from paved.policy's cache (by name + spec
  hash): a policy compiles once per version.
- PolicyException status: Ready=True until `expiresAt`, then Ready=False / Expired=True; or
  Ready=False (NamespaceNotAllowed) outside the namespaces the platform names.
- The continuous audit (paved.engines.audit.Auditor) starts once Kopf has loaded the indexes
  and is fed every intent event: Kopf's watch of the intent kinds here, Paved's own watch of
  ExternalSecretRefs (paved.handlers.secrets).
- Allowances: renders everywhere read what IntentPolicies allow from the live policy index
  (`share_allowances`); a change of what some policy allows bumps the compose engine's epoch.

Which namespaces may hold PolicyExceptions (an exception covers intents in its own
namespace): those listed with `paved run --exception-namespace` and those the platform labels
`paved.dev/policy-exceptions=allowed` (namespace labels are usually platform-owned).
Exceptions elsewhere are refused by the webhook and ignored by the audit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from paved import GROUP, VERSION
from paved.api.kinds import INTENT_KINDS, kind_info
from paved.engines import Engines
from paved.engines.audit import compiled_policies, write_platform_status
from paved.policy.allowances import allowances_for
from paved.policy.decisions import policy_condition

log = logging.getLogger(__name__)

ALLOWANCE_MEMO_SECONDS = 2.0


def share_allowances(policy_index: kopf.Index, memo: Engines, **_: Any) -> None:
    """Renders everywhere (Kopf handlers, drift watch, daemons) read allowances from the live
    policy index; Kopf fills it before any intent handler runs."""
    remembered: dict[tuple[str, str | None], tuple[int, float, Mapping[str, list[str]]]] = {}

    def allowed(kind: str, namespace: str | None) -> Mapping[str, list[str]]:
        # Memoised briefly per namespace: a thousand identity daemons re-check, one computes.
        now, epoch = time.monotonic(), memo.compose.allowance_epoch
        hit = remembered.get((kind, namespace))
        if hit is not None and hit[0] == epoch and hit[1] > now:
            return hit[2]
        value = allowances_for(compiled_policies(policy_index), kind, memo.namespaces.labels(namespace))
        remembered[(kind, namespace)] = (epoch, now + ALLOWANCE_MEMO_SECONDS, value)
        return value

    memo.compose.set_allowance_source(allowed)


def policy_changed(type: str | None, body: kopf.Body, policy_index: kopf.Index, exception_index: kopf.Index,
                   composition_index: kopf.Index, memo: Engines, **_: Any) -> None:
    """Ready from the compile result; any spec change (or deletion) re-audits every intent; a
    change of allowances makes the identities re-check theirs (their daemons follow the epoch)."""
    memo.audit.start(policy_index, exception_index, composition_index)
    metadata = body.get("metadata") or {}
    if memo.compose.note_allowances(metadata.get("name") or "", None if type == "DELETED" else body.get("spec")):
        memo.secrets.allowances_changed()  # SecretStores' OperatorCredentials/AnyEndpoint
    if type == "DELETED":
        memo.audit.request_full()
        return
    condition = policy_condition(body)
    if condition[1] is False:
        log.warning("IntentPolicy %s: %s", metadata.get("name"), condition[3])
    old_generation = (body.get("status") or {}).get("observedGeneration")
    write_platform_status({**body, "kind": "IntentPolicy"}, [condition])
    if type is not None and old_generation != metadata.get("generation"):
        memo.audit.request_full()


def exception_changed(type: str | None, body: kopf.Body, policy_index: kopf.Index, exception_index: kopf.Index,
                      composition_index: kopf.Index, memo: Engines, **_: Any) -> None:
    """Ready/Expired; any change re-audits (the audit also wakes at each expiry by itself)."""
    memo.audit.start(policy_index, exception_index, composition_index)
    if type == "DELETED" or (body.get("status") or {}).get("observedGeneration") != (body.get("metadata") or {}).get("generation"):
        memo.audit.request_full()
    else:
        memo.audit.wake.set()  # recompute the next expiry


async def intent_changed(type: str | None, body: kopf.Body, memo: Engines, **_: Any) -> None:
    """Kopf's watch of the intent kinds it serves (in its event loop: no I/O here); a deleted
    intent is also forgotten by the compose engine (what it wrote of its status)."""
    memo.audit.observe(type, body)
    if type == "DELETED":
        memo.compose.forget((body.get("metadata") or {}).get("uid") or "")


def start_audit(policy_index: kopf.Index, exception_index: kopf.Index, composition_index: kopf.Index, memo: Engines,
                **_: Any) -> None:
    """Start the audit as soon as Kopf has loaded every index, even with no intent Kopf serves:
    Kopf holds handlers back until then, and the operator's own Namespace (the only one
    watched, paved.runtime) is the one object sure to exist."""
    memo.audit.start(policy_index, exception_index, composition_index)


# ExternalSecretRefs are watched by paved.handlers.secrets (paved.kube.watch), which feeds the audit itself.
AUDITED_BY_KOPF = tuple(kind for kind in INTENT_KINDS if kind != "ExternalSecretRef")


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the policy handlers to the leader's registry (the indexes: paved.handlers.indexes)."""
    kopf.on.startup(registry=registry)(share_allowances)  # type: ignore[arg-type]  # indexes by name: see paved.handlers
    kopf.on.event(GROUP, VERSION, "intentpolicies", registry=registry)(policy_changed)  # type: ignore[arg-type]  # indexes by name: see paved.handlers
    kopf.on.event(GROUP, VERSION, "policyexceptions", registry=registry)(exception_changed)  # type: ignore[arg-type]  # indexes by name: see paved.handlers
    kopf.on.event("v1", "namespaces", id="audit-start", registry=registry)(start_audit)  # type: ignore[arg-type]  # indexes by name: see paved.handlers
    for kind in AUDITED_BY_KOPF:
        plural = kind_info(kind).plural
        kopf.on.event(GROUP, VERSION, plural, id=f"audit-{plural}", registry=registry)(intent_changed)
