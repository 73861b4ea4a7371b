"""One rollout's notifications, sent one after another in the order decided.

A chat channel must show a rollout's transitions in the order they happened, yet sending
must never hold up a tick: the jobs of one `Outbox` run one at a time on the engine's
notification pool (no thread of their own, and not the pool ticks read with, so receivers that
hang cannot stall other rollouts' ticks), and a rollout that has nothing to send costs nothing.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor

log = logging.getLogger(__name__)

CAPACITY = 32
"""Jobs waiting at most (a receiver that hangs until each timeout); more are dropped and logged."""


class Outbox:
    def __init__(self, pool: Executor, capacity: int = CAPACITY) -> None:
        self._pool = pool
        self._capacity = capacity
        self._jobs: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._draining = False

    def put(self, job: Callable[[], None], what: str) -> None:
        """Run `job` after every job put before it; it must not raise."""
        with self._lock:
            if len(self._jobs) >= self._capacity:
                log.warning("%s dropped: %d notifications are waiting already", what, len(self._jobs))
                return
            self._jobs.append(job)
            if self._draining:
                return
            self._draining = True
        self._pool.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._draining = False
                    return
                job = self._jobs.popleft()
            job()
