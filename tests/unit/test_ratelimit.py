"""paved.ratelimit.TokenBucket and the EventRecorder built on it (no I/O: a fake clock and poster)."""

from __future__ import annotations

import threading

import pytest

from paved import metrics
from paved.kube.events import EventRecorder
from paved.providers.base import Owner
from paved.ratelimit import Pressure, TokenBucket

OWNER = Owner(api_version="paved.dev/v1alpha1", kind="ExternalSecretRef", name="ref", namespace="team-a", uid="uid-1", generation=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_burst_is_free_then_takers_wait_one_interval_each() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock, sleep=clock.sleep)
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    assert bucket.take() == pytest.approx(0.1)
    assert bucket.take() == pytest.approx(0.1)
    assert clock.slept == pytest.approx([0.1, 0.1])


def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=2, clock=clock, sleep=clock.sleep)
    bucket.take(), bucket.take()
    clock.now += 60  # a minute idle saves up 2 tokens, not 600
    assert [bucket.take() for _ in range(2)] == [0, 0]
    assert bucket.take() == pytest.approx(0.1)


def test_a_bucket_needs_a_positive_rate_and_burst() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0)


def test_the_recorder_posts_in_order_off_the_callers_thread() -> None:
    posted: list[tuple[str, str]] = []
    done = threading.Event()
    callers = {threading.get_ident()}

    def post(owner: Owner, reason: str, message: str, type: str) -> None:
        assert threading.get_ident() not in callers, "Events are posted by the recorder's own thread"
        posted.append((reason, type))
        if len(posted) == 3:
            done.set()

    recorder = EventRecorder(post, rate=1000, burst=10)
    recorder.record(OWNER, "SecretSynced", "wrote Secret ref")
    recorder.record(OWNER, "SyncFailed", "spec.data[0]: ...", "Warning")
    recorder.record(OWNER, "Synced", "ok")
    assert done.wait(5)
    assert posted == [("SecretSynced", "Normal"), ("SyncFailed", "Warning"), ("Synced", "Normal")]


def test_a_full_recorder_drops_and_counts_instead_of_blocking() -> None:
    release = threading.Event()
    started = threading.Event()

    def post(*_: object) -> None:
        started.set()
        release.wait(5)

    recorder = EventRecorder(post, rate=1000, burst=10, capacity=2)
    before = metrics.EVENTS_DROPPED._value.get()
    recorder.record(OWNER, "A", "")  # taken by the thread, which then blocks in post
    assert started.wait(5)
    for reason in "BCD":
        recorder.record(OWNER, reason, "")
    assert recorder.pending() == 2
    assert metrics.EVENTS_DROPPED._value.get() == before + 1
    release.set()


def test_a_failing_post_does_not_stop_the_recorder() -> None:
    posted: list[str] = []
    done = threading.Event()

    def post(owner: Owner, reason: str, *_: object) -> None:
        if reason == "bad":
            raise RuntimeError("boom")
        posted.append(reason)
        done.set()

    recorder = EventRecorder(post, rate=1000, burst=10)
    recorder.record(OWNER, "bad", "")
    recorder.record(OWNER, "good", "")
    assert done.wait(5)
    assert posted == ["good"]


def test_pressure_is_active_while_any_holder_holds_it() -> None:
    pressure = Pressure()
    assert not pressure.active()
    with pressure.held():
        with pressure.held():
            assert pressure.active()
        assert pressure.active()
    assert not pressure.active()
    with pytest.raises(RuntimeError), pressure.held():
        raise RuntimeError("a failed cycle")
    assert not pressure.active()
