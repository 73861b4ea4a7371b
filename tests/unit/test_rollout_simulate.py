"""The issue's end-to-end promises, proven on synthetic time with `simulate`.

These are the same scenarios the cluster tests run against real parts; here they pin the
decision logic and its timing exactly, in milliseconds.
"""

from __future__ import annotations

import pytest

from paved.rollout import RunWebhook, SetWeights
from paved.rollout.simulate import Sample, Scenario, SimulationResult, example_spec, simulate

INTERVAL = 30.0


def success_rate(error_share_after: dict[float, float]):
    """A canary whose error share changes at the given times (healthy is 1% errors)."""
    def source(t: float, weight: int) -> Sample:
        errors = 0.01
        for since, share in sorted(error_share_after.items()):
            if t >= since:
                errors = share
        return Sample(round(1 - errors, 4), 600)
    return source


def traffic_back_on_stable(result: SimulationResult, after: float) -> float:
    return next(t for t, a in result.actions(SetWeights) if t >= after and a.canary == 0)


def test_the_seed_canary_promotes_a_healthy_version():
    result = simulate(example_spec(), Scenario(metrics={"success-rate": success_rate({})}))
    weights = [a.canary for t, a in result.actions(SetWeights) if t >= 0]
    assert weights == [5, 20, 50, 100, 0]
    assert result.phases()[-4:] == ["Initializing", "Progressing", "Promoting", "Succeeded"]
    assert result.status["stableRevision"] == "v2"


@pytest.mark.parametrize("breach_at", [3.0, 45.0, 61.0, 95.5, 130.0, 200.0])
def test_a_canary_with_30_percent_errors_is_rolled_back_within_one_interval_of_the_breach(breach_at):
    result = simulate(example_spec(), Scenario(metrics={"success-rate": success_rate({breach_at: 0.30})}))
    assert result.phase == "RolledBack"
    assert traffic_back_on_stable(result, breach_at) - breach_at <= INTERVAL
    assert result.status["message"].startswith("rolled back at step")
    assert "success-rate 0.7 < 0.8, failure condition met; 600 samples" in result.status["message"]


def test_without_a_failure_condition_the_failure_limit_decides_like_flagger():
    spec = example_spec()
    del spec["analysis"]["metrics"][0]["failureCondition"]
    result = simulate(spec, Scenario(metrics={"success-rate": success_rate({61.0: 0.30})}))
    elapsed = traffic_back_on_stable(result, 61.0) - 61.0
    assert INTERVAL < elapsed <= 2 * INTERVAL, "failureLimit 2: the second failed measurement rolls back"


def test_failures_below_the_limit_never_promote_a_failing_canary():
    spec = example_spec()
    metric = spec["analysis"]["metrics"][0]
    del metric["failureCondition"]
    metric["failureLimit"] = 5
    result = simulate(spec, Scenario(metrics={"success-rate": success_rate({100.0: 0.10})}))
    assert result.phase == "RolledBack"
    assert "Promoting" not in result.phases()
    assert max(a.canary for t, a in result.actions(SetWeights) if t >= 100.0) <= 20, "no step forward while failing"
    assert "failure limit 5 reached" in result.status["message"]


def test_a_failure_below_the_limit_only_delays_a_canary_that_recovers():
    spec = example_spec()
    del spec["analysis"]["metrics"][0]["failureCondition"]
    result = simulate(spec, Scenario(metrics={"success-rate": success_rate({100.0: 0.10, 140.0: 0.01})}))
    assert result.phase == "Succeeded"


def test_replica_ratio_rollback_waits_for_stable_and_still_lands_within_interval_plus_readiness():
    spec = example_spec(trafficRouting={"replicaRatio": {}})
    result = simulate(spec, Scenario(metrics={"success-rate": success_rate({130.0: 0.30})}, stable_ready_delay=4))
    assert traffic_back_on_stable(result, 130.0) - 130.0 <= INTERVAL + 4 + 2  # + one readiness poll


def test_a_canary_without_traffic_holds_instead_of_failing():
    no_traffic = lambda t, weight: Sample(None, 0)  # noqa: E731 - empty rate, zero requests
    result = simulate(example_spec(), Scenario(metrics={"success-rate": no_traffic}, until=600, stop_when_idle=False))
    assert "RolledBack" not in result.phases() and "Failed" not in result.phases()
    assert result.phase == "Paused"
    assert result.status["canaryWeight"] == 5
    assert result.status["message"] == (
        "step 1/8 (5%): paused: success-rate has 0 samples < minSamples 50 5 times in a row (maxHolds 5); "
        "`paved rollout promote` continues, `abort` rolls back")


def test_operator_crashes_repeat_work_idempotently_and_never_step_backwards():
    spec = example_spec(webhooks=[{"name": "load", "type": "rollout", "url": "http://load.test/", "timeout": "5s"}])
    crashes = (2.0, 62.0, 92.0, 150.0, 185.0, 247.0)
    result = simulate(spec, Scenario(metrics={"success-rate": success_rate({})}, restarts=crashes))
    weights = [a.canary for t, a in result.actions(SetWeights) if t >= 0]
    progress = weights[:-1]
    assert progress == sorted(progress) and weights[-1] == 0
    assert result.phase == "Succeeded"
    keys = [a.key for _, a in result.actions(RunWebhook)]
    assert len(set(keys)) == 8, "one rollout webhook call per step; a re-sent call keeps its key"
