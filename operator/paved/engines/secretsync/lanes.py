"""Store lanes: at most one job per store at a time, jobs of different stores in parallel.

The secret engine's loop hands the due refs of each store to that store's lane as one job
(read the store, decide, write the Secrets) and goes back to its schedule at once; jobs run
on a bounded pool of threads. A store whose backend hangs keeps its own lane busy, for at
most its deadline (paved.providers.deadline), and nobody else's: the refs of other stores
are taken and synced on time, while the hung store's refs that fall due meanwhile stay
where they are until its job ends (SyncState.take_due(busy=...)), so they are never queued
twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from paved.secretsync.model import StoreKey

T = TypeVar("T")


class LaneBusy(RuntimeError):
    """A job was submitted for a store whose previous job has not ended."""


class StoreLanes:
    def __init__(self, workers: int, *, on_done: Callable[[StoreKey], None] = lambda _: None) -> None:
        self.workers = workers
        self._on_done = on_done
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy: set[StoreKey] = set()
        self._pool: ThreadPoolExecutor | None = None

    def busy(self) -> frozenset[StoreKey]:
        """Stores with a job queued or running."""
        with self._lock:
            return frozenset(self._busy)

    def submit(self, store: StoreKey, job: Callable[[], T]) -> Future[T]:
        """Run `job` on the pool as `store`'s one job; LaneBusy if it already has one."""
        with self._lock:
            if store in self._busy:
                raise LaneBusy(str(store))
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="paved-secret-store")
            self._busy.add(store)
            pool = self._pool
        try:
            future = pool.submit(job)
        except BaseException:
            self._done(store)
            raise
        future.add_done_callback(lambda _: self._done(store))
        return future

    def _done(self, store: StoreKey) -> None:
        with self._lock:
            self._busy.discard(store)
            self._idle.notify_all()
        self._on_done(store)

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every lane to be idle; True if they are."""
        end = time.monotonic() + timeout
        with self._lock:
            while self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return True

    def shutdown(self, timeout: float) -> bool:
        """Cancel queued jobs, wait up to `timeout` for running ones; True if all ended."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        return self.drain(timeout)
