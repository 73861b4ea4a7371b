"""The rollout plan: validation names the field, shorthand expands, replicas follow weights."""

from __future__ import annotations

from datetime import timedelta

import pytest

from paved.rollout import cel
from paved.rollout.plan import (
    AnalysisStep, PauseStep, RouterKind, SetWeightStep, SpecError, canary_replicas, read_plan, stable_replicas,
    validate_spec,
)
from paved.rollout.simulate import example_spec


def errors_of(spec: dict) -> dict[str, str]:
    return {e.path: e.message for e in validate_spec(spec)}


def with_metric(**fields) -> dict:
    spec = example_spec()
    spec["analysis"]["metrics"][0].update(fields)
    return spec


def test_the_seed_example_is_valid():
    assert validate_spec(example_spec()) == []


def test_weight_outside_0_100_names_the_step():
    errors = errors_of(example_spec(steps=[{"setWeight": 5}, {"setWeight": 120}]))
    assert "spec.steps[1].setWeight" in errors
    assert "100" in errors["spec.steps[1].setWeight"]


def test_weights_that_step_backwards_are_refused():
    errors = errors_of(example_spec(steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 10}]))
    assert errors == {"spec.steps[2].setWeight": "10 is lower than 20 at spec.steps[0]; weights must not decrease"}


def test_equal_weights_are_allowed():
    assert errors_of(example_spec(steps=[{"setWeight": 20}, {"setWeight": 20}])) == {}


def test_invalid_cel_reports_the_column():
    errors = errors_of(with_metric(successCondition="result >= "))
    message = errors["spec.analysis.metrics[0].successCondition"]
    assert "invalid CEL at column" in message and "result >= " in message


@pytest.mark.parametrize("expression, expected", [
    ("rsult >= 0.95", "undeclared reference to 'rsult'; the expression can read result, samples"),
    ("result == 1", "operand types do not match"),
    ("result + 1.0", "must evaluate to a boolean"),
])
def test_conditions_are_dry_run_so_runtime_mistakes_surface_at_validation(expression, expected):
    errors = errors_of(with_metric(failureCondition=expression))
    assert expected in errors["spec.analysis.metrics[0].failureCondition"]


def test_bad_duration_names_the_field_and_the_fix():
    errors = errors_of(example_spec(steps=[{"setWeight": 5}, {"pause": {"duration": "5 minutes"}}]))
    assert errors["spec.steps[1].pause.duration"].startswith("not a duration")


def test_zero_interval_is_refused():
    spec = example_spec()
    spec["analysis"]["interval"] = "0"
    assert errors_of(spec) == {"spec.analysis.interval": "must be longer than 0s"}


def test_min_samples_without_samples_query_is_refused():
    spec = with_metric()
    del spec["analysis"]["metrics"][0]["samplesQuery"]
    assert any("samplesQuery" in m for m in errors_of(spec).values())


def test_read_plan_raises_with_every_error():
    with pytest.raises(SpecError) as caught:
        read_plan(example_spec(steps=[{"setWeight": 101}, {"pause": {"duration": "x"}}]))
    assert {e.path for e in caught.value.errors} == {"spec.steps[0].setWeight", "spec.steps[1].pause.duration"}


def test_plan_reads_steps_metrics_and_router():
    plan = read_plan(example_spec())
    assert plan.router is RouterKind.GATEWAY_API
    assert plan.steps[:2] == (SetWeightStep(5), PauseStep(timedelta(minutes=1)))
    metric = plan.metric("success-rate")
    assert (metric.failure_limit, metric.min_samples, metric.interval) == (2, 50, timedelta(seconds=30))


def test_shorthand_expands_to_weight_and_pause_pairs_then_full_weight():
    spec = example_spec(maxWeight=50, stepWeight=20, stepInterval="2m")
    del spec["steps"]
    pause = PauseStep(timedelta(minutes=2))
    assert read_plan(spec).steps == (SetWeightStep(20), pause, SetWeightStep(40), pause, SetWeightStep(50), pause,
                                     SetWeightStep(100))


def test_steps_below_100_get_an_implicit_final_full_weight_step():
    plan = read_plan(example_spec(steps=[{"setWeight": 10}, {"analysis": {}}]))
    assert plan.steps == (SetWeightStep(10), AnalysisStep(()), SetWeightStep(100))


def test_routing_defaults_to_replica_ratio():
    spec = example_spec()
    del spec["trafficRouting"]
    assert read_plan(spec).router is RouterKind.REPLICA_RATIO


@pytest.mark.parametrize("router, full, weight, canary, stable", [
    (RouterKind.GATEWAY_API, 4, 0, 1, 4),      # a canary pod exists for pre-rollout checks
    (RouterKind.GATEWAY_API, 4, 5, 1, 4),
    (RouterKind.GATEWAY_API, 4, 50, 2, 4),     # stable stays at full: rollback is instant
    (RouterKind.GATEWAY_API, 4, 100, 4, 4),
    (RouterKind.REPLICA_RATIO, 4, 0, 0, 4),    # any canary pod would take traffic
    (RouterKind.REPLICA_RATIO, 4, 25, 1, 3),
    (RouterKind.REPLICA_RATIO, 4, 50, 2, 2),
    (RouterKind.REPLICA_RATIO, 4, 100, 4, 0),
    (RouterKind.REPLICA_RATIO, 1, 50, 1, 1),   # never zero stable pods while stable has traffic
    (RouterKind.GATEWAY_API, 0, 50, 0, 0),
])
def test_replicas_follow_the_weight(router, full, weight, canary, stable):
    assert (canary_replicas(router, full, weight), stable_replicas(router, full, weight)) == (canary, stable)


def test_conditions_compile_once():
    cel._compile.cache_clear()
    for _ in range(5):
        cel.evaluate("result >= 0.95", 0.99)
    info = cel._compile.cache_info()
    assert (info.misses, info.hits) == (1, 4)


@pytest.mark.parametrize("expression, value, held, text", [
    ("result >= 0.95", 0.81, False, "0.81 < 0.95"),
    ("result < 0.8", 0.7, True, "0.7 < 0.8"),
    ("result > 0.5 && samples > 3", 0.7, False, "0.7 fails `result > 0.5 && samples > 3`"),
])
def test_explain_renders_simple_comparisons(expression, value, held, text):
    assert cel.explain(expression, value, held) == text
