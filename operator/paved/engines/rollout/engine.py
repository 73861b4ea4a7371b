"""The rollout engine: every ProgressiveRollout's runner, the pools they tick in, and who wakes whom.

Scheduling: one async Kopf daemon per rollout (paved.handlers.rollout) owns a `Slot` here and
runs ticks in `ticks`, a small thread pool (never on the event loop, never in Kopf's handler
pool, which a daemon per rollout would exhaust), then sleeps until the machine's
RequeueAfter or until a watch event wakes it: the rollout itself changed (spec, command
annotation), its target's spec changed (a new pod template), or a copy changed while the
machine waits for it to be ready. The wakers only touch memory (a flag, the cache): no I/O.

The engine is the only holder of this state (paved.runtime builds one per process, and it
runs only on the leader): the Deployment cache, the slots by rollout, by name and by
target Deployment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from paved import metrics as paved_metrics
from paved.api.fields import derived_label_value, derived_name
from paved.api.platform import nothing_allowed
from paved.engines.rollout.runner import AllowanceSource, RolloutRunner, TickResult
from paved.providers.routing import CANARY, ROLLOUT_LABEL, STABLE
from paved.providers.routing.workloads import DeploymentCache

IDLE_RESYNC = 30.0        # seconds between ticks when the machine asks for none (drift checks)
TICK_WORKERS = 24         # rollouts ticking at the same moment (a tick may wait on a webhook)
READ_WORKERS = 8          # parallel reads inside ticks
NOTIFY_WORKERS = 4        # notifications in flight: a pool of their own, so receivers that hang
                          # (each up to its timeout) never take the workers ticks read with
WAKE_DEBOUNCE = 0.05      # seconds to gather a burst of watch events into one tick


@dataclass
class Slot:
    """One rollout's daemon as the wakers see it."""

    runner: RolloutRunner
    wake: asyncio.Event
    target: tuple[str, str] = ("", "")
    target_generation: int | None = None


class RolloutEngine:
    """Runners, their pools and the wake-up bookkeeping (see the module docstring)."""

    def __init__(self, allowances: AllowanceSource = lambda kind, namespace: nothing_allowed(),
                 default_prometheus: str | None = None) -> None:
        self.allowances = allowances  # what IntentPolicies allow a rollout (AnyEndpoint)
        self.default_prometheus = default_prometheus  # for rollouts whose spec names no address
        self.deployments = DeploymentCache()  # targets and copies, fed by the Deployment watch
        self.ticks = ThreadPoolExecutor(max_workers=TICK_WORKERS, thread_name_prefix="rollout")
        self.reads = ThreadPoolExecutor(max_workers=READ_WORKERS, thread_name_prefix="rollout-read")
        self.notifications = ThreadPoolExecutor(max_workers=NOTIFY_WORKERS, thread_name_prefix="rollout-notify")
        self._slots: dict[str, Slot] = {}                     # rollout uid -> its daemon's slot
        self._by_name: dict[tuple[str, str], str] = {}         # (namespace, its ROLLOUT_LABEL value) -> uid
        self._by_target: dict[tuple[str, str], set[str]] = {}  # (namespace, target Deployment) -> uids

    def runner(self, namespace: str, name: str, uid: str) -> RolloutRunner:
        return RolloutRunner(namespace, name, uid, reads=self.reads, notifications=self.notifications,
                             deployments=self.deployments, allowances=self.allowances, default_prometheus=self.default_prometheus)

    # --- slots (called from Kopf's event loop) ------------------------------------------

    def open_slot(self, namespace: str, name: str, uid: str) -> Slot:
        slot = Slot(self.runner(namespace, name, uid), asyncio.Event())
        self._slots[uid] = slot
        self._by_name[(namespace, derived_label_value(name))] = uid
        return slot

    def close_slot(self, namespace: str, name: str, uid: str) -> None:
        slot = self._slots.pop(uid, None)
        if self._by_name.get((namespace, derived_label_value(name))) == uid:
            del self._by_name[(namespace, derived_label_value(name))]
        if slot is None:
            return
        self._by_target.get(slot.target, set()).discard(uid)
        target = slot.target[1]
        for deployment in (target, *(derived_name(target, f"-{role}") for role in (STABLE, CANARY))):
            self.deployments.forget(namespace, deployment)  # no longer watched for: never serve it stale

    def slot(self, uid: str) -> Slot | None:
        return self._slots.get(uid)

    def retarget(self, uid: str, slot: Slot, target: tuple[str, str]) -> None:
        if slot.target == target:
            return
        self._by_target.get(slot.target, set()).discard(uid)
        self.deployments.forget(*slot.target)
        slot.target = target
        self._by_target.setdefault(target, set()).add(uid)

    def rollout_changed(self, uid: str, resource_version: str | None) -> None:
        """Wake the daemon on a spec or annotation change; not on our own status writes."""
        slot = self._slots.get(uid)
        if slot is not None and resource_version not in slot.runner.own_versions:
            slot.wake.set()

    def deployment_changed(self, type: str | None, body: Mapping[str, Any] | None, namespace: str, name: str,
                           labels: Mapping[str, str], generation: int | None) -> None:
        """Keep the Deployment cache of targets and copies current (ticks then read no
        Deployment from the API server), and wake the rollouts whose target's spec changed (a
        new pod template starts a rollout), or whose stable/canary copy changed while the
        machine waits for it to become ready. Other events (the target's own pods, a copy's
        status during a pause) wait for the tick already scheduled: with hundreds of rollouts
        they would otherwise multiply the reads."""
        targeted = self._by_target.get((namespace, name), set())
        owner = labels.get(ROLLOUT_LABEL)
        owner_uid = self._by_name.get((namespace, owner)) if owner else None
        if not targeted and owner_uid is None:
            return
        if type == "DELETED":
            self.deployments.absent(namespace, name)
        elif isinstance(body, dict):
            self.deployments.offer(body)
        for uid in list(targeted):
            slot = self._slots.get(uid)
            if slot is not None and slot.target_generation != generation:
                slot.target_generation = generation
                slot.wake.set()
        slot = self._slots.get(owner_uid) if owner_uid else None
        if slot is not None and slot.runner.waits_for_workloads:
            slot.wake.set()

    # --- ticks ----------------------------------------------------------------------------

    async def tick(self, runner: RolloutRunner, due: float | None) -> TickResult:
        """One tick in a worker thread; a scheduled tick records how late it started (including
        the wait for a free worker), every tick how long it took."""
        return await asyncio.get_running_loop().run_in_executor(self.ticks, _timed_tick, runner, due)

    def stop(self) -> None:
        """Let running ticks finish; start no new ones."""
        self.ticks.shutdown(wait=False, cancel_futures=True)
        self.reads.shutdown(wait=False, cancel_futures=True)
        self.notifications.shutdown(wait=False, cancel_futures=True)


def _timed_tick(runner: RolloutRunner, due: float | None) -> TickResult:
    if due is not None:
        paved_metrics.ROLLOUT_TICK_LATENESS.observe(max(0.0, time.monotonic() - due))
    with paved_metrics.ROLLOUT_TICK_DURATION.time():
        return runner.tick()
