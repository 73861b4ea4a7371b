"""ProgressiveRollout: Kopf's side of the rollout engine (paved.engines.rollout).

- `rollout_daemon`: one async daemon per rollout; it ticks the rollout's runner in the
  engine's pool whenever the machine asked to (RequeueAfter) or a watch event arrived.
- `rollout_changed`, `deployment_changed`: wakers; they only touch the engine's memory.
- `finalize_rollout`: hands the HTTPRoute's rules back to the user's Service before the
  garbage collector deletes the Paved Services (router.finalize), so deleting a rollout
  never leaves a route pointing at deleted Services.

Commands: `paved rollout promote|abort|retry` sets annotations `paved.dev/command` and
`paved.dev/command-id` (any unique string); each id acts once (the machine records the last
one in status.progress), so a lingering annotation is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from paved import GROUP, VERSION
from paved import metrics as paved_metrics
from paved.engines import Engines
from paved.engines.rollout import IDLE_RESYNC, WAKE_DEBOUNCE, TickResult
from paved.errors import describe, safe_traceback
from paved.kube.client import ApiError
from paved.providers.base import ProviderError
from paved.providers.routing import RouterError

log = logging.getLogger(__name__)

PLURAL = "progressiverollouts"


class _QuietWakers(logging.Filter):
    """Drop Kopf's "Handler '...' succeeded." for the two wakers: they run on every event of
    every Deployment in the cluster and have nothing to report."""

    NOISE = frozenset({"Handler 'rollout_changed' succeeded.", "Handler 'deployment_changed' succeeded."})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.NOISE


async def rollout_daemon(namespace: str | None, name: str, uid: str, spec: kopf.Spec, stopped: kopf.DaemonStopped,
                         logger: kopf.Logger, memo: Engines, **_: Any) -> None:
    """Tick whenever the machine asked to (RequeueAfter) or a watch event arrived."""
    namespace = namespace or "default"
    engine = memo.rollouts
    slot = engine.open_slot(namespace, name, uid)
    due: float | None = None  # when a scheduled tick was asked for; None for a woken one
    try:
        while not stopped:
            engine.retarget(uid, slot, (namespace, str((spec.get("targetRef") or {}).get("name") or "")))
            slot.wake.clear()
            try:
                result = await engine.tick(slot.runner, due)
            except (ApiError, ProviderError, OSError) as error:
                result = TickResult(slot.runner.backoff())
                logger.warning(f"rollout tick failed, retrying in {result.requeue_after:g}s: {describe(error)}")
            except Exception as error:  # noqa: BLE001 - a daemon must survive any bug in one tick
                result = TickResult(slot.runner.backoff())
                # Kopf's per-object logger posts an Event: the error by type and place only there,
                # the frames in the operator's log.
                logger.error(f"rollout tick crashed, retrying in {result.requeue_after:g}s: {describe(error)}")
                log.error("rollout %s/%s: tick crashed:\n%s", namespace, name, safe_traceback(error))
            if result.gone or stopped:
                return
            delay = result.requeue_after if result.requeue_after is not None else IDLE_RESYNC
            due = time.monotonic() + delay
            try:
                await asyncio.wait_for(slot.wake.wait(), timeout=delay)
                await asyncio.sleep(WAKE_DEBOUNCE)
                due = None
            except asyncio.TimeoutError:
                pass
    finally:
        engine.close_slot(namespace, name, uid)


async def rollout_changed(uid: str, meta: kopf.Meta, memo: Engines, **_: Any) -> None:
    """Wake the daemon on a spec or annotation change; not on our own status writes."""
    memo.rollouts.rollout_changed(uid, meta.get("resourceVersion"))


async def deployment_changed(type: str | None, event: kopf.RawEvent, namespace: str | None, name: str,
                             labels: kopf.Labels, meta: kopf.Meta, memo: Engines, **_: Any) -> None:
    """Feed the engine's Deployment cache and wake the rollouts that wait for this Deployment."""
    body = event.get("object")
    memo.rollouts.deployment_changed(type, body if isinstance(body, dict) else None, namespace or "", name,
                                     labels, meta.get("generation"))


def finalize_rollout(body: kopf.Body, uid: str, namespace: str | None, name: str, memo: Engines, **_: Any) -> None:
    """Hand the route back to the user's Service; the cluster deletes the rest."""
    namespace = namespace or "default"
    slot = memo.rollouts.slot(uid)
    runner = slot.runner if slot else memo.rollouts.runner(namespace, name, uid)
    try:
        runner.finalize(dict(body))
    except RouterError as error:
        if error.retryable:
            raise kopf.TemporaryError(str(error), delay=5) from None
        log.warning("rollout %s/%s: route not handed back: %s", namespace, name, error)
    paved_metrics.forget_rollout(namespace, name)


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the rollout handlers to the leader's registry."""
    logging.getLogger("kopf.objects").addFilter(_QuietWakers())
    kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5.0, registry=registry)(rollout_daemon)
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)(rollout_changed)
    kopf.on.event("apps", "v1", "deployments", registry=registry)(deployment_changed)
    kopf.on.delete(GROUP, VERSION, PLURAL, retries=10, backoff=5, registry=registry)(finalize_rollout)
