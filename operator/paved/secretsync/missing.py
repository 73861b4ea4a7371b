"""The missing-key rule: act on a vanished remote key only when the store said so, key by key,
on two refreshes at least a grace period apart, about the same ref and the same store.

What counts as an observation is the providers' business: they report `Missing` only for an
explicit not-found of that exact key from a per-key call (paved.secretsync.model.Missing).
A key left out of a batch answer, a 404 that may be a disabled mount or a wrong mount path,
an answer without data: those are KeyFailures, which neither start nor confirm anything.

A key that a store reports missing once may still be a glitch (eventual consistency, a secret
being re-created, a mount being moved, a path typo fixed a minute later). The first
missing observation only records `missingSince[key]` and leaves the Secret alone; a later
refresh that still finds it missing, at least `grace` seconds after the first, confirms it,
and only then does the deletionPolicy apply. A key seen again in between is forgiven.

The observations are only comparable while nothing they depend on changed: `missingBasis`
(the ref's generation and the store's uid/generation, see plan.missing_basis) is recorded
with them, and a different basis starts over. Both live in the ref's status, so the rule
survives operator restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from paved.api.common import now_rfc3339, parse_rfc3339


@dataclass(frozen=True)
class MissingVerdict:
    missing_since: dict[str, str]  # key label -> first seen missing (the new status field)
    pending: frozenset[str]  # missing, not yet confirmed: wait
    confirmed: frozenset[str]  # missing on two refreshes at least the grace period apart: act per deletionPolicy
    confirm_after: str | None = None  # earliest moment a pending key can be confirmed (RFC 3339)


def judge(previous: Mapping[str, str], missing_now: Iterable[str], now: str, grace: float = 0.0) -> MissingVerdict:
    """Combine the previous `missingSince` with this refresh's missing key labels.

    A key is confirmed when it was already missing at an earlier refresh (it is in
    `previous`) that lies at least `grace` seconds before `now`. An unreadable timestamp
    starts the key over: deleting on a guess is the one thing this rule must never do.
    """
    moment = parse_rfc3339(now)
    current = set(missing_now)
    since: dict[str, str] = {}
    confirmed: set[str] = set()
    deadlines = []
    for label in sorted(current):
        first = parse_rfc3339(previous.get(label))
        if first is None or moment is None or first > moment:
            since[label] = now
            first = moment
        else:
            since[label] = previous[label]
            if (moment - first).total_seconds() >= grace:
                confirmed.add(label)
                continue
        if first is not None:
            deadlines.append(first + timedelta(seconds=grace))
    confirm_after = now_rfc3339(max(deadlines)) if deadlines else None
    return MissingVerdict(since, frozenset(current - confirmed), frozenset(confirmed), confirm_after)
