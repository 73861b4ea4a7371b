"""The canary state machine, rule by rule.

Multi-step behaviour is driven through `simulate` (the handler contract on synthetic time);
exact single-call behaviour (ordering, idempotence, resends) through `decide` directly.
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta

from paved.api.rollout import ProgressiveRolloutStatus
from paved.rollout import (
    Command, CommandKind, EnsureCanary, Event, Measure, MetricMeasurement, Observation, PromoteStableTemplate,
    RunWebhook, ScaleCanary, ScaleStable, SetWeights, TargetState, WebhookResult, Weights,
    WorkloadState, decide,
)
from paved.rollout.state import format_time
from paved.rollout.simulate import EPOCH, Sample, Scenario, SimulationResult, TickRecord, example_spec, simulate


def healthy(t: float, weight: int) -> Sample:
    return Sample(0.99, 500)


def rollout(spec: dict | None = None, **scenario) -> SimulationResult:
    scenario.setdefault("metrics", {"success-rate": healthy})
    return simulate(spec or example_spec(), Scenario(**scenario))


def no_analysis(**overrides) -> dict:
    spec = example_spec(**overrides)
    del spec["analysis"]
    return spec


def at(seconds: float):
    return EPOCH + timedelta(seconds=seconds)


def route_changes(result: SimulationResult) -> list[tuple[float, int]]:
    return [(t, a.canary) for t, a in result.actions(SetWeights)]


def tick_when(result: SimulationResult, predicate) -> TickRecord:
    tick = result.first(predicate)
    assert tick is not None, "the simulation never reached the expected state"
    return tick


def webhooks(*types: str) -> list[dict]:
    return [{"name": f"{kind}-hook", "type": kind, "url": f"http://hooks.test/{kind}", "timeout": "5s"}
            for kind in types]


# -- start -------------------------------------------------------------------------------------


def test_first_sight_makes_the_target_template_the_stable_workload():
    spec = example_spec()
    first = decide(spec, {}, Observation(TargetState("v1", 4)), at(0))
    assert first.actions[:1] == (PromoteStableTemplate("v1", 4),)
    assert first.status["phase"] == "Initializing"
    ready = Observation(TargetState("v1", 4), stable=WorkloadState("v1", 4, 4), observed_at=at(5))
    second = decide(spec, first.status, ready, at(5))
    assert SetWeights(100, 0) in second.actions
    assert (second.status["phase"], second.status["stableRevision"]) == ("Succeeded", "v1")


def test_a_new_revision_starts_with_a_ready_canary_and_pre_rollout_webhooks_before_traffic():
    result = rollout(example_spec(webhooks=webhooks("pre-rollout")))
    sequence = [a for _, a in result.all_actions() if isinstance(a, (EnsureCanary, RunWebhook, SetWeights))
                and not (isinstance(a, SetWeights) and a.canary == 0)]
    assert sequence[:3] == [EnsureCanary("v2", 1), sequence[1], SetWeights(95, 5)]
    assert isinstance(sequence[1], RunWebhook) and sequence[1].type == "pre-rollout"
    assert result.phases()[-4:] == ["Initializing", "Progressing", "Promoting", "Succeeded"]


def test_the_canary_is_ready_at_its_new_size_before_it_gets_more_traffic():
    result = rollout(ready_delay=7)
    for tick in result.ticks:
        for action in tick.decision.of_type(SetWeights):
            if action.canary > 0:
                assert tick.observation.canary.ready >= -(-4 * action.canary // 100), (tick.t, action)


def test_a_revision_change_mid_rollout_restarts_from_step_zero_with_the_new_canary():
    result = rollout(revisions={100: "v3"})
    after = [(t, w) for t, w in route_changes(result) if t >= 100]
    assert after[0] == (100, 0), "traffic first goes back to stable"
    assert after[1][1] == 5, "then the new canary starts again at the first weight"
    restart = tick_when(result, lambda tick: tick.t >= 100 and tick.decision.status["canaryRevision"] == "v3")
    assert restart.decision.status["currentStepIndex"] == 0
    assert EnsureCanary("v3", 1) in [a for _, a in result.actions(EnsureCanary)]
    assert any(a.reason == "RolloutRestarted" for _, a in result.actions(Event))
    assert (result.phase, result.status["stableRevision"]) == ("Succeeded", "v3")


def test_reverting_the_target_to_the_stable_revision_rolls_the_canary_back():
    result = rollout(revisions={100: "v1"})
    assert result.phase == "RolledBack"
    assert "went back to the stable revision v1" in result.status["message"]
    assert result.status["stableRevision"] == "v1"


def test_a_revision_change_during_promotion_waits_for_the_promotion_to_finish():
    baseline = rollout(stable_ready_delay=20)
    promoting = tick_when(baseline, lambda tick: tick.phase == "Promoting").t
    result = rollout(stable_ready_delay=20, revisions={promoting + 1: "v3"})
    promotions = [a.revision for _, a in result.actions(PromoteStableTemplate)]
    assert promotions == ["v1", "v2", "v3"]
    started = [a.message for _, a in result.actions(Event) if a.reason == "RolloutStarted"]
    assert started == ["rolling out revision v2 (stable is v1)", "rolling out revision v3 (stable is v2)"]
    assert (result.phase, result.status["stableRevision"]) == ("Succeeded", "v3")


# -- steps -------------------------------------------------------------------------------------


def test_weights_follow_the_steps_and_pauses_on_schedule():
    result = rollout(no_analysis(), ready_delay=0, replicas=1)  # one canary pod: no scaling between steps
    canary_weights = [(t, w) for t, w in route_changes(result) if t >= 0]
    assert [w for _, w in canary_weights] == [5, 20, 50, 100, 0]
    starts = [t for t, _ in canary_weights]
    assert [round(b - a, 3) for a, b in zip(starts, starts[1:4])] == [60.0, 60.0, 60.0]


def test_the_weights_of_the_run_are_kept_in_status_with_when_they_were_set():
    result = rollout(no_analysis(), ready_delay=0, replicas=1)
    changes = [(t, w) for t, w in route_changes(result) if t >= 0]
    history = result.status["weightHistory"]
    assert [h["weight"] for h in history] == [0] + [w for _, w in changes]
    assert [h["at"] for h in history[1:]] == [format_time(at(t)) for t, _ in changes]


def test_a_timed_pause_asks_to_be_called_back_exactly_when_it_ends():
    result = rollout(no_analysis(), ready_delay=0)
    tick = tick_when(result, lambda tick: SetWeights(95, 5) in tick.decision.actions)
    assert tick.decision.requeue_after == 60.0


def test_an_indefinite_pause_waits_for_promote_and_a_lingering_command_acts_once():
    spec = no_analysis(steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}])
    result = rollout(spec, commands={200: CommandKind.PROMOTE}, until=600, stop_when_idle=False, replicas=1)
    assert [w for t, w in route_changes(result) if t >= 0] == [20, 50]
    assert [t for t, w in route_changes(result) if w == 50] == [200]
    assert result.phase == "Paused"
    assert "paused until `paved rollout promote`" in result.status["message"]
    paused = tick_when(result, lambda tick: tick.t > 10 and tick.phase == "Paused")
    assert paused.decision.status["canaryWeight"] == 20


def test_an_analysis_step_measures_at_once_and_ends_when_every_metric_passed():
    spec = example_spec(steps=[{"setWeight": 20}, {"analysis": {}}, {"setWeight": 50}, {"pause": {"duration": "1m"}}])
    spec["analysis"]["interval"] = "5m"
    result = rollout(spec, ready_delay=0, replicas=1)
    started = [t for t, w in route_changes(result) if w == 20][0]
    measured = [t for t, _ in result.actions(Measure) if t >= started]
    assert measured[0] == started
    assert [t for t, w in route_changes(result) if w == 50] == [started], "passed at once, so the step ended"


def test_background_analysis_runs_every_interval_during_steps():
    result = rollout(ready_delay=0)
    times = [t for t, _ in result.actions(Measure) if 0 <= t < 240]
    assert all(round(b - a, 3) <= 30.0 for a, b in zip(times, times[1:]))
    assert len(times) >= 8


def test_warmup_ignores_the_first_seconds_of_each_step():
    spec = example_spec()
    spec["analysis"]["metrics"][0]["warmup"] = "20s"
    result = rollout(spec, ready_delay=0)
    step_starts = [t for t, w in route_changes(result) if t >= 0 and w > 0]
    measures = [t for t, _ in result.actions(Measure)]
    for start in step_starts:
        first = min(t for t in measures if t >= start)
        assert first == start + 20


def test_a_rollout_picks_up_where_status_says_after_an_operator_restart():
    result = rollout(ready_delay=0)
    mid = tick_when(result, lambda tick: tick.decision.status["canaryWeight"] == 20
                    and tick.stage == "StepRun" and tick.t > 80)
    restarted = Observation(TargetState("v2", 4), WorkloadState("v1", 4, 4), WorkloadState("v2", 1, 1),
                            Weights(80, 20), observed_at=at(mid.t + 3))
    again = decide(example_spec(), mid.decision.status, restarted, at(mid.t + 3))
    assert not again.of_type(SetWeights) and not again.of_type(EnsureCanary)
    assert again.status["currentStepIndex"] == mid.decision.status["currentStepIndex"]


# -- analysis ------------------------------------------------------------------------------------


def test_a_failure_condition_breach_rolls_back_at_once_whatever_the_failure_limit():
    spec = example_spec()
    spec["analysis"]["metrics"][0]["failureLimit"] = 5
    result = rollout(spec, metrics={"success-rate": lambda t, w: Sample(0.99 if t < 70 else 0.7, 480)})
    rollback = tick_when(result, lambda tick: SetWeights(100, 0) in tick.decision.actions and tick.t > 0)
    assert rollback.t - 70 <= 30
    assert result.phase == "RolledBack"
    assert result.status["message"] == "rolled back at step 4 (20%): success-rate 0.7 < 0.8, failure condition met; 480 samples"


def test_success_misses_count_until_the_failure_limit_then_roll_back():
    result = rollout(metrics={"success-rate": lambda t, w: Sample(0.99 if t < 70 else 0.81, 512)})
    warnings = [a.message for _, a in result.actions(Event) if a.reason == "AnalysisFailed"]
    assert len(warnings) == 1 and "(failure 1 of 2)" in warnings[0]
    assert result.phase == "RolledBack"
    assert result.status["message"] == \
        "rolled back at step 4 (20%): success-rate 0.81 < 0.95, failure limit 2 reached; 512 samples"
    assert result.status["checks"]["success-rate"]["failures"] == 2


def test_no_data_holds_extends_the_step_and_pauses_after_max_holds():
    spec = example_spec()
    spec["analysis"]["metrics"][0].update(maxHolds=3, minSamples=0)
    del spec["analysis"]["metrics"][0]["samplesQuery"]
    result = rollout(spec, metrics={"success-rate": lambda t, w: Sample(None)}, until=400, stop_when_idle=False)
    assert "RolledBack" not in result.phases()
    assert result.phase == "Paused"
    assert result.status["canaryWeight"] == 5, "a step never ends on inconclusive data"
    assert result.status["checks"]["success-rate"]["holds"] >= 3, "still measuring: a breach would roll back"
    holds = [a for _, a in result.actions(Event) if a.reason == "AnalysisInconclusive"]
    assert len(holds) == 3, "no event spam once paused"
    assert "success-rate returned no data 3 times in a row (maxHolds 3)" in result.status["message"]
    extended = tick_when(result, lambda tick: "extended, inconclusive" in tick.message)
    assert "success-rate returned no data (hold" in extended.message


def test_too_few_samples_hold_instead_of_judging():
    result = rollout(metrics={"success-rate": lambda t, w: Sample(0.2, 10)}, until=200, stop_when_idle=False)
    assert "RolledBack" not in result.phases()
    assert result.status["analysisHistory"][-1]["verdict"] == "Inconclusive"
    assert "has 10 samples < minSamples 50" in result.status["message"]


def test_a_query_error_is_inconclusive_and_shown():
    result = rollout(metrics={"success-rate": lambda t, w: Sample(None, None, "bad_data: 1:5: parse error")},
                     until=100, stop_when_idle=False)
    assert result.status["analysisHistory"][-1]["verdict"] == "Error"
    assert "query failed: bad_data: 1:5: parse error" in result.status["message"]
    assert result.status["canaryWeight"] == 5


def test_promote_resumes_a_rollout_paused_by_holds():
    spec = example_spec()
    spec["analysis"]["metrics"][0].update(maxHolds=2)
    flaky = lambda t, w: Sample(None, 500) if t < 100 else Sample(0.99, 500)  # noqa: E731
    result = rollout(spec, metrics={"success-rate": flaky}, commands={150: CommandKind.PROMOTE})
    assert "Paused" in result.phases()
    assert result.phase == "Succeeded"


def test_analysis_history_keeps_the_last_entries_only():
    spec = example_spec()
    spec["analysis"]["interval"] = "2s"
    result = rollout(spec)
    assert len(result.status["analysisHistory"]) == 50
    assert result.status["checks"]["success-rate"]["successes"] > 50


# -- promotion -----------------------------------------------------------------------------------


def test_promotion_confirms_then_stable_takes_the_template_then_traffic_then_canary_down():
    spec = example_spec(webhooks=webhooks("confirm-promotion", "post-rollout"))
    result = rollout(spec, stable_ready_delay=15)
    confirm = [t for t, a in result.actions(RunWebhook) if a.type == "confirm-promotion"][0]
    promote = [t for t, a in result.actions(PromoteStableTemplate) if a.revision == "v2"][0]
    back = tick_when(result, lambda tick: tick.t > 0 and SetWeights(100, 0) in tick.decision.actions)
    assert confirm <= promote < back.t
    assert back.t - promote >= 15, "traffic returns only once stable is ready on the new template"
    assert back.observation.stable.is_ready(4, "v2")
    actions = list(back.decision.actions)
    assert actions.index(SetWeights(100, 0)) < actions.index(ScaleCanary(0))
    assert [a.type for a in back.decision.of_type(RunWebhook)] == ["post-rollout"]
    assert result.status["message"] == "promoted revision v2: 100% on stable at full scale"
    assert (result.status["stableRevision"], result.status["canaryRevision"]) == ("v2", None)


def test_a_refused_confirmation_is_asked_again_every_interval():
    answers: list[str] = []

    def confirm_second_time(call: RunWebhook, t: float) -> WebhookResult:
        answers.append(call.key)
        return WebhookResult(len(answers) > 1, "HTTP 200" if len(answers) > 1 else "HTTP 403")

    result = rollout(example_spec(webhooks=webhooks("confirm-promotion")), webhooks=confirm_second_time)
    calls = [(t, a.key) for t, a in result.actions(RunWebhook)]
    assert len(calls) == 2 and calls[1][0] - calls[0][0] == 30 and calls[0][1] != calls[1][1]
    assert result.phase == "Succeeded"
    assert "PromotionNotConfirmed" in [a.reason for _, a in result.actions(Event)]


# -- rollback ------------------------------------------------------------------------------------


def test_rollback_scales_stable_first_and_moves_traffic_only_once_it_is_ready():
    spec = example_spec(trafficRouting={"replicaRatio": {}})
    result = rollout(spec, stable_ready_delay=20,
                     metrics={"success-rate": lambda t, w: Sample(0.99 if t < 150 else 0.5, 500)})
    breach = tick_when(result, lambda tick: tick.t >= 150 and ScaleStable(4) in tick.decision.actions)
    back = tick_when(result, lambda tick: tick.t >= 150 and SetWeights(100, 0) in tick.decision.actions)
    assert back.t - breach.t >= 20
    assert back.observation.stable.is_ready(4)
    assert not breach.decision.of_type(SetWeights)
    assert "waiting for stable" in breach.message and breach.message.startswith("rolling back at step")
    actions = list(back.decision.actions)
    assert actions.index(SetWeights(100, 0)) < actions.index(ScaleCanary(0))
    assert result.phase == "RolledBack"


def test_rollback_with_a_ready_stable_moves_traffic_in_the_same_decision_as_the_verdict():
    result = rollout(metrics={"success-rate": lambda t, w: Sample(0.99 if t < 100 else 0.5, 500)})
    verdict = tick_when(result, lambda tick: tick.t >= 100 and tick.decision.of_type(ScaleStable))
    assert [type(a) for a in verdict.decision.actions if not isinstance(a, Event)][:3] == \
        [ScaleStable, SetWeights, ScaleCanary]


def test_rollback_webhooks_run_after_traffic_is_back():
    spec = example_spec(webhooks=webhooks("rollback"))
    result = rollout(spec, metrics={"success-rate": lambda t, w: Sample(0.5, 500)})
    back = [t for t, a in result.actions(SetWeights) if a.canary == 0][-1]
    notified = [t for t, a in result.actions(RunWebhook) if a.type == "rollback"]
    assert notified == [back]


def test_abort_rolls_back_and_a_rolled_back_revision_stays_rolled_back():
    result = rollout(commands={100: CommandKind.ABORT}, until=900, stop_when_idle=False)
    assert result.phase == "RolledBack"
    assert result.status["message"] == "rolled back at step 4 (20%): aborted by the user"
    assert [a.revision for _, a in result.actions(EnsureCanary)] == ["v2"]


def test_retry_restarts_a_rolled_back_revision():
    result = rollout(commands={100: CommandKind.ABORT, 300: CommandKind.RETRY})
    assert result.phases()[-4:] == ["Initializing", "Progressing", "Promoting", "Succeeded"]
    assert "RolledBack" in result.phases()


def test_commands_that_do_not_apply_are_ignored_with_an_event():
    result = rollout(commands={100: CommandKind.RETRY})
    ignored = [a.message for _, a in result.actions(Event) if a.reason == "CommandIgnored"]
    assert ignored == ["retry ignored: retry restarts a rolled-back or failed revision that is still the target"]
    assert result.phase == "Succeeded"


# -- webhooks ------------------------------------------------------------------------------------


def refuse(kind: str):
    def responder(call: RunWebhook, t: float) -> WebhookResult:
        return WebhookResult(call.type != kind, "HTTP 500" if call.type == kind else "HTTP 200")
    return responder


def test_a_failed_pre_rollout_webhook_fails_the_rollout_without_moving_traffic():
    spec = example_spec(webhooks=webhooks("pre-rollout", "rollback"))
    result = rollout(spec, webhooks=refuse("pre-rollout"))
    assert all(w == 0 for _, w in route_changes(result))
    assert result.phase == "Failed"
    assert result.status["message"] == \
        "failed before any traffic moved: pre-rollout webhook pre-rollout-hook failed: HTTP 500"
    assert [a.type for _, a in result.actions(RunWebhook)] == ["pre-rollout", "rollback"]
    assert result.actions(ScaleCanary)[-1][1] == ScaleCanary(0)


def test_a_failed_rollout_webhook_is_a_failed_check():
    result = rollout(example_spec(webhooks=webhooks("rollout")), webhooks=refuse("rollout"))
    assert result.phase == "RolledBack"
    assert result.status["message"] == "rolled back at step 1 (5%): rollout webhook rollout-hook failed: HTTP 500"


def test_an_unanswered_webhook_is_sent_again_with_the_same_key_after_its_timeout():
    spec = example_spec(webhooks=webhooks("pre-rollout"))
    result = rollout(spec)
    asked = tick_when(result, lambda tick: tick.decision.of_type(RunWebhook))
    call = asked.decision.of_type(RunWebhook)[0]
    lost = Observation(TargetState("v2", 4), WorkloadState("v1", 4, 4), WorkloadState("v2", 1, 1), Weights(100, 0))
    early = decide(spec, asked.decision.status, lost, at(asked.t + 9))
    assert not early.of_type(RunWebhook) and early.requeue_after == 1.0
    late = decide(spec, asked.decision.status, lost, at(asked.t + 10))
    assert late.of_type(RunWebhook) == [call]


# -- drift, bad input, the clock -----------------------------------------------------------------


def test_route_drift_is_restored_but_a_stale_read_is_not_drift():
    result = rollout(ready_delay=0)
    mid = tick_when(result, lambda tick: tick.t > 70 and tick.decision.status["canaryWeight"] == 20
                    and tick.stage == "StepRun")
    set_at = [t for t, w in route_changes(result) if w == 20][0]
    stale = Observation(TargetState("v2", 4), WorkloadState("v1", 4, 4), WorkloadState("v2", 1, 1),
                        Weights(95, 5), observed_at=at(set_at))
    assert not decide(example_spec(), mid.decision.status, stale, at(mid.t)).of_type(SetWeights)
    drifted = Observation(TargetState("v2", 4), WorkloadState("v1", 4, 4), WorkloadState("v2", 1, 1),
                          Weights(100, 0), observed_at=at(mid.t))
    repaired = decide(example_spec(), mid.decision.status, drifted, at(mid.t))
    assert repaired.of_type(SetWeights) == [SetWeights(80, 20)]
    assert any(e.reason == "TrafficDrift" for e in repaired.of_type(Event))


def test_an_invalid_spec_moves_no_traffic_and_keeps_progress():
    result = rollout(ready_delay=0)
    mid = tick_when(result, lambda tick: tick.t > 70 and tick.stage == "StepRun")
    bad = example_spec(steps=[{"setWeight": 50}, {"setWeight": 10}])
    observation = Observation(TargetState("v2", 4), WorkloadState("v1", 4, 4), WorkloadState("v2", 1, 1))
    first = decide(bad, mid.decision.status, observation, at(mid.t))
    assert [type(a) for a in first.actions] == [Event]
    assert [e.path for e in first.errors] == ["spec.steps[1].setWeight"]
    assert first.status["message"].startswith("spec is invalid, no traffic moved: spec.steps[1].setWeight")
    assert first.status["progress"] == mid.decision.status["progress"]
    assert decide(bad, first.status, observation, at(mid.t + 1)).actions == ()


def test_a_missing_target_changes_nothing():
    result = rollout(ready_delay=0)
    status = result.ticks[-1].decision.status
    decision = decide(example_spec(), status, Observation(None), at(9999))
    assert decision.actions == ()
    assert decision.status["message"].startswith("target Deployment not found")


def test_requeue_lands_on_the_next_measurement():
    result = rollout(ready_delay=0)
    tick = tick_when(result, lambda tick: tick.t > 0 and tick.decision.of_type(Measure))
    answered = result.ticks[result.ticks.index(tick) + 1]
    assert answered.t == tick.t and answered.decision.requeue_after == 30.0


def test_decide_does_not_mutate_its_inputs():
    result = rollout(ready_delay=0)
    tick = result.ticks[len(result.ticks) // 2]
    status = copy.deepcopy(tick.status_before)
    spec = example_spec()
    decide(spec, status, tick.observation, at(tick.t))
    assert status == tick.status_before and spec == example_spec()


def test_status_is_json_and_fits_the_api_status_model():
    flaky = lambda t, w: Sample(None, 10, "timeout" if t < 10 else None) if t < 70 else Sample(0.5, 500)  # noqa: E731
    result = rollout(metrics={"success-rate": flaky})
    for tick in result.ticks:
        assert json.loads(json.dumps(tick.decision.status)) == tick.decision.status
        ProgressiveRolloutStatus.model_validate(tick.decision.status)
    assert {h["verdict"] for h in result.status["analysisHistory"]} == {"Error", "Inconclusive", "Failed"}


def test_measurements_for_an_old_request_are_ignored():
    result = rollout(ready_delay=0)
    tick = tick_when(result, lambda tick: tick.t > 0 and tick.decision.of_type(Measure))
    old = {"success-rate": MetricMeasurement("0-old", 0.1, 500)}
    observation = Observation(TargetState("v2", 4), WorkloadState("v1", 4, 4), WorkloadState("v2", 1, 1),
                              Weights(95, 5), measurements=old)
    decision = decide(example_spec(), tick.decision.status, observation, at(tick.t))
    assert decision.status["phase"] == "Progressing" and not decision.of_type(SetWeights)


def test_promote_command_ids_make_commands_one_shot():
    spec = no_analysis(steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}])
    result = rollout(spec, until=100, stop_when_idle=False)
    paused = result.ticks[-1].decision.status
    observation = Observation(TargetState("v2", 4), WorkloadState("v1", 4, 4), WorkloadState("v2", 1, 1),
                              Weights(80, 20), command=Command(CommandKind.PROMOTE, "promote/1"))
    first = decide(spec, paused, observation, at(101))
    assert first.status["currentStepIndex"] == 2
    assert decide(spec, first.status, observation, at(102)).status["currentStepIndex"] == 2


def test_a_spec_edited_mid_rollout_never_sends_traffic_backwards():
    result = rollout(ready_delay=0)
    mid = tick_when(result, lambda tick: tick.t > 70 and tick.decision.status["canaryWeight"] == 20
                    and tick.stage == "StepRun")
    edited = example_spec(steps=[{"setWeight": 5}, {"pause": {"duration": "1m"}}, {"setWeight": 10},
                                 {"pause": {"duration": "1m"}}, {"setWeight": 15}, {"pause": {"duration": "1m"}}])
    observation = Observation(TargetState("v2", 4), WorkloadState("v1", 4, 4), WorkloadState("v2", 1, 1),
                              Weights(80, 20), observed_at=at(200))
    asked = decide(edited, mid.decision.status, observation, at(200))
    [measure] = asked.of_type(Measure)
    answered = Observation(observation.target, observation.stable, observation.canary, observation.weights,
                           measurements={"success-rate": MetricMeasurement(measure.request_id, 0.99, 500)},
                           observed_at=at(200))
    decision = decide(edited, asked.status, answered, at(200))
    assert decision.status["currentStepIndex"] == 5, "the pause ended; the edited setWeight 15 is passed at 20%"
    assert decision.status["canaryWeight"] == 20
    assert all(a.canary >= 20 for a in decision.of_type(SetWeights))
