"""Leader election (paved.runtime.leadership) on the real API server: two candidates, one Lease.

Each candidate has its own write fence (paved.fence.WriteFence), so the tests can see which
one may write. Timings are short (lease 3 s, renew deadline 2 s, retry 1 s) to keep the tests
quick; the protocol is the same as with deploy/'s 15/10/2 s.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fixtures.cluster import wait_for

from paved.fence import WriteFence
from paved.runtime.leadership import Elector, LeaseTimings

TIMINGS = LeaseTimings(lease_duration=3, renew_deadline=2.0, retry_period=1.0)


class Candidate:
    def __init__(self, api: Any, namespace: str, lease: str, name: str, on_started: Callable[[], None] | None) -> None:
        self.fence = WriteFence()
        self.fence.arm()
        self.started = threading.Event()
        self.stopped = threading.Event()

        def started() -> None:
            if on_started:
                on_started()
            self.started.set()

        self.elector = Elector(namespace=namespace, name=lease, identity=f"{name}_{uuid.uuid4().hex[:6]}", timings=TIMINGS,
                               fence=self.fence, api_client=api, on_started=started, on_stopped=self.stopped.set)
        self.thread = threading.Thread(target=self.elector.run, daemon=True)

    def start(self) -> Candidate:
        self.thread.start()
        return self


@pytest.fixture
def candidates(kube_admin: Any, namespace: str) -> Iterator[Callable[..., Candidate]]:
    made: list[Candidate] = []
    lease = f"lease-{uuid.uuid4().hex[:6]}"

    def make(name: str, on_started: Callable[[], None] | None = None) -> Candidate:
        candidate = Candidate(kube_admin, namespace, lease, name, on_started).start()
        made.append(candidate)
        return candidate

    yield make
    for candidate in made:
        candidate.elector.release()


def test_one_candidate_leads_and_only_its_fence_is_open(candidates: Callable[..., Candidate]) -> None:
    first = candidates("first")
    wait_for(first.started.is_set, timeout=10, what="the first candidate to lead")
    second = candidates("second")
    time.sleep(3 * TIMINGS.retry_period)
    assert first.elector.leading and first.fence.permits()
    assert not second.started.is_set() and not second.fence.permits()
    assert second.elector.holder() == first.elector.identity


def test_a_released_lease_is_taken_at_once_not_after_its_duration(candidates: Callable[..., Candidate]) -> None:
    first = candidates("first")
    wait_for(first.started.is_set, timeout=10, what="the first candidate to lead")
    second = candidates("second")
    time.sleep(TIMINGS.retry_period)
    assert first.elector.release()
    assert not first.fence.permits()  # closed before the Lease was handed back
    second.elector.nudge()  # what the runtime's watch on the Lease does
    # Within the lease duration: the release handed it over, the Lease did not merely expire.
    wait_for(second.started.is_set, timeout=TIMINGS.lease_duration, interval=0.05, what="the second candidate to lead")
    assert second.fence.permits()


def test_a_leader_that_cannot_renew_closes_its_fence_before_the_lease_can_be_taken(
        candidates: Callable[..., Candidate], monkeypatch: pytest.MonkeyPatch) -> None:
    first = candidates("first")
    wait_for(first.started.is_set, timeout=10, what="the first candidate to lead")
    first_could_write_when_second_started: list[bool] = []
    second = candidates("second", on_started=lambda: first_could_write_when_second_started.append(first.fence.permits()))

    def unreachable() -> bool:
        raise ConnectionError("the API server does not answer")

    # Fault injection, not a fake: the first candidate's own renewals fail as if its network were
    # cut; the Lease, the second candidate and the API server are real.
    monkeypatch.setattr(first.elector._election, "try_acquire_or_renew", unreachable)  # noqa: SLF001 - the network, cut
    wait_for(lambda: not first.fence.permits(), timeout=TIMINGS.renew_deadline + 2, interval=0.02, what="the fence to close")
    wait_for(second.started.is_set, timeout=TIMINGS.lease_duration + 5, interval=0.02, what="the second candidate to lead")
    assert first_could_write_when_second_started == [False]  # never two replicas that may write
    wait_for(first.stopped.is_set, timeout=5, what="on_stopped (the runtime exits there)")
