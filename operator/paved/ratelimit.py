"""Background writers that must yield to reconciles: a token bucket and a pressure flag.

Work that is useful but not urgent is written at most `rate` per second after a `burst`:
the secret engine's Events always, the policy audit's condition while a reconciler holds
BURST. A handful of objects see no delay, while a burst of thousands (a cold start, a
GitOps sync of a whole cluster) leaves the API server to the writes that make objects
Ready. The same reasoning as client-go's client-side QPS limits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class TokenBucket:
    """`take()` blocks until a token is free; `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate, self.burst = rate, burst
        self._clock, self._sleep = clock, sleep
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token, waiting for it if need be; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait:
            self._sleep(wait)
        return wait


class Pressure:
    """Whether some reconciler is working through a burst right now (a count of holders).

    A background writer checks it and takes from its TokenBucket only while it is set: at
    full speed when the operator is otherwise quiet (a policy change re-audits a thousand
    intents in seconds), yielding while thousands of objects wait to become Ready.
    """

    def __init__(self) -> None:
        self._holders = 0
        self._lock = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1

    def active(self) -> bool:
        return self._holders > 0


# Held by the secret engine while it writes a large cycle (paved.engines.secretsync), and by
# every composed reconcile while it runs (paved.engines.compose): a handful of reconciles is
# within the audit's burst allowance, a cold start of thousands is not.
BURST = Pressure()
