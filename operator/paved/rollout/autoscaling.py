"""HorizontalPodAutoscalers of the copies, derived from the user's (spec.autoscalerRef). Pure.

The user's HPA keeps aiming at the user's Deployment, untouched (when spec.originalScaleDown
takes that Deployment to 0 the HPA stops acting: Kubernetes does not autoscale a target
scaled to zero). Paved gives each copy an HPA with the user's metrics and behaviour:

    stable   the user's minReplicas..maxReplicas
    canary   the same bounds times the canary's traffic weight, rounded up, at least 1
             (an HPA's minimum), so the canary scales with the share of load it gets; while
             a step scales the canary up, the step's weight (its HPA must not undo the scale)

Between its own transitions (a step's scale, promotion, rollback) the machine lets these
HPAs move the copies' replica counts (`Tick.autoscaled_count`); its transitions still set
the count they need, wait for it in a read taken after they set it, and the HPAs carry on
from there.
"""

from __future__ import annotations

import math

from paved.rollout.actions import SetAutoscaler
from paved.rollout.stages import step_weight
from paved.rollout.state import AutoscalerBounds, Stage
from paved.rollout.tick import Tick

STABLE, CANARY = "stable", "canary"


def canary_bounds(min_replicas: int, max_replicas: int, weight: int) -> tuple[int, int]:
    """The canary's HPA bounds at `weight`% of the traffic: the user's, scaled, at least 1."""
    low = max(1, math.ceil(min_replicas * weight / 100))
    return low, max(low, math.ceil(max_replicas * weight / 100))


def _canary_sized_for(tick: Tick) -> int:
    """The weight the canary is scaled for: while a step scales it up, the step's (else its
    HPA, still at the old share, would scale it back down before the traffic moves)."""
    return step_weight(tick) if tick.stage is Stage.STEP_ENTER else tick.state.canary_weight


def follow_autoscaler(tick: Tick) -> None:
    """Ask for each copy's HPA when its bounds (or the user's HPA) changed since last asked."""
    user = tick.obs.autoscaler
    if not tick.plan.autoscaled or user is None:
        return
    wanted = {STABLE: (user.min_replicas, user.max_replicas),
              CANARY: canary_bounds(user.min_replicas, user.max_replicas, _canary_sized_for(tick))}
    for role, (low, high) in wanted.items():
        bounds = AutoscalerBounds(low, high, user.revision)
        if tick.progress.autoscalers.get(role) != bounds:
            tick.progress.autoscalers[role] = bounds
            tick.emit(SetAutoscaler(role, low, high, user.revision))
