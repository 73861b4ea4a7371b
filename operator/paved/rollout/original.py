"""The user's own Deployment: how many pods it keeps once Paved's stable copy serves. Pure.

Paved runs the target's pod template in its stable and canary copies; the user's Deployment
(the *original*) keeps its own pods next to them unless `spec.originalScaleDown` says
otherwise (Argo Rollouts' `workloadRef.scaleDown`):

    Never          the original keeps the user's replicas (the default: nothing of the
                   user's Deployment is written, so no GitOps tool has anything to ignore)
    OnSuccess      the original goes to 0 once the stable copy is ready at full scale
    Progressively  the original gives up one pod for each stable pod that becomes ready

Either way the original ends at 0 after the first bootstrap and stays there through every
canary, promotion and rollback that follows: the stable copy, never the original, is what a
rollback returns to. The user's count is kept in an annotation next to the scale (see
`TargetState.remembered`), so it is the "full scale" of the copies and is restored when the
rollout is deleted or the policy goes back to Never (`restore_on_delete`, `scale_original`).
"""

from __future__ import annotations

from paved.rollout.actions import ScaleOriginal
from paved.rollout.observation import TargetState, WorkloadState
from paved.rollout.plan import OriginalScaleDown
from paved.rollout.state import OriginalScale, Stage
from paved.rollout.tick import Tick


def original_replicas(policy: OriginalScaleDown, stage: Stage, full: int, stable: WorkloadState,
                      stable_revision: str | None) -> int | None:
    """spec.replicas the original should have now; None: the user's own count, untouched.

    Only the first bootstrap (Paved's stable copy coming up at the target's revision) waits
    for the stable copy; from then on the stable copy is at full scale whenever it serves."""
    if policy is OriginalScaleDown.NEVER:
        return None
    if stage is not Stage.BOOTSTRAP:
        return 0
    if policy is OriginalScaleDown.PROGRESSIVELY:
        ready = min(stable.ready, full) if stable.revision == stable_revision else 0
        return max(full - ready, 0)
    return None


def scale_original(tick: Tick) -> None:
    """Ask for the original's scale when the cluster does not have it yet.

    Asked once; asked again only when a read taken after the request still differs (the user
    scaled the Deployment, or the request failed), so a stale read never re-sends."""
    target, progress = tick.target, tick.progress
    tick.state.original_replicas = target.user_replicas
    want = original_replicas(tick.plan.original_scale_down, tick.stage, tick.full, tick.stable,
                             tick.state.stable_revision)
    if want is None and target.remembered is None:
        progress.original_asked = None
        return  # the user's own count, never written
    asked = OriginalScale(tick.full, None) if want is None else OriginalScale(want, tick.full)
    if (target.replicas, target.remembered) == (asked.replicas, asked.remember):
        return
    set_at = progress.original_set_at
    if progress.original_asked == asked and set_at is not None and tick.observed_at <= set_at:
        return  # asked already; this read predates the answer
    progress.original_asked = asked
    progress.original_set_at = tick.now
    tick.emit(ScaleOriginal(asked.replicas, asked.remember))


def restore_on_delete(target: TargetState) -> ScaleOriginal | None:
    """What deleting the rollout does to the original: the user's count back, when Paved
    scaled it down (nothing otherwise)."""
    if target.remembered is None:
        return None
    return ScaleOriginal(target.remembered, None)
