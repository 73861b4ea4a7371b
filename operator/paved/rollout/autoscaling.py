"""HorizontalPodAutoscalers of the copies, derived from the user's (spec.autoscalerRef). Pure.

The user's HPA keeps aiming at the user's Deployment, untouched (when spec.originalScaleDown
takes that Deployment to 0 the HPA stops acting: Kubernetes does not autoscale a target
scaled to zero). Paved gives each copy an HPA with the user's metrics and behaviour:

    stable   the user's minReplicas..maxReplicas; with replicaRatio routing (where the pod
             counts are the traffic split) those bounds times the stable's share, so its HPA
             keeps the split instead of pushing the stable back to the user's minimum
    canary   the same bounds times the canary's traffic weight, at least 1 (an HPA's
             minimum), so the canary scales with the share of load it gets; while a step
             scales the canary up, the step's weight (its HPA must not undo the scale)

Each bound is the count the machine itself gives the copy for a user's count of
minReplicas (maxReplicas), `canary_replicas` and `stable_replicas`, so the two HPAs' bounds
add up to the user's. A rollback and a promotion size the stable copy for all the traffic
before they move it there, and so do its bounds.

Between its own transitions (a step's scale, promotion, rollback) the machine lets these
HPAs move the copies' replica counts (`Tick.autoscaled_count`); its transitions still set
the count they need, wait for it in a read taken after they set it, and the HPAs carry on
from there.
"""

from __future__ import annotations

from typing import Mapping

from paved.rollout.actions import RemoveAutoscalers, SetAutoscaler
from paved.rollout.observation import AutoscalerState
from paved.rollout.plan import RouterKind, canary_replicas, stable_replicas
from paved.rollout.stages import step_weight
from paved.rollout.state import AutoscalerBounds, Stage
from paved.rollout.tick import Tick

STABLE, CANARY = "stable", "canary"


def copy_bounds(router: RouterKind, role: str, min_replicas: int, max_replicas: int, weight: int) -> tuple[int, int]:
    """The `role` copy's HPA bounds while it is sized for the canary having `weight`%: the
    machine's counts for that copy at the user's bounds, at least 1 (an HPA's minimum)."""
    count = canary_replicas if role == CANARY else stable_replicas
    low = max(1, count(router, min_replicas, weight))
    return low, max(low, count(router, max_replicas, weight))


def _stable_sized_for(tick: Tick) -> int:
    """The canary weight the stable copy is scaled for: none while a rollback or a promotion
    brings the stable to full scale before traffic moves to it."""
    return 0 if tick.stage in (Stage.WITHDRAW, Stage.PROMOTE) else tick.state.canary_weight


def _canary_sized_for(tick: Tick) -> int:
    """The weight the canary is scaled for: while a step scales it up, the step's (else its
    HPA, still at the old share, would scale it back down before the traffic moves)."""
    return step_weight(tick) if tick.stage is Stage.STEP_ENTER else tick.state.canary_weight


def _read_since_asked(tick: Tick) -> Mapping[str, AutoscalerState] | None:
    """The copies' HPAs in a read taken after the last request about them; None without one
    (a read from before a request proves nothing about it)."""
    seen, set_at = tick.obs.copy_autoscalers, tick.progress.autoscalers_set_at
    return None if set_at is not None and tick.observed_at <= set_at else seen


def _not_applied(tick: Tick, role: str, bounds: AutoscalerBounds) -> bool:
    """Whether the cluster shows the copy's HPA other than asked: the request failed or was
    never sent (status is written before the actions run, which stop at the first failure),
    or someone changed or deleted the HPA."""
    seen = _read_since_asked(tick)
    if seen is None:
        return False
    have = seen.get(role)
    return have is None or AutoscalerBounds(have.min_replicas, have.max_replicas, have.revision) != bounds


def _remove_autoscalers(tick: Tick) -> None:
    """Without spec.autoscalerRef the machine sets the copies' counts again, so the HPAs it
    asked for go: removed, removed again while a later read still shows one, then forgotten."""
    progress = tick.progress
    seen = _read_since_asked(tick) if progress.autoscalers else None
    if seen is None:
        return
    if seen:
        progress.autoscalers_set_at = tick.now
        tick.emit(RemoveAutoscalers())
        tick.poll()  # to see them gone
    else:
        progress.autoscalers, progress.autoscalers_set_at = {}, None


def follow_autoscaler(tick: Tick) -> None:
    """Ask for each copy's HPA when its bounds (or the user's HPA) changed since last asked,
    or when the cluster does not have what was asked; remove them when the spec drops them."""
    if not tick.plan.autoscaled:
        _remove_autoscalers(tick)
        return
    user = tick.obs.autoscaler
    if user is None:
        return
    sized_for = {STABLE: _stable_sized_for(tick), CANARY: _canary_sized_for(tick)}
    for role, weight in sized_for.items():
        low, high = copy_bounds(tick.plan.router, role, user.min_replicas, user.max_replicas, weight)
        bounds = AutoscalerBounds(low, high, user.revision)
        if tick.progress.autoscalers.get(role) != bounds or _not_applied(tick, role, bounds):
            tick.progress.autoscalers[role] = bounds
            tick.progress.autoscalers_set_at = tick.now
            tick.emit(SetAutoscaler(role, low, high, user.revision))
