"""AgentIdentity: Kopf's side of the identity engine (paved.engines.identity).

- `identity_summaries` (a Kopf index): every identity's spec and expiry by (namespace, name);
  parents are resolved from here.
- create/update/resume: decide, render the effective spec and apply; the status is written
  (one server-side apply as the reconcile) only on change.
- an async daemon per identity sleeps until `status.expiresAt` (ticks of at most 1 s) and
  re-reconciles when it passes, when an ancestor changes (the index), so parents expiring or
  narrowing expire or narrow their descendants, and when what IntentPolicies allow it
  changes (ClusterScope, Wildcards: see paved.policy.allowances): a policy change is seen
  within a tick, a namespace relabelled within ALLOWANCE_RECHECK_SECONDS plus the namespace
  cache's TTL; a withdrawn allowance narrows the grant.
- delete: Kopf puts the `paved.dev/cleanup` finalizer on every identity. Roles and
  RoleBindings in the neighbour namespaces named by `capabilities[].namespaces` cannot carry
  an ownerReference (Kubernetes forbids cross-namespace owners), so the garbage collector
  cannot remove them; the finalizer does, and Vault roles and IAM roles need it too.
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import kopf

from paved import GROUP, VERSION
from paved.engines import Engines
from paved.engines.compose import HANDLER_RETRIES, backoff, compositions_from
from paved.engines.identity import EXPIRED, ancestry_digest, deadline_of, is_true, summary
from paved.handlers.common import raise_for_kopf
from paved.identity import Ancestor
from paved.providers.base import ProviderError

PLURAL = "agentidentities"
TICK_SECONDS = 1.0
ALLOWANCE_RECHECK_SECONDS = 10.0


def identity_summaries(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[tuple[str, str], Ancestor]:
    """Every identity's spec and expiry by (namespace, name): parents are resolved from here."""
    return {(namespace or "", name): summary(body)}  # namespaced: never empty


def reconcile_identity(body: kopf.Body, retry: int, composition_index: kopf.Index, identity_summaries: kopf.Index,
                       memo: Engines, **_: Any) -> None:
    """Decide, render the effective spec and apply; the status is written only on change."""
    try:
        outcome = memo.identities.reconcile_and_write(body, identity_summaries, compositions_from(composition_index))
    except ProviderError as error:
        raise kopf.TemporaryError(str(error), delay=backoff(retry)) from None
    if outcome is not None:
        raise_for_kopf(outcome, retry)


def finalize_identity(body: kopf.Body, retry: int, composition_index: kopf.Index, memo: Engines, **_: Any) -> None:
    """Remove the grants the garbage collector cannot reach, then let Kopf drop the finalizer."""
    try:
        unfinished = memo.identities.finalize(body, compositions_from(composition_index))
    except ProviderError as error:  # Vault/IAM unreachable or misconfigured: keep the finalizer, retry
        raise kopf.TemporaryError(f"still deleting: {error}", delay=backoff(retry)) from None
    if unfinished:
        raise kopf.TemporaryError(f"still deleting: {'; '.join(unfinished)}", delay=backoff(retry))


async def expiry_and_ancestry(body: kopf.Body, stopped: Any, composition_index: kopf.Index,
                              identity_summaries: kopf.Index, memo: Engines, **_: Any) -> None:
    """Sleep until status.expiresAt (ticks <= 1 s); revoke at expiry; follow ancestors' changes.

    Async so that a thousand identities cost a thousand sleeping coroutines, not threads; a
    tick only reads the live body. The blocking work (revocation through providers, status
    writes, allowance look-ups) runs on the engine's workers, sized for I/O.
    """
    engine = memo.identities
    namespace = (body.get("metadata") or {}).get("namespace")
    loop = asyncio.get_running_loop()

    def digest() -> str:  # only delegated identities follow ancestors (a spec change re-runs the handler)
        return ancestry_digest(body, identity_summaries) if (body.get("spec") or {}).get("delegatedFrom") else ""

    async def resync() -> None:  # on a snapshot: Kopf keeps updating `body` while the worker runs
        snapshot, compositions = copy.deepcopy(dict(body)), compositions_from(composition_index)
        await loop.run_in_executor(engine.workers, engine.resync, snapshot, identity_summaries, compositions)

    async def allowances() -> tuple[Mapping[str, list[str]], str]:  # what policies allow, the ceiling's version
        return await loop.run_in_executor(engine.workers, engine.grant_bounds, namespace)

    seen_digest = digest()
    # Re-checks are spread over the interval so that a thousand daemons do not check together.
    seen_epoch, recheck_at = memo.compose.allowance_epoch, time.monotonic() + random.uniform(0, ALLOWANCE_RECHECK_SECONDS)  # noqa: S311 - jitter
    seen_allowed = await allowances()
    handled: datetime | None = None
    while not stopped:
        now = datetime.now(timezone.utc)
        status = body.get("status") or {}
        deadline = deadline_of(status)
        if deadline is not None and now >= deadline and not is_true(status, EXPIRED) and handled != deadline:
            handled = deadline
            await resync()
        current, allowed = digest(), seen_allowed
        # Some policy's allowances changed (at once), or the namespace's labels may have
        # (they select policies; read through a short cache, so re-checked now and then).
        if memo.compose.allowance_epoch != seen_epoch or time.monotonic() >= recheck_at:
            seen_epoch, recheck_at = memo.compose.allowance_epoch, time.monotonic() + ALLOWANCE_RECHECK_SECONDS
            allowed = await allowances()
        if current != seen_digest or allowed != seen_allowed:
            seen_digest, seen_allowed = current, allowed
            await resync()
        if deadline is not None and handled == deadline and not is_true(status, EXPIRED) and now - deadline > timedelta(seconds=10):
            handled = None  # revocation did not finish: try again
        remaining = (deadline - now).total_seconds() if deadline and deadline > now else TICK_SECONDS
        await asyncio.sleep(max(0.01, min(TICK_SECONDS, remaining)))


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the AgentIdentity handlers to the leader's registry."""
    kopf.index(GROUP, VERSION, PLURAL, registry=registry)(identity_summaries)
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(GROUP, VERSION, PLURAL, retries=HANDLER_RETRIES, registry=registry)(reconcile_identity)  # type: ignore[arg-type]  # indexes by name: see paved.handlers
    kopf.on.delete(GROUP, VERSION, PLURAL, retries=HANDLER_RETRIES, registry=registry)(finalize_identity)  # type: ignore[arg-type]  # indexes by name: see paved.handlers
    kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5.0, registry=registry)(expiry_and_ancestry)  # type: ignore[arg-type]  # indexes by name: see paved.handlers
