"""spec.autoscalerRef: the copies' HPAs derived from the user's (paved.rollout.autoscaling and
paved.providers.routing.autoscalers, pure parts)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from paved.providers.base import Owner
from paved.providers.routing import RolloutContext
from paved.providers.routing.workloads import role_labels
from paved.providers.routing.autoscalers import autoscaler_problem, autoscaler_state, derived_autoscaler, derived_state
from paved.rollout import (
    AutoscalerState, Decision, Observation, RemoveAutoscalers, ScaleStable, SetAutoscaler, SetWeights, TargetState, WorkloadState, decide,
)
from paved.rollout.autoscaling import copy_bounds
from paved.rollout.plan import RouterKind, canary_replicas, stable_replicas
from paved.rollout.simulate import Sample, Scenario, example_spec, simulate

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
CONTEXT = RolloutContext(owner=Owner("paved.dev/v1alpha1", "ProgressiveRollout", "checkout", "shop", "uid-1"),
                         target="checkout", service="checkout", port=80)
SPEC = example_spec(autoscalerRef={"name": "checkout"})


def user_hpa(target: str = "checkout") -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "checkout", "namespace": "shop", "resourceVersion": "7"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": 2, "maxReplicas": 10,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                                   "target": {"type": "Utilization", "averageUtilization": 70}}}]}}


@pytest.mark.parametrize("weight, bounds", [(0, (1, 1)), (5, (1, 1)), (20, (1, 2)), (50, (1, 5)), (100, (2, 10))])
def test_the_canarys_bounds_follow_its_traffic_weight(weight: int, bounds: tuple[int, int]) -> None:
    assert copy_bounds(RouterKind.GATEWAY_API, "canary", 2, 10, weight) == bounds
    assert copy_bounds(RouterKind.GATEWAY_API, "stable", 2, 10, weight) == (2, 10)  # the stable stays at full scale


@pytest.mark.parametrize("weight, stable, canary", [(0, (4, 12), (1, 1)), (25, (3, 9), (1, 3)), (50, (2, 6), (2, 6)),
                                                    (100, (1, 1), (4, 12))])
def test_under_replica_ratio_the_copies_bounds_split_the_users(weight: int, stable: tuple[int, int],
                                                               canary: tuple[int, int]) -> None:
    assert copy_bounds(RouterKind.REPLICA_RATIO, "stable", 4, 12, weight) == stable
    assert copy_bounds(RouterKind.REPLICA_RATIO, "canary", 4, 12, weight) == canary


def test_a_rollout_asks_for_both_hpas_and_moves_the_canarys_with_each_weight() -> None:
    healthy = {"success-rate": lambda t, w: Sample(0.99, 600)}
    assert not simulate(SPEC, Scenario(metrics=healthy)).actions(SetAutoscaler)  # no HPA observed: none derived
    result = simulate(SPEC, Scenario(metrics=healthy, autoscaler=AutoscalerState(2, 10, "r1")))
    assert result.status["message"].startswith("promoted")
    asked = [action for _, action in result.actions(SetAutoscaler)]
    assert asked[:2] == [SetAutoscaler("stable", 2, 10, "r1"), SetAutoscaler("canary", 1, 1, "r1")]
    assert [(a.min_replicas, a.max_replicas) for a in asked if a.role == "canary"] == [
        (1, 1), (1, 2), (1, 5), (2, 10), (1, 1)]  # 0%, 20%, 50%, 100%, back to 0% after the promotion
    assert [a for a in asked if a.role == "stable"] == [SetAutoscaler("stable", 2, 10, "r1")]


def test_a_changed_user_hpa_reaches_the_derived_ones() -> None:
    status = simulate(SPEC, Scenario(metrics={"success-rate": lambda t, w: Sample(0.99, 600)})).status
    target = TargetState("v2", 4)
    ready = WorkloadState("v2", 4, 4)
    first = decide(SPEC, status, Observation(target=target, stable=ready, autoscaler=AutoscalerState(2, 10, "r1")), NOW)
    second = decide(SPEC, first.status, Observation(target=target, stable=ready,
                                                    autoscaler=AutoscalerState(2, 10, "r2")), NOW)
    assert [a.revision for a in second.of_type(SetAutoscaler)] == ["r2", "r2"]


def test_the_hpa_owns_the_stable_count_between_transitions() -> None:
    """Without an autoscalerRef the machine pulls the stable copy back to the target's count;
    with one, the count the HPA chose stays."""
    plain = simulate(example_spec(), Scenario(metrics={"success-rate": lambda t, w: Sample(0.99, 600)})).status
    autoscaled = simulate(SPEC, Scenario(metrics={"success-rate": lambda t, w: Sample(0.99, 600)})).status
    grown = WorkloadState("v2", 7, 7)
    later = NOW.replace(year=2031)
    observation = Observation(target=TargetState("v2", 4), stable=grown, canary=WorkloadState("v2", 0, 0),
                              autoscaler=AutoscalerState(2, 10, "r1"), observed_at=later)
    assert decide(example_spec(), plain, observation, later).of_type(ScaleStable) == [ScaleStable(4)]
    assert not decide(SPEC, autoscaled, observation, later).of_type(ScaleStable)
    # Nor does it follow a new count of the user's Deployment (its own HPA's, or the user's).
    rescaled = Observation(target=TargetState("v2", 6), stable=WorkloadState("v2", 4, 4),
                           canary=WorkloadState("v2", 0, 0), autoscaler=AutoscalerState(2, 10, "r1"), observed_at=later)
    assert decide(example_spec(), plain, rescaled, later).of_type(ScaleStable) == [ScaleStable(6)]
    assert not decide(SPEC, autoscaled, rescaled, later).of_type(ScaleStable)


def test_derived_hpas_aim_at_the_copy_with_the_users_metrics() -> None:
    derived = derived_autoscaler(CONTEXT, "canary", user_hpa(), 1, 5)
    assert derived["metadata"]["name"] == "checkout-canary"
    assert derived["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout-canary"}
    assert (derived["spec"]["minReplicas"], derived["spec"]["maxReplicas"]) == (1, 5)
    assert derived["spec"]["metrics"] == user_hpa()["spec"]["metrics"]
    assert "resourceVersion" not in derived["metadata"]
    # Read back, it says what it was made from: the bounds and the user's HPA's revision.
    assert derived_state(derived) == AutoscalerState(1, 5, autoscaler_state(user_hpa()).revision)
    assert derived_state({"spec": {"minReplicas": 1, "maxReplicas": 5}}).revision == ""  # made by an older Paved


def test_a_derived_hpa_of_a_rollout_with_a_long_name_has_valid_labels() -> None:
    long = RolloutContext(owner=Owner("paved.dev/v1alpha1", "ProgressiveRollout", "c" * 100, "shop", "uid-1"),
                          target="checkout", service="checkout", port=80)
    labels = derived_autoscaler(long, "stable", user_hpa(), 1, 5)["metadata"]["labels"]
    assert all(len(value) <= 63 for value in labels.values()), labels
    assert labels == role_labels(long, "stable")  # as the copies' Deployments are labelled


def test_the_users_hpa_must_exist_and_scale_the_target() -> None:
    assert "not found" in (autoscaler_problem(CONTEXT, "checkout", None) or "")
    assert "not the target" in (autoscaler_problem(CONTEXT, "checkout", user_hpa("other")) or "")
    assert autoscaler_problem(CONTEXT, "checkout", user_hpa()) is None
    state = autoscaler_state(user_hpa())
    assert (state.min_replicas, state.max_replicas) == (2, 10)
    changed = user_hpa()
    changed["spec"]["maxReplicas"] = 12
    assert autoscaler_state(changed).revision != state.revision


def test_a_wait_for_ready_accepts_the_count_the_hpa_chose() -> None:
    """Promotion waits for the stable copy at the new revision; its HPA may have raised it
    from the 4 Paved set to 5 meanwhile, and 5 ready pods are ready enough."""
    healthy = {"success-rate": lambda t, w: Sample(0.99, 600)}
    result = simulate(SPEC, Scenario(metrics=healthy, stable_ready_delay=10.0, autoscaler=AutoscalerState(2, 10, "r1")))
    waiting = next(tick for tick in result.ticks if tick.stage == "Promote")
    assert "waiting for stable" in waiting.message
    assert waiting.observation.observed_at is not None
    moment = waiting.observation.observed_at + timedelta(seconds=1)  # a read after the promotion's scale
    raised = Observation(**{**waiting.observation.__dict__, "stable": WorkloadState("v2", 5, 5), "observed_at": moment})
    assert decide(SPEC, waiting.decision.status, raised, moment).status["message"].startswith("promoted")
    plain = example_spec()
    assert "waiting for stable" in decide(plain, waiting.decision.status, raised, moment).status["message"]


FIXED = AutoscalerState(10, 10, "r1")  # an HPA that keeps exactly 10 pods: every count is known
ROUTERS = {"gatewayAPI": {"gatewayAPI": {"httpRoute": "checkout"}}, "replicaRatio": {"replicaRatio": {}}}


@pytest.mark.parametrize("router", sorted(ROUTERS))
@pytest.mark.parametrize("healthy", [True, False], ids=["promoted", "rolled-back"])
def test_traffic_moves_only_to_pods_ready_for_it(router: str, healthy: bool) -> None:
    """Every weight change is sent only when the copies, as read in that tick, have the pods
    for it ready: the canary scaled up for its new share, the stable back at full scale
    before a rollback takes traffic off the canary (the copies' HPAs acting in between)."""
    spec = example_spec(autoscalerRef={"name": "checkout"}, trafficRouting=ROUTERS[router],
                        steps=[{"setWeight": 50}, {"pause": {"duration": "1m"}},
                               {"setWeight": 100}, {"pause": {"duration": "1m"}}])
    value = 0.99 if healthy else 0.5
    result = simulate(spec, Scenario(metrics={"success-rate": lambda t, w: Sample(value if w else 0.99, 600)},
                                     replicas=10, ready_delay=5.0, autoscaler=FIXED))
    assert result.phase == ("Succeeded" if healthy else "RolledBack")
    kind = RouterKind(router)
    moves = [(tick, action) for tick in result.ticks for action in tick.decision.of_type(SetWeights)]
    assert moves
    for tick, action in moves:
        stable, canary = tick.observation.stable, tick.observation.canary
        assert stable is not None and canary is not None
        assert stable.ready >= stable_replicas(kind, 10, action.canary), (tick.t, action, stable)
        if action.canary:
            assert canary.revision == "v2" and canary.ready >= canary_replicas(kind, 10, action.canary), (
                tick.t, action, canary)


def test_under_replica_ratio_the_copies_hpas_keep_the_traffic_split() -> None:
    """With replicaRatio the pod counts are the split: the stable copy's HPA must let it shrink
    to its share (5 of 10 at 50%), not push it back to the user's minimum of 10."""
    spec = example_spec(autoscalerRef={"name": "checkout"}, trafficRouting=ROUTERS["replicaRatio"],
                        steps=[{"setWeight": 20}, {"pause": {"duration": "1m"}},
                               {"setWeight": 50}, {"pause": {"duration": "1m"}}])
    result = simulate(spec, Scenario(metrics={"success-rate": lambda t, w: Sample(0.99, 600)}, replicas=10,
                                     ready_delay=5.0, autoscaler=FIXED))
    assert result.phase == "Succeeded"
    running = [tick for tick in result.ticks
               if (tick.status_before.get("progress") or {}).get("stage") == "StepRun" == tick.stage]
    assert {tick.status_before["canaryWeight"] for tick in running} == {20, 50}
    for tick in running:
        weight, stable, canary = tick.status_before["canaryWeight"], tick.observation.stable, tick.observation.canary
        assert stable is not None and canary is not None
        split = (stable_replicas(RouterKind.REPLICA_RATIO, 10, weight), canary_replicas(RouterKind.REPLICA_RATIO, 10, weight))
        assert (stable.desired, canary.desired) == split, (tick.t, weight)


def test_an_hpa_asked_for_but_missing_from_the_cluster_is_asked_for_again() -> None:
    """Status records the bounds before the actions run: a SetAutoscaler that never ran (an
    earlier action of the tick failed, or the operator died) is sent again once a read taken
    after the request shows the copy's HPA missing or different; an older read re-sends nothing."""
    status = simulate(SPEC, Scenario(metrics={"success-rate": lambda t, w: Sample(0.99, 600)},
                                     autoscaler=AutoscalerState(2, 10, "r1"))).status
    asked_at = datetime.fromisoformat(status["progress"]["autoscalersSetAt"].replace("Z", "+00:00"))
    later = asked_at + timedelta(seconds=5)
    applied = {"stable": AutoscalerState(2, 10, "r1"), "canary": AutoscalerState(1, 1, "r1")}

    def asked(copies: dict[str, AutoscalerState], observed_at: datetime, last: dict[str, Any] = status) -> Decision:
        observation = Observation(target=TargetState("v2", 4), stable=WorkloadState("v2", 4, 4),
                                  canary=WorkloadState("v2", 0, 0), autoscaler=AutoscalerState(2, 10, "r1"),
                                  copy_autoscalers=copies, observed_at=observed_at)
        return decide(SPEC, last, observation, later)

    assert not asked(applied, later).of_type(SetAutoscaler)
    assert asked({}, asked_at).of_type(SetAutoscaler) == []  # read before the request could take effect
    resent = asked({"stable": applied["stable"]}, later)
    assert resent.of_type(SetAutoscaler) == [SetAutoscaler("canary", 1, 1, "r1")]
    assert not asked({"stable": applied["stable"]}, later, resent.status).of_type(SetAutoscaler)  # asked once
    changed = {**applied, "stable": AutoscalerState(3, 10, "r1")}
    assert asked(changed, later).of_type(SetAutoscaler) == [SetAutoscaler("stable", 2, 10, "r1")]


def test_after_an_operator_crash_the_copies_hpas_end_as_asked() -> None:
    """The operator dies half-way through the bootstrap's actions (the SetAutoscalers, after
    the stable's template and the original's scale, are lost); the copies' HPAs still end as
    status says they were asked."""
    spec = {**SPEC, "originalScaleDown": "Progressively"}
    result = simulate(spec, Scenario(metrics={"success-rate": lambda t, w: Sample(0.99, 600)},
                                     autoscaler=AutoscalerState(2, 10, "r1"), restarts=(-60.0,)))
    assert result.phase == "Succeeded"
    asked = result.status["progress"]["autoscalers"]
    assert {role: (hpa.min_replicas, hpa.max_replicas, hpa.revision) for role, hpa in result.ticks[-1].autoscalers.items()} == {
        role: (bounds["min"], bounds["max"], bounds["revision"]) for role, bounds in asked.items()}


def test_dropping_the_autoscaler_ref_removes_the_copies_hpas() -> None:
    """Without spec.autoscalerRef the machine sets the copies' counts again, so their HPAs must
    go: removed once, asked again only if a later read still shows one, then forgotten."""
    autoscaled = simulate(SPEC, Scenario(metrics={"success-rate": lambda t, w: Sample(0.99, 600)},
                                         autoscaler=AutoscalerState(2, 10, "r1")))
    status, plain = autoscaled.status, example_spec()
    applied = dict(autoscaled.ticks[-1].autoscalers)
    assert set(applied) == {"stable", "canary"}
    later = NOW.replace(year=2031)

    def tick(last: dict[str, Any], copies: dict[str, AutoscalerState], observed_at: datetime) -> Decision:
        observation = Observation(target=TargetState("v2", 4), stable=WorkloadState("v2", 4, 4),
                                  canary=WorkloadState("v2", 0, 0), copy_autoscalers=copies, observed_at=observed_at)
        return decide(plain, last, observation, later)

    first = tick(status, applied, later)
    assert first.of_type(RemoveAutoscalers) == [RemoveAutoscalers()]
    assert not tick(first.status, applied, later).of_type(RemoveAutoscalers)  # asked once for this read
    again = tick(first.status, {"canary": applied["canary"]}, later + timedelta(seconds=1))
    assert again.of_type(RemoveAutoscalers) == [RemoveAutoscalers()]  # still there after the request
    gone = tick(again.status, {}, later + timedelta(seconds=2))
    assert not gone.actions and gone.status["progress"]["autoscalers"] == {}
    assert not tick(gone.status, {}, later + timedelta(seconds=3)).actions
