"""The missing-key rule: act on a vanished remote key only when two consecutive cycles agree.

A key that a store reports missing once may be a glitch (eventual consistency, a secret
being re-created, a path typo fixed a minute later). The first confirmed-missing cycle only
records `missingSince[key]` and leaves the Secret alone; the next cycle of the same ref that
still finds it missing confirms it, and only then does the deletionPolicy apply. A key seen
again in between is forgiven. `missingSince` lives in the ref's status, so the rule survives
operator restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class MissingVerdict:
    missing_since: dict[str, str]  # key label -> first seen missing (the new status field)
    pending: frozenset[str]  # missing for the first time: wait
    confirmed: frozenset[str]  # missing on two consecutive cycles: act per deletionPolicy


def judge(previous: Mapping[str, str], missing_now: Iterable[str], now: str) -> MissingVerdict:
    """Combine the previous `missingSince` with this cycle's missing key labels."""
    current = set(missing_now)
    since = {label: previous.get(label, now) for label in sorted(current)}
    confirmed = frozenset(label for label in current if label in previous)
    return MissingVerdict(since, frozenset(current - confirmed), confirmed)
