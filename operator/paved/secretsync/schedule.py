"""When each ref is due: a per-store jittered grid, restart spreading, and error backoff.

Batching only pays when the refs that share remote keys are due together, so refreshes are
not scheduled per ref. Every ref of store S with interval I refreshes on the grid
`k * I + phase(S, I)`, where the phase is a hash of the store (in whole milliseconds,
modulo I). Consequences, all deliberate:

- refs of one store and one interval are due at the same instant, so one cycle reads each of
  their remote keys once;
- intervals that divide each other share grid points (phase mod 15m of the 1h grid equals the
  15m phase), so a 15m ref and a 1h ref on the same store batch every hour;
- different stores have different phases: load is spread, not synchronised cluster-wide;
- the grid is a function of the store and the clock only, so an operator restart does not
  move it; refs that became overdue while the operator was down are due at their store's
  next point on a `RESUME_WINDOW` grid: one instant per store, different stores at
  different instants, never all at once, and never one cycle per resumed ref (Kopf resumes
  thousands of refs over many seconds);
- after a refresh the next is the store's next grid point, unless the refresh ran more than
  half an interval late (a new leader's first cycle slowed by its start-up, a slow store): then
  the first grid point at least half an interval away, so a key is not read again a moment
  later. Refreshes taken from the grid are therefore between half an interval and one and a
  half intervals apart (exactly one when cycles run on time); a first sync, immediate and off
  the grid, is followed by the next grid point.

The first sync of a new or changed ref is immediate (it does not wait for the grid).
Failures retry with tenacity's exponential backoff with full jitter, capped well below the
interval (`retry_cap`), so a flapping backend gets a few quick retries, not a hot loop.
"""

from __future__ import annotations

import hashlib
import math

import tenacity

from paved.secretsync.model import StoreKey

RESUME_WINDOW = 60.0  # seconds over which refs overdue after a restart are spread
MAX_RETRY_DELAY = 300.0
MIN_RETRY_DELAY = 1.0
NEVER = math.inf


def _store_hash(store: StoreKey) -> int:
    return int.from_bytes(hashlib.sha256(str(store).encode()).digest()[:8], "big")


def phase(store: StoreKey, interval: float) -> float:
    """The store's offset on the grid of `interval` seconds, in [0, interval)."""
    period_ms = max(1, round(interval * 1000))
    return (_store_hash(store) % period_ms) / 1000.0


def next_due(after: float, interval: float, store: StoreKey) -> float:
    """The first grid point of (store, interval) strictly after `after` (NEVER for interval 0)."""
    if interval <= 0:
        return NEVER
    offset = phase(store, interval)
    k = math.floor((after - offset) / interval) + 1
    due = k * interval + offset
    while due <= after:  # float rounding
        due += interval
    return due


def after_refresh(due: float, now: float, interval: float, store: StoreKey) -> float:
    """Due time of a ref that was due at `due` and refreshed at `now` (NEVER for interval 0):
    the next grid point, or, after a refresh more than half an interval late, the first grid
    point at least half an interval away."""
    if now - due > interval / 2:
        return next_due(now + interval / 2, interval, store)
    return next_due(now, interval, store)


def resume_due(last_refresh: float | None, now: float, interval: float, store: StoreKey) -> float:
    """Due time of a ref found at start-up (or re-registered) with its status' lastRefreshTime."""
    if last_refresh is None:
        return now
    if interval <= 0:
        return NEVER
    due = next_due(last_refresh, interval, store)
    if due > now:
        return due
    # A grid point, not now + phase: refs of one store resumed a few seconds apart stay in one batch.
    return next_due(now, min(interval, RESUME_WINDOW), store)


def retry_cap(interval: float) -> float:
    """Longest wait between retries of a failing ref: a quarter of its interval, at most 5 min."""
    if interval <= 0:
        return MAX_RETRY_DELAY
    return max(MIN_RETRY_DELAY, min(MAX_RETRY_DELAY, interval / 4))


_RETRYING = tenacity.Retrying()


def retry_delay(attempt: int, interval: float) -> float:
    """Seconds before retry number `attempt` (1-based): exponential with full jitter (tenacity)."""
    wait = tenacity.wait_random_exponential(multiplier=MIN_RETRY_DELAY, min=MIN_RETRY_DELAY, max=retry_cap(interval))
    state = tenacity.RetryCallState(retry_object=_RETRYING, fn=None, args=(), kwargs={})
    state.attempt_number = max(1, attempt)
    return float(wait(state))


def store_check_due(ready: bool, last_check: float | None, now: float, interval: float, failed_interval: float) -> bool:
    """Whether a store's authentication check is due again: every `interval` while it is Ready,
    every `failed_interval` while it is not, so a fix made outside the store (its namespace
    labelled for ServiceAccount tokens, a Vault role created) shows within that rather than
    at the next full interval. A store never checked is due."""
    if last_check is None:
        return True
    return now - last_check >= (interval if ready else failed_interval)
