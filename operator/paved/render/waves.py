"""Composition revisions and rollout waves: which revision an intent is rendered with, and
which intents a change of its Composition moves now.

Every spec of a Composition (its `rollout` settings left out) is a CompositionRevision named
`<composition>-<hash of that spec>` (`revision_name`): the same spec always has the same
name, so the latest revision is known from the Composition itself, before its revision
object exists, and a revert makes the older revision the latest again. An intent records the
revision it was rendered with (`status.compositionRevision`) and is rendered with it again
(`revision_for`) until:
- it is Automatic and the rollout moves it (`plan_wave` says so), or
- it has no revision of this Composition yet (new, or it switched Composition): the latest, or
- it is Manual with `spec.compositionRevisionRef`: exactly that revision, always.

`plan_wave` decides from what the intents' statuses say, nothing else: the rollout's state
is the intents' revisions and conditions, so it survives restarts and a change of leader.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from paved import API_VERSION
from paved.api.common import ConditionSpec, Model
from paved.api.fields import derived_label_value, derived_name
from paved.render.errors import RenderError

REVISION_LABEL = "paved.dev/composition"
ROLLED_OUT = "RolledOut"
REASON_ROLLED_OUT = "RolledOut"
REASON_PROGRESSING = "Progressing"
REASON_HALTED = "Halted"

# Ready reasons of an intent that count as a failure of the revision it is on: its templates
# do not render for this intent, or a cloud or Kubernetes call refused what it rendered.
# InvalidSpec and NoComposition are the intent's own problems, not the revision's.
FAILURE_REASONS = frozenset({"RenderFailed", "ProviderError"})
REVISION_FIELDS_LEFT_OUT = ("rollout",)  # changing only these makes no new revision
HASH_LENGTH = 10
MESSAGE_MAX = 1024  # a condition message naming failing intents stays readable
AUTOMATIC, MANUAL = "Automatic", "Manual"
REF_FIELD = "spec.compositionRevisionRef.name"


# --------------------------------------------------------------------------- revisions


def revision_spec(composition: Mapping[str, Any]) -> dict[str, Any]:
    """What a revision records of the Composition: its spec without the rollout settings."""
    spec = dict(composition.get("spec") or {})
    return {key: value for key, value in spec.items() if key not in REVISION_FIELDS_LEFT_OUT}


def revision_name(composition: Mapping[str, Any]) -> str:
    """`<composition>-<hash of revision_spec>`: the name of the revision of this spec."""
    canonical = json.dumps(revision_spec(composition), sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]
    return derived_name(_name(composition), f"-{digest}")


def revision_document(composition: Mapping[str, Any], revision: Mapping[str, Any]) -> dict[str, Any]:
    """The Composition as it was at `revision` (a CompositionRevision as read): what to render."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Composition",
        "metadata": dict(composition.get("metadata") or {}),
        "spec": dict((revision.get("spec") or {}).get("compositionSpec") or {}),
    }


def revision_for(
    body: Mapping[str, Any],
    spec: Model,
    composition: Mapping[str, Any],
    revisions: Mapping[str, Mapping[str, Any]],
    *,
    move: bool = False,
) -> tuple[str, Mapping[str, Any]]:
    """(revision name, the Composition to render) for the intent `body` (as read, with its
    status) selected to render through `composition` (live). `revisions`: every known
    CompositionRevision by name. `move`: the rollout moves this intent to the latest now.

    Raises RenderError naming spec.compositionRevisionRef.name for a reference that is not a
    revision of `composition`, or set without compositionUpdatePolicy Manual.
    """
    latest = revision_name(composition)
    policy = getattr(spec, "compositionUpdatePolicy", AUTOMATIC)
    ref = getattr(getattr(spec, "compositionRevisionRef", None), "name", None)
    if ref is not None:
        if policy != MANUAL:
            raise RenderError("set only with spec.compositionUpdatePolicy: Manual (an Automatic intent follows the "
                              "Composition's rollout)", field=REF_FIELD)
        return ref, _at(ref, latest, composition, revisions)
    status = body.get("status") or {}
    current = status.get("compositionRevision") if status.get("composition") == _name(composition) else None
    if current is None or current == latest or (move and policy == AUTOMATIC):
        return latest, composition
    if current not in revisions:  # its revision is gone (the Composition was deleted and made again)
        return latest, composition
    return current, _at(current, latest, composition, revisions)


def _at(name: str, latest: str, composition: Mapping[str, Any], revisions: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any]:
    if name == latest:
        return composition
    revision = revisions.get(name)
    if revision is None or not is_revision_of(revision, composition):
        known = sorted(n for n, r in revisions.items() if is_revision_of(r, composition)) + [latest]
        listed = ", ".join(sorted(set(known))[:8])
        raise RenderError(f"revision {name!r} of composition {_name(composition)!r} does not exist; its revisions: "
                          f"{listed}", field=REF_FIELD)
    return revision_document(composition, revision)


def revision_labels(composition: Mapping[str, Any]) -> dict[str, str]:
    """The labels of the Composition's revisions: which Composition they are of."""
    return {REVISION_LABEL: derived_label_value(_name(composition))}


def is_revision_of(revision: Mapping[str, Any], composition: Mapping[str, Any]) -> bool:
    """Whether the CompositionRevision `revision` (as read) records a spec of `composition`."""
    labels = (revision.get("metadata") or {}).get("labels") or {}
    return labels.get(REVISION_LABEL) == derived_label_value(_name(composition))


def _name(composition: Mapping[str, Any]) -> str:
    return str((composition.get("metadata") or {}).get("name", ""))


# --------------------------------------------------------------------------- waves


@dataclass(frozen=True)
class IntentOnRevision:
    """What the rollout reads of one intent rendered with the Composition (from its status)."""

    key: str  # namespace/name: the order in which intents move, the same on every replica
    revision: str | None  # status.compositionRevision (None: rendered before revisions existed)
    automatic: bool  # spec.compositionUpdatePolicy is Automatic
    ready: bool  # Ready=True
    failure: str | None = None  # the Ready message when Ready=False for a FAILURE_REASONS reason


@dataclass(frozen=True)
class Wave:
    """What the rollout does now and what it reports (the Composition's status)."""

    latest: str
    move: tuple[str, ...]  # keys of the intents to move to `latest` now
    halted: bool
    counts: dict[str, int]  # revision name -> intents on it (after the moves)
    updated: int  # on latest and Ready
    failed: tuple[tuple[str, str], ...]  # (key, message) failing on latest
    in_flight: tuple[str, ...]  # on latest, neither Ready nor failing (after the moves)
    behind: tuple[str, ...] = field(default=())  # Automatic, not on latest and not moved now
    max_failures: int = 1

    @property
    def done(self) -> bool:
        """Nothing more to do: every Automatic intent is on latest and none is in flight."""
        return not self.behind and not self.move and not self.in_flight

    def condition(self) -> ConditionSpec:
        """The Composition's RolledOut condition: why the rollout is where it is."""
        if self.halted:
            failing = "; ".join(f"{key}: {message}" for key, message in self.failed)
            message = (f"halted: {len(self.failed)} intent(s) fail on revision {self.latest} (maxFailures "
                       f"{self.max_failures}); {len(self.behind)} intent(s) stay on their revision; edit the "
                       f"Composition to start a new rollout. Failing: {failing}")
            return ROLLED_OUT, False, REASON_HALTED, _capped(message)
        if not self.done:
            message = (f"{self.updated} intent(s) ready on revision {self.latest}, {len(self.in_flight)} in flight, "
                       f"{len(self.behind)} waiting for a wave")
            if self.failed:
                message += "; failing: " + "; ".join(f"{key}: {text}" for key, text in self.failed)
            return ROLLED_OUT, False, REASON_PROGRESSING, _capped(message)
        return ROLLED_OUT, True, REASON_ROLLED_OUT, f"every Automatic intent is on revision {self.latest}"


def plan_wave(latest: str, intents: Iterable[IntentOnRevision], *, max_in_flight: int, max_failures: int) -> Wave:
    """Which intents move to `latest` now.

    - In flight: intents on `latest` that are neither Ready nor failing. Intents move only
      while fewer than `max_in_flight` are in flight, so at most that many are changing at once.
    - Failing: intents on `latest` whose Ready is False for a FAILURE_REASONS reason. With
      `max_failures` of them the rollout is halted: nothing moves, the others stay where they
      are, until the Composition changes again (a new `latest`: counted afresh).
    - Manual intents never move; Automatic ones move in key order.
    """
    intents = sorted(intents, key=lambda intent: intent.key)
    on_latest = [intent for intent in intents if intent.revision == latest]
    failed = tuple((intent.key, intent.failure) for intent in on_latest if intent.failure is not None and not intent.ready)
    in_flight = [intent.key for intent in on_latest if not intent.ready and intent.failure is None]
    candidates = [intent.key for intent in intents if intent.automatic and intent.revision != latest]
    halted = len(failed) >= max_failures
    room = 0 if halted else max(0, max_in_flight - len(in_flight))
    move = tuple(candidates[:room])
    counts: dict[str, int] = {}
    for intent in intents:
        revision = latest if intent.key in move else intent.revision
        if revision is not None:
            counts[revision] = counts.get(revision, 0) + 1
    return Wave(
        latest=latest, move=move, halted=halted, counts=counts,
        updated=sum(1 for intent in on_latest if intent.ready), failed=failed,
        in_flight=(*in_flight, *move), behind=tuple(candidates[room:]), max_failures=max_failures,
    )


def intent_on_revision(intent: Mapping[str, Any]) -> IntentOnRevision:
    """An intent as read (spec with defaults or not, status) as the planner sees it."""
    metadata = intent.get("metadata") or {}
    spec = intent.get("spec") or {}
    status = intent.get("status") or {}
    ready: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    failing = ready.get("status") == "False" and ready.get("reason") in FAILURE_REASONS
    return IntentOnRevision(
        key=f"{metadata.get('namespace', '')}/{metadata.get('name', '')}",
        revision=status.get("compositionRevision"),
        automatic=spec.get("compositionUpdatePolicy", AUTOMATIC) != MANUAL and not spec.get("compositionRevisionRef"),
        ready=ready.get("status") == "True",
        failure=str(ready.get("message") or ready.get("reason")) if failing else None,
    )


def _capped(message: str) -> str:
    return message if len(message) <= MESSAGE_MAX else message[: MESSAGE_MAX - 1] + "…"
