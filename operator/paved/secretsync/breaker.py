"""A circuit breaker per store: after repeated failures, stop calling the store for a cool-down.

A store that hangs or keeps failing costs its refs nothing more by being asked again and
again, but it costs the operator threads, sockets and time, and it fills logs. So:

- closed: calls go through; FAILURE_THRESHOLD consecutive failed jobs of the store (a
  timeout, an unreachable or failing backend: the engine decides what counts) open it;
- open: nothing calls the store (neither sync jobs nor authentication checks) until the
  cool-down is over; the store's refs say so in their Ready/Stale conditions (reason
  StoreCircuitOpen, with the last failure) and are not due again before the cool-down ends;
- half-open: when the cool-down is over, the next job is let through as the one probe;
  success closes the breaker, failure opens it again for twice as long (at most
  MAX_COOL_DOWN).

A change of the store object resets its breaker (`forget`): a fixed address deserves a try.
No I/O; `now` is the engine's clock in seconds. Thread-safe: store jobs run in parallel.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone

from paved.api.common import now_rfc3339
from paved.secretsync.model import StoreFailure, StoreKey

FAILURE_THRESHOLD = 3
COOL_DOWN = 30.0  # seconds, after the breaker first opens
MAX_COOL_DOWN = 600.0
CIRCUIT_OPEN = "StoreCircuitOpen"


@dataclass
class _Breaker:
    failures: int = 0  # consecutive counted failures
    open_until: float | None = None  # None: closed
    cool_down: float = COOL_DOWN  # the next cool-down
    probing: bool = False  # half-open: the one probe is out
    last: StoreFailure | None = None


@dataclass(frozen=True)
class BreakerState:
    """One store's breaker, for reports: closed, open (until when) or half-open."""

    state: str  # Closed / Open / HalfOpen
    failures: int
    open_until: float | None
    last: StoreFailure | None


def _iso(moment: float) -> str:
    return now_rfc3339(datetime.fromtimestamp(moment, timezone.utc))


class Breakers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._breakers: dict[StoreKey, _Breaker] = {}

    def allow(self, store: StoreKey, now: float) -> StoreFailure | None:
        """None if `store` may be called now (closed, or this is the half-open probe), else the
        refusal to report on its refs instead (reason CIRCUIT_OPEN)."""
        with self._lock:
            breaker = self._breakers.get(store)
            if breaker is None or breaker.open_until is None:
                return None
            if now >= breaker.open_until and not breaker.probing:
                breaker.probing = True
                return None
            return self._refusal(store, breaker, now)

    def refusal(self, store: StoreKey, now: float) -> StoreFailure | None:
        """What allow() would refuse with, without taking the probe (for authentication checks)."""
        with self._lock:
            breaker = self._breakers.get(store)
            if breaker is None or breaker.open_until is None:
                return None
            if now >= breaker.open_until and not breaker.probing:
                return None
            return self._refusal(store, breaker, now)

    def succeeded(self, store: StoreKey) -> None:
        """The store answered: close its breaker."""
        with self._lock:
            self._breakers.pop(store, None)

    def failed(self, store: StoreKey, failure: StoreFailure, now: float) -> bool:
        """A counted failure of a job of `store`; True if this opened (or re-opened) the breaker."""
        with self._lock:
            breaker = self._breakers.setdefault(store, _Breaker())
            breaker.failures += 1
            breaker.last = failure
            if breaker.probing:  # the probe failed: open again, longer
                breaker.probing = False
                breaker.cool_down = min(MAX_COOL_DOWN, breaker.cool_down * 2)
                breaker.open_until = now + breaker.cool_down
                return True
            if breaker.open_until is None and breaker.failures >= FAILURE_THRESHOLD:
                breaker.open_until = now + breaker.cool_down
                return True
            return False

    def release(self, store: StoreKey) -> None:
        """A job let through ended without telling (an unexpected error): free the probe."""
        with self._lock:
            breaker = self._breakers.get(store)
            if breaker is not None:
                breaker.probing = False

    def forget(self, store: StoreKey) -> None:
        """The store object changed: start from closed."""
        with self._lock:
            self._breakers.pop(store, None)

    def state(self, store: StoreKey) -> BreakerState:
        with self._lock:
            breaker = self._breakers.get(store) or _Breaker()
            name = "Closed" if breaker.open_until is None else "HalfOpen" if breaker.probing else "Open"
            return BreakerState(name, breaker.failures, breaker.open_until, breaker.last)

    def open_count(self) -> int:
        """Stores whose breaker is open or half-open (the gauge paved_secret_stores_circuit_open)."""
        with self._lock:
            return sum(1 for breaker in self._breakers.values() if breaker.open_until is not None)

    @staticmethod
    def _refusal(store: StoreKey, breaker: _Breaker, now: float) -> StoreFailure:
        assert breaker.open_until is not None  # noqa: S101
        last = f"; the last: {breaker.last.reason}: {breaker.last.message}" if breaker.last else ""
        when = "after the probe under way" if breaker.probing else f"at {_iso(max(now, breaker.open_until))}"
        return StoreFailure(
            CIRCUIT_OPEN,
            f"{store} is not called for now: {breaker.failures} consecutive failures{last}; next attempt {when}",
        )

    def retry_at(self, store: StoreKey) -> float | None:
        """When the store's refs should come back (the end of the cool-down), None if closed."""
        with self._lock:
            breaker = self._breakers.get(store)
            return breaker.open_until if breaker is not None else None
