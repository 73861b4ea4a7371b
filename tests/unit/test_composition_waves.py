"""The pure side of Composition revisions and rollout waves (paved.render.waves)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paved.api.kinds import kind_info
from paved.render import RenderError, render_intent
from paved.render.waves import (
    MESSAGE_MAX,
    REASON_HALTED,
    REASON_PROGRESSING,
    REASON_ROLLED_OUT,
    IntentOnRevision,
    intent_on_revision,
    plan_wave,
    revision_for,
    revision_labels,
    revision_name,
    revision_spec,
)


def composition(value: str = "one", **spec: Any) -> dict[str, Any]:
    template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ intent.metadata.name }}-info\ndata:\n  v: " + value + "\n"
    return {
        "apiVersion": "paved.dev/v1alpha1", "kind": "Composition",
        "metadata": {"name": "pg", "uid": "u-1"},
        "spec": {"compositeKind": "DatabaseIntent", "default": True,
                 "resources": [{"name": "info", "provider": "kubernetes", "template": template}], **spec},
    }


def revision_of(comp: dict[str, Any], number: int) -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "CompositionRevision",
            "metadata": {"name": revision_name(comp), "labels": revision_labels(comp)},
            "spec": {"revision": number, "compositionSpec": revision_spec(comp)}}


def intent(*, revision: str | None = None, policy: str | None = None, ref: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"engine": "postgresql", "version": "16"}
    if policy:
        spec["compositionUpdatePolicy"] = policy
    if ref:
        spec["compositionRevisionRef"] = {"name": ref}
    status = {"composition": "pg", "compositionRevision": revision} if revision else {}
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent",
            "metadata": {"name": "orders", "namespace": "team", "uid": "i-1"}, "spec": spec, "status": status}


def parsed(body: dict[str, Any]) -> Any:
    return kind_info("DatabaseIntent").parse_spec(body["spec"])


OLD, NEW = composition("one"), composition("two")
REVISIONS = {revision_name(OLD): revision_of(OLD, 1), revision_name(NEW): revision_of(NEW, 2)}


# --------------------------------------------------------------------------- revisions


def test_a_revision_is_named_by_its_spec_without_the_rollout_settings() -> None:
    assert revision_name(OLD) == revision_name(composition("one"))
    assert revision_name(OLD) != revision_name(NEW)
    assert revision_name(OLD).startswith("pg-") and len(revision_name(OLD)) == len("pg-") + 10
    assert revision_name(composition("one", rollout={"maxInFlight": 3})) == revision_name(OLD)
    assert "rollout" not in revision_spec(composition("one", rollout={"maxInFlight": 3}))


def test_an_automatic_intent_stays_on_its_revision_until_the_rollout_moves_it() -> None:
    body = intent(revision=revision_name(OLD))
    name, rendered = revision_for(body, parsed(body), NEW, REVISIONS)
    assert name == revision_name(OLD) and rendered["spec"]["resources"] == OLD["spec"]["resources"]
    assert rendered["metadata"]["name"] == "pg"  # still rendered "through pg"
    name, rendered = revision_for(body, parsed(body), NEW, REVISIONS, move=True)
    assert name == revision_name(NEW) and rendered is NEW


def test_a_new_intent_and_one_whose_revision_is_gone_get_the_latest() -> None:
    assert revision_for(intent(), parsed(intent()), NEW, REVISIONS)[0] == revision_name(NEW)
    gone = intent(revision="pg-0000000000")
    assert revision_for(gone, parsed(gone), NEW, REVISIONS)[0] == revision_name(NEW)


def test_a_manual_intent_never_moves_and_a_ref_pins_it() -> None:
    body = intent(revision=revision_name(OLD), policy="Manual")
    assert revision_for(body, parsed(body), NEW, REVISIONS, move=True)[0] == revision_name(OLD)
    pinned = intent(revision=revision_name(NEW), policy="Manual", ref=revision_name(OLD))
    name, rendered = revision_for(pinned, parsed(pinned), NEW, REVISIONS, move=True)
    assert name == revision_name(OLD) and rendered["spec"]["resources"] == OLD["spec"]["resources"]


def test_a_bad_ref_is_an_error_naming_the_field() -> None:
    unknown = intent(policy="Manual", ref="pg-ffffffffff")
    with pytest.raises(RenderError) as raised:
        revision_for(unknown, parsed(unknown), NEW, REVISIONS)
    assert raised.value.field == "spec.compositionRevisionRef.name" and revision_name(NEW) in str(raised.value)
    automatic = intent(ref=revision_name(OLD))
    with pytest.raises(RenderError) as raised:
        revision_for(automatic, parsed(automatic), NEW, REVISIONS)
    assert raised.value.field == "spec.compositionRevisionRef.name" and "Manual" in str(raised.value)
    other = {**composition("x"), "metadata": {"name": "other"}}
    foreign = intent(policy="Manual", ref=revision_name(other))
    with pytest.raises(RenderError):  # a revision of another Composition is not one of this one
        revision_for(foreign, parsed(foreign), NEW, {**REVISIONS, revision_name(other): revision_of(other, 1)})


def test_render_intent_renders_the_revision_the_intent_is_on() -> None:
    body = intent(revision=revision_name(OLD))
    on_old = render_intent(body, [NEW], namespace_labels={}, allowed=None, revisions=REVISIONS)
    assert on_old.revision == revision_name(OLD) and on_old.resources[0].body["data"] == {"v": "one"}
    moved = render_intent(body, [NEW], namespace_labels={}, allowed=None, revisions=REVISIONS, move=True)
    assert moved.revision == revision_name(NEW) and moved.resources[0].body["data"] == {"v": "two"}
    offline = render_intent(body, [NEW], namespace_labels={}, allowed=None)  # admission, `paved render`
    assert offline.revision == revision_name(NEW) and offline.resources[0].body["data"] == {"v": "two"}


# --------------------------------------------------------------------------- waves


def on(key: str, revision: str | None, *, automatic: bool = True, ready: bool = True, failure: str | None = None
       ) -> IntentOnRevision:
    return IntentOnRevision(key, revision, automatic, ready, failure)


def test_waves_move_at_most_max_in_flight_in_key_order() -> None:
    intents = [on(f"ns/i{n}", "old") for n in range(6)]
    wave = plan_wave("new", intents, max_in_flight=2, max_failures=1)
    assert wave.move == ("ns/i0", "ns/i1") and not wave.halted
    assert wave.counts == {"new": 2, "old": 4} and len(wave.behind) == 4
    assert wave.condition()[2] == REASON_PROGRESSING
    in_flight = [on("ns/i0", "new", ready=False), on("ns/i1", "new"), *intents[2:]]
    assert plan_wave("new", in_flight, max_in_flight=2, max_failures=1).move == ("ns/i2",)


def test_a_failure_halts_the_rollout_and_names_the_intent() -> None:
    intents = [on("ns/a", "new", ready=False, failure="spec.size: no instance class for 'huge'"), on("ns/b", "new"),
               *[on(f"ns/c{n}", "old") for n in range(4)]]
    wave = plan_wave("new", intents, max_in_flight=2, max_failures=1)
    assert wave.halted and wave.move == () and len(wave.behind) == 4
    condition = wave.condition()
    assert condition[1] is False and condition[2] == REASON_HALTED
    assert "ns/a: spec.size" in condition[3] and "maxFailures 1" in condition[3]
    assert not plan_wave("new", intents, max_in_flight=2, max_failures=2).halted  # a higher threshold goes on
    assert plan_wave("newer", intents, max_in_flight=2, max_failures=1).move  # a new revision starts afresh


def test_a_long_list_of_failures_is_capped() -> None:
    intents = [on(f"ns/{'x' * 60}{n}", "new", ready=False, failure="spec.size: " + "y" * 200) for n in range(50)]
    assert len(plan_wave("new", intents, max_in_flight=5, max_failures=1).condition()[3]) <= MESSAGE_MAX


def test_done_when_every_automatic_intent_is_ready_on_latest() -> None:
    wave = plan_wave("new", [on("ns/a", "new"), on("ns/m", "old", automatic=False)], max_in_flight=1, max_failures=1)
    assert wave.done and wave.condition()[1:3] == (True, REASON_ROLLED_OUT)
    assert wave.counts == {"new": 1, "old": 1}


def test_the_planner_reads_intents_from_their_status() -> None:
    body = {"metadata": {"namespace": "t", "name": "a"}, "spec": {"compositionUpdatePolicy": "Manual"},
            "status": {"compositionRevision": "pg-1", "conditions": [
                {"type": "Ready", "status": "False", "reason": "RenderFailed", "message": "spec.size: bad"}]}}
    assert intent_on_revision(body) == IntentOnRevision("t/a", "pg-1", False, False, "spec.size: bad")
    waiting = {**body, "spec": {}, "status": {"compositionRevision": "pg-1", "conditions": [
        {"type": "Ready", "status": "False", "reason": "Waiting", "message": "waiting for db"}]}}
    assert intent_on_revision(waiting) == IntentOnRevision("t/a", "pg-1", True, False, None)
    pinned = {**body, "spec": {"compositionUpdatePolicy": "Manual", "compositionRevisionRef": {"name": "pg-1"}}}
    assert intent_on_revision(pinned).automatic is False


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(0, 30),
    manual=st.sets(st.integers(0, 29)),
    max_in_flight=st.integers(1, 6),
    max_failures=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_rollouts_never_exceed_max_in_flight_never_move_after_halting_and_never_move_manual(
    count: int, manual: set[int], max_in_flight: int, max_failures: int, seed: int
) -> None:
    """Simulate a rollout: each moved intent becomes Ready, stays in flight or fails at random;
    in-flight intents settle at random between steps."""
    rng = random.Random(seed)
    intents = {f"ns/i{n:02d}": on(f"ns/i{n:02d}", "old", automatic=n not in manual) for n in range(count)}
    for _step in range(40):
        wave = plan_wave("new", intents.values(), max_in_flight=max_in_flight, max_failures=max_failures)
        assert len(wave.in_flight) <= max_in_flight or not wave.move
        if wave.halted:
            assert wave.move == ()
        for key in wave.move:
            assert intents[key].automatic and intents[key].revision != "new"
            outcome = rng.choice(["ready", "flight", "fail"])
            intents[key] = on(key, "new", ready=outcome == "ready", failure="spec.x: bad" if outcome == "fail" else None)
        for key, state in list(intents.items()):  # time passes: some in flight settle
            if state.revision == "new" and not state.ready and state.failure is None and rng.random() < 0.5:
                intents[key] = on(key, "new")
        changing = [s for s in intents.values() if s.revision == "new" and not s.ready and s.failure is None]
        assert len(changing) <= max_in_flight
    for n in manual:
        if n < count:
            assert intents[f"ns/i{n:02d}"].revision == "old"
    final = plan_wave("new", intents.values(), max_in_flight=max_in_flight, max_failures=max_failures)
    failed = sum(1 for s in intents.values() if s.failure is not None)
    assert failed <= max_failures + max_in_flight - 1  # a wave in flight when the limit is reached may add more
    if not final.halted:
        assert final.done or final.in_flight or final.move
