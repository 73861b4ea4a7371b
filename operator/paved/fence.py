"""The write fence: a replica changes nothing outside while it is not surely the leader.

Every outbound call that changes something, or that only the leader makes, asks
`WRITES.permits()` first: Kubernetes requests other than reads (paved.kube.client), Kopf's
own patches and Events (paved.runtime wraps Kopf's request function), every AWS call
(paved.providers.aws.session), every Vault call, rollout webhooks. A call that is not
permitted is not sent; the caller sees its layer's usual error with reason `NotLeader`.

The leader election (paved.runtime.leadership) opens the fence until `renew_deadline`
seconds after the *start* of each successful renewal, by the monotonic clock. No other
replica can take the Lease before `lease_duration` seconds have passed since that renewal
was written, which is after it started, so the fence closes first, by itself: when
renewals stop succeeding, when the elector's thread hangs on a dead connection, and when
the process wakes from a SIGSTOP longer than the deadline (CLOCK_MONOTONIC runs on while a
process is stopped). A call already sent when the fence closes is not recalled; that window
is one request, as in client-go.

A process that does not elect (unit tests, `paved render`, benchmarks driving engines
directly, `paved run --leader-election=false`) never arms the fence, and it stays open.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from paved.metrics import WRITES_FENCED

REASON = "NotLeader"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class WriteFence:
    """Open (unarmed) until `arm()`; then open only until the deadline the elector last set."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._armed = False
        self._until = -math.inf

    def arm(self) -> None:
        """Closed from now on, until `open_until` (a process that takes part in an election)."""
        with self._lock:
            self._armed, self._until = True, -math.inf

    def open_until(self, deadline: float) -> None:
        """Permit calls until `deadline` (a reading of the same monotonic clock)."""
        with self._lock:
            self._until = deadline

    def close(self) -> None:
        with self._lock:
            self._until = -math.inf

    @property
    def armed(self) -> bool:
        return self._armed

    def permits(self) -> bool:
        if not self._armed or self._clock() < self._until:
            return True
        WRITES_FENCED.inc()
        return False

    def why_not(self) -> str:
        return "this replica is not the leader (or could not renew its Lease in time); nothing was sent"


WRITES = WriteFence()  # the process's one fence (one process, one Lease)
