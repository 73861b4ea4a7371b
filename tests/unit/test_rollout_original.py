"""spec.originalScaleDown: what happens to the user's own Deployment's pods (paved.rollout.original).

Pod totals before, during and after a promoted and a rolled-back rollout are proven on
synthetic time with `simulate` (4 user replicas, Gateway API: the stable copy stays at full
scale and the canary gets ceil(weight x 4) pods); the decisions themselves are pure calls.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from paved.rollout import Observation, ScaleOriginal, ScaleStable, TargetState, WorkloadState, decide, restore_on_delete
from paved.rollout.original import original_replicas
from paved.rollout.plan import OriginalScaleDown
from paved.rollout.simulate import Sample, Scenario, SimulationResult, example_spec, simulate
from paved.rollout.state import Stage

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
USER = 4


def healthy(t: float, weight: int) -> Sample:
    return Sample(0.99, 600)


def broken_after_a_minute(t: float, weight: int) -> Sample:
    return Sample(0.99 if t < 61 else 0.5, 600)


def run(policy: str, source=healthy) -> SimulationResult:
    return simulate(example_spec(originalScaleDown=policy), Scenario(metrics={"success-rate": source}, replicas=USER))


def pods_at(result: SimulationResult, t: float) -> int:
    return [tick.pods for tick in result.ticks if tick.t <= t][-1]


def at_weight(result: SimulationResult, weight: int) -> int:
    return next(tick.pods for tick in result.ticks if tick.decision.status.get("canaryWeight") == weight)


# Before Paved took over, after its bootstrap, with the canary at 50%, after the rollout.
EXPECTED = {  # policy -> (bootstrapped, at 50%, after)
    "Never": (2 * USER, 2 * USER + 2, 2 * USER),
    "OnSuccess": (USER, USER + 2, USER),
    "Progressively": (USER, USER + 2, USER),
}


@pytest.mark.parametrize("policy", sorted(EXPECTED))
def test_pods_before_during_and_after_a_promoted_rollout(policy):
    result = run(policy)
    assert result.status["message"].startswith("promoted")
    bootstrapped, during, after = EXPECTED[policy]
    assert result.ticks[0].observation.target.replicas == USER  # before: the user's Deployment alone
    assert pods_at(result, -1) == bootstrapped
    assert at_weight(result, 50) == during
    assert result.ticks[-1].pods == after
    assert result.status["originalReplicas"] == USER


@pytest.mark.parametrize("policy", sorted(EXPECTED))
def test_pods_after_a_rolled_back_rollout(policy):
    result = run(policy, broken_after_a_minute)
    assert result.phase == "RolledBack"
    assert result.ticks[-1].pods == EXPECTED[policy][2]


def test_the_original_is_never_scaled_before_the_stable_copy_serves():
    """OnSuccess waits for the whole stable copy; the scale-down comes in the very decision
    that ends the bootstrap, after which the stable copy carries the user's count."""
    result = run("OnSuccess")
    scaled = [(t, a) for t, a in result.actions(ScaleOriginal)]
    assert [a for _, a in scaled] == [ScaleOriginal(0, USER)]
    tick = next(tick for tick in result.ticks if tick.t == scaled[0][0])
    assert tick.observation.stable.is_ready(USER, "v1") and tick.stage == "Idle"


def test_progressively_gives_up_one_pod_per_ready_stable_pod():
    stable = WorkloadState("v1", USER, 0)
    wanted = [original_replicas(OriginalScaleDown.PROGRESSIVELY, Stage.BOOTSTRAP, USER,
                                WorkloadState("v1", USER, ready), "v1") for ready in range(USER + 1)]
    assert wanted == [4, 3, 2, 1, 0]
    # Ready pods of another revision do not count; OnSuccess waits for all of them; Never never scales.
    assert original_replicas(OriginalScaleDown.PROGRESSIVELY, Stage.BOOTSTRAP, USER,
                             WorkloadState("v0", USER, USER), "v1") == USER
    assert original_replicas(OriginalScaleDown.ON_SUCCESS, Stage.BOOTSTRAP, USER, stable, "v1") is None
    for stage in Stage:
        assert original_replicas(OriginalScaleDown.NEVER, stage, USER, stable, "v1") is None
        if stage is not Stage.BOOTSTRAP:
            assert original_replicas(OriginalScaleDown.ON_SUCCESS, stage, USER, stable, "v1") == 0


def observe(target: TargetState) -> Observation:
    ready = WorkloadState("v2", target.user_replicas, target.user_replicas)
    return Observation(target=target, stable=ready, canary=WorkloadState("v2", 0, 0), observed_at=NOW)


def test_a_user_who_scales_the_scaled_down_deployment_sets_the_new_count():
    """`kubectl scale` takes spec.replicas over (remembered is gone): the copies follow the
    user's new count and the original goes back to 0, remembering 6."""
    status = run("OnSuccess").status
    decision = decide(example_spec(originalScaleDown="OnSuccess"), status, observe(TargetState("v2", 6)), NOW)
    assert decision.of_type(ScaleStable) == [ScaleStable(6)]
    assert decision.of_type(ScaleOriginal) == [ScaleOriginal(0, 6)]
    assert decision.status["originalReplicas"] == 6


def test_back_to_never_hands_the_replicas_back():
    status = run("OnSuccess").status
    decision = decide(example_spec(originalScaleDown="Never"), status, observe(TargetState("v2", 0, USER)), NOW)
    assert decision.of_type(ScaleOriginal) == [ScaleOriginal(USER, None)]
    assert not decision.of_type(ScaleStable)  # the stable copy keeps the user's count, not the 0 read
    # Handed back (the note gone): nothing more is written to the user's Deployment.
    again = decide(example_spec(originalScaleDown="Never"), decision.status, observe(TargetState("v2", USER)), NOW)
    assert not again.of_type(ScaleOriginal)


def test_a_failed_scale_is_asked_again_only_after_a_newer_read():
    status = run("OnSuccess").status
    spec = example_spec(originalScaleDown="OnSuccess")
    lagging = observe(TargetState("v2", 6))
    first = decide(spec, status, lagging, NOW)
    assert first.of_type(ScaleOriginal) == [ScaleOriginal(0, 6)]
    assert not decide(spec, first.status, lagging, NOW).of_type(ScaleOriginal)  # the read predates the ask
    later = Observation(**{**lagging.__dict__, "observed_at": NOW.replace(second=5)})
    assert decide(spec, first.status, later, NOW.replace(second=5)).of_type(ScaleOriginal) == [ScaleOriginal(0, 6)]


def test_deleting_the_rollout_restores_the_users_count_only_when_paved_scaled_it():
    assert restore_on_delete(TargetState("v2", 0, USER)) == ScaleOriginal(USER, None)
    assert restore_on_delete(TargetState("v2", USER)) is None
