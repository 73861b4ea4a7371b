"""A deadline for all the provider calls made inside a block: `with within(30): ...`.

The secret engine bounds the whole work of one store in one cycle (every version look-up,
value read, login and retry) so that a store that hangs costs its own refs a bounded wait
and nobody else anything. The providers consult the deadline of the calling thread:

- `timeout(t)` caps a request's own timeout to the time left (requests / hvac), and
  raises `DeadlineExceeded` if none is left, before anything is sent;
- `remaining()` tells a retry loop how long it may still wait (tenacity);
- without a deadline, nothing changes: every call keeps its own timeout.

A context variable, so each thread (and each store job) has its own; blocks nest, and an
inner deadline never extends an outer one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import tenacity

from paved.providers.base import ProviderError

# (monotonic end, the seconds it was set for) of the innermost deadline; None: no deadline
_DEADLINE: ContextVar[tuple[float, float] | None] = ContextVar("paved_provider_deadline", default=None)
MIN_REQUEST_TIMEOUT = 0.1  # a request with less time than this left is not sent at all

Timeout = float | tuple[float, float]


class DeadlineExceeded(ProviderError):
    """The block's deadline passed before (or while) a provider call could be made."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within the {seconds:g}s this work may take", retryable=True)
        self.seconds = seconds


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Every provider call in the block must finish within `seconds` from now (or an
    enclosing block's deadline, whichever is sooner)."""
    end = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(outer if outer is not None and outer[0] <= end else (end, seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds left before the deadline (may be negative), None without a deadline."""
    current = _DEADLINE.get()
    return None if current is None else current[0] - time.monotonic()


def check() -> None:
    """Raise DeadlineExceeded if the deadline is (nearly) over."""
    current = _DEADLINE.get()
    if current is not None and current[0] - time.monotonic() < MIN_REQUEST_TIMEOUT:
        raise DeadlineExceeded(current[1])


def timeout(own: Timeout | None) -> Timeout | None:
    """A request's timeout (seconds, or requests' (connect, read)) capped to the time left;
    DeadlineExceeded if too little is left to send it."""
    check()
    left = remaining()
    if left is None:
        return own
    if own is None:
        return left
    if isinstance(own, tuple):
        return (min(own[0], left), min(own[1], left))
    return min(own, left)


# --- for tenacity retry loops -------------------------------------------------------------------


class _StopAtDeadline(tenacity.stop.stop_base):
    """A tenacity stop condition: no further attempt once the deadline is (nearly) over."""

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        left = remaining()
        return left is not None and left < MIN_REQUEST_TIMEOUT


stop_at_deadline = _StopAtDeadline()


def wait_within(wait: Callable[[Any], float]) -> Callable[[Any], float]:
    """A tenacity wait that never sleeps past the deadline."""

    def capped(retry_state: Any) -> float:
        seconds = wait(retry_state)
        left = remaining()
        return seconds if left is None else max(0.0, min(seconds, left))

    return capped
