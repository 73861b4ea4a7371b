"""Analysis templates in the pure core (paved.rollout.templates): argument substitution that
cannot inject PromQL, resolution naming the rollout's field, the effective spec, and the
snapshot a canary run keeps."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paved.errors import FieldError
from paved.rollout import templates, validate_spec
from paved.rollout.templates import (
    Resolution, effective_spec, in_force, placeholder_problems, record, relocate, resolve, substitute, template_problems,
)

QUERY = 'sum(rate(http_requests_total{service="{{args.service}}",path=~"{{args.path}}"}[1m]))'


def template(**spec: Any) -> dict[str, Any]:
    body = {"args": [{"name": "service"}, {"name": "path", "value": "/api"}],
            "metrics": [{"name": "success-rate", "query": QUERY, "successCondition": "result >= 0.95"}]}
    body.update(spec)
    return {"metadata": {"name": "rate", "generation": 3}, "spec": body}


def rollout_spec(*references: dict[str, Any], steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"targetRef": {"name": "checkout"}, "service": {"name": "checkout", "port": 80},
            "steps": steps or [{"setWeight": 50}],
            "analysis": {"metrics": [{"name": "latency", "query": "latency", "successCondition": "result < 0.3"}],
                         "templates": list(references)}}


def ref(name: str = "rate", cluster: bool = False, **args: str) -> dict[str, Any]:
    return {"templateName": name, "clusterScope": cluster, "args": [{"name": k, "value": v} for k, v in args.items()]}


# --- substitution ---------------------------------------------------------------------------------


def test_arguments_are_accepted_only_inside_quoted_strings() -> None:
    assert placeholder_problems(QUERY, {"service", "path"}) == []
    assert placeholder_problems('up{job="{{args.job}}"} > {{args.job}}', {"job"}) == [
        'an argument may only stand inside a quoted string, e.g. a label value: service="{{args.service}}"']
    assert "raw `backtick` string" in placeholder_problems("up{job=`{{args.job}}`}", {"job"})[0]
    assert placeholder_problems('up # {{args.job}}', {"job"})[0].startswith("an argument may only stand")
    assert placeholder_problems('up{job="{{args.jb}}"}', {"job"}) == ["{{args.jb}} names no argument of spec.args"]
    assert placeholder_problems('up{job="x}', set()) == ["a string literal is not closed"]


def test_a_value_is_escaped_to_stay_one_string_and_regex_escaped_after_a_regex_matcher() -> None:
    query = substitute(QUERY, {"service": 'a"} or vector(1) or up{x="', "path": "/a.b(c)"})
    assert query == ('sum(rate(http_requests_total{service="a\\"} or vector(1) or up{x=\\"",'
                     'path=~"/a\\\\.b\\\\(c\\\\)"}[1m]))')
    assert substitute("up{a='{{args.v}}'}", {"v": "it's\\"}) == "up{a='it\\'s\\\\'}"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=40))
def test_no_value_changes_the_code_around_the_strings(value: str) -> None:
    """Whatever the value, the substituted query has the template's code between its strings:
    an argument can only ever be the content of the string it stands in."""
    before, _ = templates._segments(QUERY)
    after, closed = templates._segments(substitute(QUERY, {"service": value, "path": value}))
    assert closed
    assert [s.text for s in after if s.quote is None] == [s.text for s in before if s.quote is None]


# --- a template ----------------------------------------------------------------------------------


def test_a_template_with_bad_cel_or_unsafe_arguments_is_refused_naming_the_field() -> None:
    assert template_problems(template()["spec"]) == []
    bad = template(metrics=[{"name": "m", "query": "up > {{args.service}}", "successCondition": "result >= "}])
    problems = [str(p) for p in template_problems(bad["spec"])]
    assert problems[0].startswith("spec.metrics[0].successCondition: invalid CEL")
    assert problems[1].startswith("spec.metrics[0].query: an argument may only stand inside a quoted string")
    assert [p.path for p in template_problems({"metrics": []})] == ["spec.metrics"]


# --- resolution ---------------------------------------------------------------------------------


def test_resolution_substitutes_arguments_with_defaults_and_records_what_was_read() -> None:
    resolution = resolve(rollout_spec(ref(service="checkout")), {("AnalysisTemplate", "rate"): template()}, "shop")
    assert resolution.problems == ()
    (metric,) = resolution.metrics
    assert metric["query"] == 'sum(rate(http_requests_total{service="checkout",path=~"/api"}[1m]))'
    assert resolution.uses == ({"kind": "AnalysisTemplate", "name": "rate", "generation": 3,
                                "metrics": ["success-rate"]},)


def test_a_missing_template_an_unset_or_unknown_argument_name_the_rollouts_field() -> None:
    missing = resolve(rollout_spec(ref("gone", cluster=True)), {("ClusterAnalysisTemplate", "gone"): None}, "shop")
    assert [str(p) for p in missing.problems] == [
        "spec.analysis.templates[0].templateName: ClusterAnalysisTemplate gone not found"]
    unset = resolve(rollout_spec(ref(path="/x", colour="red")), {("AnalysisTemplate", "rate"): template()}, "shop")
    assert [str(p) for p in unset.problems] == [
        "spec.analysis.templates[0].args[1].name: AnalysisTemplate shop/rate declares no argument 'colour' "
        "(it declares: path, service)",
        "spec.analysis.templates[0].args: argument 'service' of AnalysisTemplate shop/rate has no default: "
        "give its value here ({name: service, value: ...})"]
    assert unset.metrics == ()


def test_a_metric_name_defined_twice_and_an_invalid_template_are_refused() -> None:
    clash = template(metrics=[{"name": "latency", "query": "x", "successCondition": "result < 1.0"}])
    problems = resolve(rollout_spec(ref(service="a")), {("AnalysisTemplate", "rate"): clash}, "shop").problems
    assert [str(p) for p in problems] == [
        "spec.analysis.templates[0].templateName: metric 'latency' of AnalysisTemplate shop/rate is also defined by "
        "spec.analysis.metrics[0]"]
    invalid = template(metrics=[{"name": "m", "query": "up", "successCondition": "result"}])
    problems = resolve(rollout_spec(ref(service="a")), {("AnalysisTemplate", "rate"): invalid}, "shop").problems
    assert problems[0].path == "spec.analysis.templates[0]"
    assert problems[0].message.startswith("AnalysisTemplate shop/rate is invalid: spec.metrics[0].successCondition")


def test_the_effective_spec_runs_template_metrics_and_steps_naming_templates() -> None:
    spec = rollout_spec(ref(service="a"), steps=[{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "rate"}]}}])
    resolution = resolve(spec, {("AnalysisTemplate", "rate"): template()}, "shop")
    effective = effective_spec(spec, resolution.metrics, resolution.uses)
    assert [m["name"] for m in effective["analysis"]["metrics"]] == ["latency", "success-rate"]
    assert "templates" not in effective["analysis"]
    assert effective["steps"][1] == {"analysis": {"metrics": ["success-rate"]}}
    assert validate_spec(effective) == []
    assert effective_spec(rollout_spec(), (), ()) == rollout_spec()


def test_problems_of_a_template_metric_are_named_at_the_reference() -> None:
    spec = rollout_spec(ref(service="a"))
    uses = [{"kind": "AnalysisTemplate", "name": "rate", "metrics": ["success-rate"]}]
    moved = relocate([FieldError("spec.analysis.metrics[1].query", "Prometheus rejected it"),
                      FieldError("spec.analysis.metrics[0].query", "inline")], spec, uses)
    assert [str(p) for p in moved] == [
        "spec.analysis.templates[0]: AnalysisTemplate rate spec.metrics[0].query: Prometheus rejected it",
        "spec.analysis.metrics[0].query: inline"]


# --- the snapshot --------------------------------------------------------------------------------


def in_flight(run: int, revision: str = "r2", stage: str = "StepRun") -> dict[str, Any]:
    return {"canaryRevision": revision, "progress": {"stage": stage, "run": run}}


def test_a_run_keeps_the_templates_it_started_with_and_the_next_run_takes_the_new_ones() -> None:
    spec = rollout_spec(ref(service="a"))
    first = resolve(spec, {("AnalysisTemplate", "rate"): template()}, "shop")
    status = record(spec, in_flight(1), first)
    snapshot = status["analysisTemplates"]
    assert (snapshot["run"], snapshot["revision"], snapshot["metrics"]) == (1, "r2", list(first.metrics))
    assert in_force(spec, status) == snapshot

    edited = template(metrics=[{"name": "success-rate", "query": 'other{s="{{args.service}}"}',
                                "successCondition": "result >= 0.5"}])
    second = resolve(spec, {("AnalysisTemplate", "rate"): edited}, "shop")
    assert record(spec, status, second)["analysisTemplates"] == snapshot  # the same run: unchanged

    next_run = {**status, **in_flight(2, "r3")}
    assert in_force(spec, next_run) is None
    assert record(spec, next_run, second)["analysisTemplates"]["metrics"] == list(second.metrics)


def test_the_snapshot_is_not_in_force_between_runs_or_after_the_references_changed() -> None:
    spec = rollout_spec(ref(service="a"))
    resolution = resolve(spec, {("AnalysisTemplate", "rate"): template()}, "shop")
    status = record(spec, in_flight(1), resolution)
    idle = {**status, "progress": {"stage": "Idle", "run": 1}}
    assert in_force(spec, idle) is None
    assert record(spec, idle, None) == idle  # kept to be looked at
    assert in_force(rollout_spec(ref(service="b")), status) is None
    # A run started without a fresh resolution (the tick measured the old snapshot): nothing is
    # recorded, so the next tick reads the templates.
    assert record(spec, {**status, **in_flight(2)}, None)["analysisTemplates"] is None
    assert record(spec, in_flight(1), Resolution(problems=(FieldError("x", "y"),)))["analysisTemplates"] is None


def test_a_snapshot_survives_the_status_round_trip() -> None:
    from paved.api.rollout import ProgressiveRolloutStatus

    spec = rollout_spec(ref(service="a"))
    status = record(spec, in_flight(1), resolve(spec, {("AnalysisTemplate", "rate"): template()}, "shop"))
    dumped = ProgressiveRolloutStatus.model_validate(copy.deepcopy(status)).model_dump(mode="json", exclude_none=True)
    assert in_force(spec, dumped) == status["analysisTemplates"]


@pytest.mark.parametrize("stage", ["Withdraw", "Promote", "ConfirmPromotion"])
def test_the_snapshot_stays_in_force_until_the_run_is_over(stage: str) -> None:
    spec = rollout_spec(ref(service="a"))
    status = record(spec, in_flight(1), resolve(spec, {("AnalysisTemplate", "rate"): template()}, "shop"))
    assert in_force(spec, {**status, "progress": {"stage": stage, "run": 1}}) is not None


def test_templates_cannot_bring_a_rollout_past_its_metric_limit() -> None:
    many = template(metrics=[{"name": f"m{i}", "query": "up", "successCondition": "result > 0.0"} for i in range(32)])
    problems = resolve(rollout_spec(ref(service="a")), {("AnalysisTemplate", "rate"): many}, "shop").problems
    assert [str(p) for p in problems] == [
        "spec.analysis.templates: with the templates' metrics the rollout would measure 33; at most 32 per rollout"]
