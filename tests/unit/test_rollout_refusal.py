"""Refused input (paved.rollout.refuse): the status says what is wrong and where, keeps all
progress, and is announced once; the runner only writes it."""

from __future__ import annotations

import copy

import pytest

from paved.rollout import (
    REASON_ENDPOINT_REFUSED, REASON_INVALID_SPEC, REASON_QUERY_REJECTED, REASON_ROUTING_INVALID, REASON_TARGET_NOT_FOUND,
    Event, FieldError, Observation, TargetState, decide, refuse, validate_spec,
)
from paved.rollout.simulate import EPOCH, example_spec

IN_FLIGHT = {
    "phase": "Progressing", "message": "step 3/8 (20%): pausing", "canaryWeight": 20, "currentStepIndex": 2,
    "conditions": [{"type": "Ready", "status": "False", "reason": "Progressing"}],
    "progress": {"stage": "StepRun", "run": 3, "webhooks": [{"key": "k", "state": "requested"}]},
}


def test_a_refusal_names_every_field_keeps_all_progress_and_is_announced_once() -> None:
    problems = [FieldError("spec.steps[1].setWeight", "weights must not step backwards (50 -> 20)"),
                FieldError("spec.analysis.metrics[0].successCondition", "does not compile")]
    before = copy.deepcopy(IN_FLIGHT)
    refusal = refuse(IN_FLIGHT, REASON_INVALID_SPEC, problems)
    assert refusal.message == ("spec is invalid, no traffic moved: "
                               "spec.steps[1].setWeight: weights must not step backwards (50 -> 20) (and 1 more)")
    assert refusal.status == {**IN_FLIGHT, "message": refusal.message}  # progress, phase, weights untouched
    detail = ("spec.steps[1].setWeight: weights must not step backwards (50 -> 20); "
              "spec.analysis.metrics[0].successCondition: does not compile")
    assert refusal.conditions == [("Ready", False, REASON_INVALID_SPEC, detail),
                                  ("Progressing", False, REASON_INVALID_SPEC, detail)]
    assert refusal.event == Event(REASON_INVALID_SPEC, refusal.message, warning=True)
    assert IN_FLIGHT == before  # the status read is not changed in place
    again = refuse(refusal.status, REASON_INVALID_SPEC, problems)
    assert (again.status, again.conditions, again.event) == (refusal.status, refusal.conditions, None)


@pytest.mark.parametrize(("reason", "says"), [
    (REASON_INVALID_SPEC, "spec is invalid"),
    (REASON_ENDPOINT_REFUSED, "Paved does not call an address it names"),
    (REASON_QUERY_REJECTED, "Prometheus rejects a query"),
    (REASON_TARGET_NOT_FOUND, "the target Deployment is missing"),
    (REASON_ROUTING_INVALID, "traffic cannot be steered"),
])
def test_each_reason_says_what_is_wrong_first(reason: str, says: str) -> None:
    refusal = refuse(None, reason, [FieldError("spec.targetRef.name", "Deployment shop/checkout not found")])
    assert refusal.status == {"message": f"{says}, no traffic moved: spec.targetRef.name: Deployment shop/checkout "
                                         f"not found"}
    assert [c[2] for c in refusal.conditions] == [reason, reason]
    assert refusal.event is not None and refusal.event.reason == reason


def test_the_machine_refuses_an_invalid_spec_with_the_same_status() -> None:
    spec = example_spec(steps=[{"setWeight": 50}, {"setWeight": 20}])
    decision = decide(spec, IN_FLIGHT, Observation(TargetState("v2", 2)), EPOCH)
    refusal = refuse(IN_FLIGHT, REASON_INVALID_SPEC, validate_spec(spec))
    assert decision.status == refusal.status
    assert decision.actions == (refusal.event,)
