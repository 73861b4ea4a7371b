"""Which PolicyException excuses a rule for an intent, as a pure function of `now`.

An exception is deliberately narrow: it names the policy, the rules and the intents (kind and
name, in the exception's own namespace), and it only applies strictly before `expiresAt`.
Nothing is inferred: an exception without a parseable expiry never applies, so a typo can
only make it stricter, never permanent.

Which namespaces may hold exceptions is the caller's filter (the webhook and the audit pass
only exceptions from the namespaces the platform names).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paved.api.common import parse_rfc3339


@dataclass(frozen=True)
class ExceptionMatch:
    """The exception that covers a rule: `active` applies now, otherwise it has expired."""

    name: str  # namespace/name
    expires_at: datetime
    active: bool


def find_exception(
    exceptions: Iterable[Mapping[str, Any]],
    policy: str,
    rule: str,
    intent: Mapping[str, Any],
    now: datetime,
) -> ExceptionMatch | None:
    """The best exception covering (policy, rule, intent): an active one with the latest expiry,
    else the most recently expired one (so reports can say it ran out), else None."""
    kind = intent.get("kind")
    metadata = intent.get("metadata") or {}
    best: ExceptionMatch | None = None
    for exception in exceptions:
        spec = exception.get("spec") or {}
        meta = exception.get("metadata") or {}
        if spec.get("policy") != policy or rule not in (spec.get("rules") or ()):
            continue
        if meta.get("namespace") != metadata.get("namespace"):
            continue
        if not any(
            ref.get("kind") == kind and ref.get("name") == metadata.get("name") for ref in spec.get("intents") or ()
        ):
            continue
        expires_at = parse_rfc3339(spec.get("expiresAt"))
        if expires_at is None:
            continue
        candidate = ExceptionMatch(f"{meta.get('namespace')}/{meta.get('name')}", expires_at, now < expires_at)
        if best is None or (candidate.active, candidate.expires_at) > (best.active, best.expires_at):
            best = candidate
    return best
