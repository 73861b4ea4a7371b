"""The engine's memory: registered refs, their due times, and the value cache. No I/O.

Kopf handler threads register and unregister refs; the engine's loop takes the due ones of
every store that has no job under way, and each store's job completes its refs (jobs of
different stores run in parallel). One lock guards everything (operations are O(refs) at
worst and never wait on I/O while holding it).

The value cache holds the last fetched value of each (store, remote key) at its version, so
a new ref that shares a key with others, or a ref whose spec changed, renders without asking
the store for values again. Entries no ref uses any more are evicted after each cycle. The
cache is process memory only: after a restart, refs whose sourceVersions still match the
store's versions need no values at all (see plan.needs_values), so a restart costs version
look-ups, not value reads.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from paved.api.common import parse_rfc3339
from paved.secretsync import schedule
from paved.secretsync.model import RefSpec, RemoteKey, RemoteValue, StoreKey
from paved.secretsync.plan import Decision, RefMemory


@dataclass
class _Entry:
    memory: RefMemory
    due: float
    attempt: int = 0  # consecutive failed cycles
    inflight: bool = False
    dirty: bool = False  # re-registered or repaired while in flight: due again at once after


def parse_time(text: str | None) -> float | None:
    """An RFC 3339 status field as epoch seconds (the engine's clock), None when absent."""
    moment = parse_rfc3339(text)
    return moment.timestamp() if moment else None


class SyncState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[str, _Entry] = {}
        self._cache: dict[tuple[StoreKey, RemoteKey], RemoteValue] = {}

    # --- registration (Kopf handler threads) -------------------------------------------

    def register(self, spec: RefSpec, status: Mapping[str, Any] | None, now: float) -> float:
        """Add or update a ref; return its due time.

        A ref seen for the first time is due at once unless it already synced this generation
        (a restart finds it so): then it keeps its place on the grid, judged from
        status.lastRefreshTime, so a restart is not a refresh storm. A known ref whose spec
        changed is due at once.
        """
        with self._lock:
            entry = self._refs.get(spec.uid)
            if entry is not None:
                if entry.memory.spec != spec:
                    entry.memory.spec = spec
                    entry.due = now
                    entry.attempt = 0
                    entry.dirty = entry.inflight
                return entry.due
            memory = RefMemory.from_status(spec, status)
            if not memory.settled:
                due = now
            else:
                last = parse_time((status or {}).get("lastRefreshTime"))
                due = schedule.resume_due(last, now, spec.interval, spec.store)
            self._refs[spec.uid] = _Entry(memory, due)
            return due

    def knows(self, uid: str, generation: int) -> bool:
        """Registered at this generation (a status or metadata change of the ref needs nothing)."""
        with self._lock:
            entry = self._refs.get(uid)
            return entry is not None and entry.memory.spec.generation == generation

    def unregister(self, uid: str) -> None:
        with self._lock:
            self._refs.pop(uid, None)

    def mark_repair(self, uid: str, now: float) -> bool:
        """The ref's Secret drifted or vanished: rewrite it at once. False if unknown."""
        with self._lock:
            entry = self._refs.get(uid)
            if entry is None:
                return False
            entry.memory.repair = True
            entry.due = min(entry.due, now)
            entry.dirty = entry.inflight
            return True

    def store_changed(self, store: StoreKey, now: float) -> int:
        """A store appeared, changed or vanished: its refs are due at once. Returns how many."""
        with self._lock:
            count = 0
            for entry in self._refs.values():
                if entry.memory.spec.store == store:
                    entry.due = min(entry.due, now)
                    entry.attempt = 0
                    entry.dirty = entry.inflight
                    count += 1
            return count

    # --- the engine thread --------------------------------------------------------------

    def next_due(self, busy: Collection[StoreKey] = ()) -> float:
        """The earliest due time of a ref not in flight, ignoring the stores in `busy` (a job of
        theirs is under way: their refs are taken when it ends)."""
        with self._lock:
            return min((e.due for e in self._refs.values() if not e.inflight and e.memory.spec.store not in busy),
                       default=schedule.NEVER)

    def take_due(self, now: float, busy: Collection[StoreKey] = ()) -> list[RefMemory]:
        """Refs due at `now` of stores not in `busy`, marked in flight (a snapshot of their memory each)."""
        with self._lock:
            taken = []
            for entry in self._refs.values():
                if not entry.inflight and entry.due <= now and entry.memory.spec.store not in busy:
                    entry.inflight = True
                    entry.dirty = False
                    memory = entry.memory
                    taken.append(
                        replace(
                            memory,
                            source_versions=dict(memory.source_versions),
                            missing_since=dict(memory.missing_since),
                            status=dict(memory.status),
                        )
                    )
            return taken

    def overdue(self, taken: Iterable[RefMemory], now: float) -> list[float]:
        """How late each taken ref is at `now` (seconds past its due time; the lateness metric)."""
        with self._lock:
            return [max(0.0, now - entry.due) for memory in taken
                    if (entry := self._refs.get(memory.spec.uid)) is not None and entry.inflight]

    def complete(self, taken: RefMemory, decision: Decision, status: Mapping[str, Any], now: float) -> float | None:
        """Record a cycle's outcome for a ref and schedule it; returns its next due time.

        If the ref was re-registered with another spec (or removed) while in flight, the
        outcome is still recorded for what it wrote, but the ref is due again at once.
        """
        with self._lock:
            entry = self._refs.get(taken.spec.uid)
            if entry is None:
                return None
            memory = entry.memory
            memory.status = dict(status)
            if decision.missing_since is not None:
                memory.missing_since = dict(decision.missing_since)
                memory.missing_basis = decision.missing_basis
            if decision.touches_secret:
                memory.content_hash = decision.content_hash
                memory.repair = False
            if decision.success:
                memory.synced_generation = taken.spec.generation
                memory.source_versions = dict(decision.source_versions)
                memory.content_hash = decision.content_hash
                memory.repair = False
            interval = memory.spec.interval
            if decision.success or not decision.retry:
                entry.attempt = 0 if decision.success else entry.attempt
                entry.due = schedule.after_refresh(entry.due, now, interval, memory.spec.store)
            else:
                entry.attempt += 1
                entry.due = now + schedule.retry_delay(entry.attempt, interval)
            if decision.retry_at is not None:
                entry.due = max(entry.due, decision.retry_at)
            if entry.dirty or memory.spec != taken.spec:
                entry.due = now
            entry.inflight = False
            entry.dirty = False
            return entry.due

    def release(self, taken: Iterable[RefMemory], delay: float, now: float) -> None:
        """Give back refs taken but not processed (engine stopping, unexpected error)."""
        with self._lock:
            for memory in taken:
                entry = self._refs.get(memory.spec.uid)
                if entry is not None and entry.inflight:
                    entry.inflight = False
                    entry.due = now + delay

    # --- the value cache ----------------------------------------------------------------

    def cached(self, store: StoreKey, keys: Iterable[RemoteKey]) -> dict[RemoteKey, RemoteValue]:
        with self._lock:
            return {key: self._cache[(store, key)] for key in keys if (store, key) in self._cache}

    def remember(self, store: StoreKey, values: Mapping[RemoteKey, Any]) -> None:
        with self._lock:
            for key, value in values.items():
                if isinstance(value, RemoteValue):
                    self._cache[(store, key)] = value
                else:
                    self._cache.pop((store, key), None)

    def forget_store(self, store: StoreKey) -> None:
        with self._lock:
            for cache_key in [k for k in self._cache if k[0] == store]:
                del self._cache[cache_key]

    def evict(self) -> int:
        """Drop cached values no registered ref reads any more; returns how many."""
        with self._lock:
            used = {(e.memory.spec.store, key) for e in self._refs.values() for key in e.memory.spec.remote_keys}
            stale = [k for k in self._cache if k not in used]
            for cache_key in stale:
                del self._cache[cache_key]
            return len(stale)

    # --- queries ------------------------------------------------------------------------

    def hashes(self, namespace: str) -> dict[str, str]:
        """Target Secret name -> content hash, for the refs of `namespace`."""
        with self._lock:
            return {
                e.memory.spec.target.name: e.memory.content_hash
                for e in self._refs.values()
                if e.memory.spec.namespace == namespace and e.memory.content_hash
            }

    def uid_for_target(self, namespace: str, secret: str) -> list[str]:
        with self._lock:
            return [
                uid
                for uid, e in self._refs.items()
                if e.memory.spec.namespace == namespace and e.memory.spec.target.name == secret
            ]

    def memory(self, uid: str) -> RefMemory | None:
        with self._lock:
            entry = self._refs.get(uid)
            return entry.memory if entry else None
