"""Rollout notifications: which transitions notify, with which key, and only once.

The core is driven on synthetic time (`simulate`, with operator crashes half-way through a
decision's actions); the sender is driven against a loopback receiver.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from typing import Any

import pytest

from paved.dev.apps.loopback import answering
from paved.engines.rollout.engine import READ_WORKERS, RolloutEngine
from paved.engines.rollout.outbox import Outbox
from paved.engines.rollout.runner import RolloutRunner, endpoint_problems
from paved.providers import egress as egresses
from paved.providers.base import Owner
from paved.providers.webhooks import KEY_HEADER, RolloutRef, WebhookCaller
from paved.rollout import CommandKind, Decision, Event, Notify, WebhookResult, decide, validate_spec
from paved.rollout.simulate import Sample, Scenario, SimulationResult, example_spec, simulate

HEALTHY = {"success-rate": lambda t, weight: Sample(0.99, 600)}
BROKEN = {"success-rate": lambda t, weight: Sample(0.10, 600)}
ALL = ["Started", "StepStarted", "Paused", "Promoted", "RolledBack"]


def spec(events: list[str] | None = None, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    notification: dict[str, Any] = {"url": "http://chat.example/hook"}
    if events is not None:
        notification["events"] = events
    return example_spec(steps=steps or [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}],
                        notifications=[notification])


def sent(result: SimulationResult) -> list[Notify]:
    return [action for _, action in result.actions(Notify)]


def promoted(**scenario: Any) -> SimulationResult:
    """A healthy rollout that waits at its indefinite pause until promoted at t = 120."""
    result = simulate(spec(), Scenario(metrics=HEALTHY, commands={120.0: CommandKind.PROMOTE}, **scenario))
    assert result.phase == "Succeeded"
    return result


def test_a_promoted_rollout_notifies_each_transition_once_with_its_events_message() -> None:
    result = promoted()
    notes = sent(result)
    assert [(n.event, n.step_index) for n in notes] == [
        ("Started", 0), ("StepStarted", 0), ("StepStarted", 1), ("Paused", 1), ("StepStarted", 2),
        ("StepStarted", 3), ("Promoted", 3)]
    assert len({n.key for n in notes}) == len(notes)
    assert all(n.revision == "v2" and n.url == "http://chat.example/hook" and n.timeout_seconds == 5 for n in notes)
    # Each says what the transition's Event says, sent in the same decision.
    events = {(tick.t, a.message) for tick in result.ticks for a in tick.decision.actions if isinstance(a, Event)}
    assert all((t, n.text) in events for t, n in result.actions(Notify))
    assert notes[-1].text.startswith("promoted revision v2")


def test_operator_crashes_half_way_through_the_actions_send_nothing_twice() -> None:
    calm = sent(promoted())
    crashing = sent(promoted(restarts=(0.0, 1.0, 2.0, 30.0, 121.0, 125.0)))
    # A crash can lose a notification (status says the transition happened), never repeat one.
    assert len({n.key for n in crashing}) == len(crashing)
    assert {n.key for n in crashing} <= {n.key for n in calm}


def test_a_rollback_notifies_rolled_back_and_events_filter() -> None:
    result = simulate(spec(events=["RolledBack"]), Scenario(metrics=BROKEN))
    assert result.phase == "RolledBack"
    [note] = sent(result)
    assert (note.event, note.key) == ("RolledBack", "v2/1/rollback/notification/0")
    assert note.text.startswith("rolled back at step 1 (20%): success-rate")


def test_the_key_is_stable_when_a_decision_is_repeated_and_idempotent_on_its_own_status() -> None:
    result = promoted()
    for tick in result.ticks:
        notes = [a for a in tick.decision.actions if isinstance(a, Notify)]
        if not notes:
            continue
        # The status write was lost: the same transition is decided again, with the same keys.
        again = decide(spec(), tick.status_before, tick.observation, _moment(tick.observation))
        assert [a for a in again.actions if isinstance(a, Notify)] == notes
        # The status was written: deciding again asks for no notification.
        after = decide(spec(), tick.decision.status, tick.observation, _moment(tick.observation))
        assert not [a for a in after.actions if isinstance(a, Notify)]
    keys = [n.key for n in sent(result)]
    assert keys[:3] == ["v2/1/started/notification/0", "v2/1/step0/notification/0", "v2/1/step1/notification/0"]


def _moment(observation: Any) -> Any:
    return observation.observed_at


def test_a_retried_revision_notifies_again_under_new_keys() -> None:
    result = simulate(spec(events=["Started"]), Scenario(metrics=BROKEN, commands={200.0: CommandKind.RETRY},
                                                         until=260.0, stop_when_idle=False))
    assert [n.key for n in sent(result)] == ["v2/1/started/notification/0", "v2/2/started/notification/0"]


def test_timeouts_are_bounded_and_urls_follow_the_endpoint_rules() -> None:
    problems = validate_spec({**spec(), "notifications": [{"url": "http://chat/", "timeout": "31s"},
                                                          {"url": "http://chat/", "timeout": "0s"}]})
    assert [(p.path, p.message) for p in problems] == [
        ("spec.notifications[0].timeout", "must be at most 30s"), ("spec.notifications[1].timeout", "must be longer than 0s")]
    problems = endpoint_problems("shop", {"notifications": [{"url": "http://169.254.169.254/latest"}]}, egresses.STRICT)
    assert [p.path for p in problems] == ["spec.notifications[0].url"]


# -- sending -------------------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.status = 200
        self.calls: list[tuple[str | None, dict[str, Any]]] = []
        self.loopback = answering(self.answer).start()

    def answer(self, path: str, headers: Message, body: bytes) -> tuple[int, None]:
        self.calls.append((headers.get(KEY_HEADER), json.loads(body)))
        return self.status, None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.loopback.stop()


def note(url: str, key: str = "v2/1/step1/notification/0") -> Notify:
    return Notify(0, url, 2.0, key, "StepStarted", "step 2/4 (20%): setWeight 20", "v2", 1, 20)


def test_the_body_is_slack_compatible_and_carries_the_key(receiver: Receiver) -> None:
    result = WebhookCaller().notify(RolloutRef("shop", "checkout"), note(receiver.loopback.url))
    assert result == WebhookResult(True, "HTTP 200")
    [(key, body)] = receiver.calls
    assert key == "v2/1/step1/notification/0"
    assert body == {"text": "ProgressiveRollout shop/checkout: step 2/4 (20%): setWeight 20", "event": "StepStarted",
                    "name": "checkout", "namespace": "shop", "revision": "v2", "stepIndex": 1, "canaryWeight": 20,
                    "key": key}


class Recorder(RolloutRunner):
    def __init__(self) -> None:
        super().__init__("shop", "checkout", "uid")
        self.posted: list[Event] = []

    def post(self, owner: Owner, event: Event) -> None:
        self.posted.append(event)


def test_a_failed_notification_is_a_warning_naming_the_field_sent_once(receiver: Receiver) -> None:
    receiver.status = 503
    runner = Recorder()
    owner = Owner("paved.dev/v1alpha1", "ProgressiveRollout", "checkout", "shop", "uid", 1)
    action = note(receiver.loopback.url + "/secret-token")
    decision = Decision((action, action), {})
    for _ in range(2):  # the same decision twice (e.g. a tick retried after a failed action)
        assert runner._execute(decision, owner, {}, None, None, egresses.STRICT) is None  # type: ignore[arg-type]
    runner.notifications.shutdown(wait=True)
    runner.reads.shutdown(wait=True)
    assert len(receiver.calls) == 1
    [warning] = runner.posted
    assert warning == Event("NotificationFailed", "spec.notifications[0].url: StepStarted notification not delivered: "
                                                  "HTTP 503", warning=True)
    assert "secret-token" not in warning.message


class Broken(WebhookCaller):
    def notify(self, rollout: RolloutRef, action: Notify, egress: Any = None) -> WebhookResult:
        raise RuntimeError("token=hunter2")


def test_a_notification_that_cannot_be_sent_never_raises_and_is_logged_by_type(caplog: pytest.LogCaptureFixture) -> None:
    runner = Recorder()
    runner.webhooks = Broken()
    runner.notify(Owner("paved.dev/v1alpha1", "ProgressiveRollout", "checkout", "shop", "uid", 1), note("http://x/"),
                  egresses.STRICT)
    assert runner.posted == []
    assert "RuntimeError" in caplog.text and "hunter2" not in caplog.text


def test_one_rollouts_notifications_go_out_in_order_on_a_shared_pool() -> None:
    pool = ThreadPoolExecutor(max_workers=4)
    outbox, done = Outbox(pool, capacity=8), []
    started, release = threading.Event(), threading.Event()

    def first() -> None:
        started.set()
        release.wait(5)
        done.append(0)

    outbox.put(first, "job 0")
    assert started.wait(5)
    for index in range(1, 10):  # 8 wait behind the first; the last finds the outbox full
        outbox.put(functools.partial(lambda i: (time.sleep(0.01 * (i % 3)), done.append(i)), index), f"job {index}")
    release.set()
    pool.shutdown(wait=True)
    assert done == list(range(9))


def test_receivers_that_hang_never_take_the_workers_ticks_read_with() -> None:
    engine = RolloutEngine()
    release = threading.Event()
    try:
        # More rollouts than there are read workers, each with a notification that hangs.
        for index in range(READ_WORKERS + 2):
            runner = engine.runner("shop", f"checkout-{index}", f"uid-{index}")
            runner.outbox.put(lambda: release.wait(10), f"hanging notification {index}")
        assert engine.reads.submit(lambda: "read").result(timeout=2) == "read"
    finally:
        release.set()
        engine.stop()
