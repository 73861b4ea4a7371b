"""What a composed reconcile works with and returns: intent kinds, results, outcomes.

Plain data and pure helpers (no I/O): the engine (paved.engines.compose.engine) fills these,
handlers and the other generic paths read them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from paved import API_VERSION
from paved.api.common import READY, SYNCED, Model
from paved.api.kinds import kind_info
from paved.kube.status import StatusWriter
from paved.providers.base import Observation, Owner
from paved.render.types import RenderedResource

KUBERNETES = "kubernetes"
GENERATED_SUFFIX = "-paved-generated"
MAX_PASSES = 16  # render/apply passes; a composition deeper than this is a cycle
BACKOFF_BASE = 2.0
BACKOFF_CAP = 300.0
HANDLER_RETRIES = 40  # with the backoff above: about three hours of retrying, then a condition

# Condition reasons (CamelCase, stable: users and kstatus tooling match on them).
REASON_READY = "Ready"
REASON_APPLIED = "Applied"
REASON_WAITING = "Waiting"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_NO_COMPOSITION = "NoComposition"
REASON_RENDER_FAILED = "RenderFailed"
REASON_PROVIDER_ERROR = "ProviderError"

# Every path that reconciles an intent (its Kopf handlers, the children drift watch,
# Composition re-renders, an identity's daemon, a database's drift check, a failed
# deletion) computes the same status: one writer, whatever the trigger.
RECONCILE_FIELD_MANAGER = "paved-reconcile"


# --------------------------------------------------------------------------- kinds


@dataclass(frozen=True)
class IntentKind:
    """What the generic reconcile needs to know about one intent kind.

    `status_extras(body, result, old_status)` adds kind-specific status fields (an
    identity's serviceAccount and grants); it must be deterministic so that an unchanged
    reconcile gives an unchanged status. `audit(owner, old_status, new_status)` posts the
    kind's own Events when the status changed (an identity's Granted/Revoked).
    `refine(outcome, body)` may adjust the outcome's status (a database's
    Synced=False on immutable drift); it runs inside `reconcile`, so the Kopf handler, the
    drift watch and Composition re-renders all see the same status.
    `deletion_policy(spec)` tells providers what to do with external resources on deletion
    (Delete, Retain, Snapshot).
    `conditions` are the condition types the reconcile sets; it owns every field of the
    kind's status model but `not_reconciled` ones (written by other writers): `status_writer`.
    """

    kind: str
    status_extras: Callable[[Mapping[str, Any], ComposeResult, Mapping[str, Any]], dict[str, Any]] | None = None
    audit: Callable[[Owner, Mapping[str, Any], Mapping[str, Any]], None] | None = None
    refine: Callable[[Outcome, Mapping[str, Any]], Outcome] | None = None
    deletion_policy: Callable[[Model], str] = lambda spec: "Delete"
    conditions: frozenset[str] = frozenset({READY, SYNCED})
    not_reconciled: frozenset[str] = frozenset()

    @property
    def api_version(self) -> str:
        return API_VERSION

    @cached_property
    def status_writer(self) -> StatusWriter:
        """The reconcile's status writer for this kind (paved.kube.status)."""
        return StatusWriter.of_model(RECONCILE_FIELD_MANAGER, kind_info(self.kind).status, self.conditions,
                                     without=self.not_reconciled)

    def outcome(self, result: ComposeResult, body: Mapping[str, Any], status: dict[str, Any]) -> Outcome:
        """`result` with the status it implies, and what of it differs from what `body` shows."""
        return Outcome(result, status, self.status_writer.changed(body.get("status"), status))

    @property
    def plural(self) -> str:
        return kind_info(self.kind).plural

    def parse_spec(self, body: Mapping[str, Any]) -> Model:
        return kind_info(self.kind).parse_spec(body.get("spec"))



# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ComposeError:
    """Why a reconcile stopped; `message` names the field and never holds secret values."""

    reason: str
    message: str
    field: str | None = None
    retryable: bool = False


@dataclass
class ResourceState:
    """What happened to one composed resource in this reconcile."""

    resource: RenderedResource
    observation: Observation
    corrected: list[str] = field(default_factory=list)  # drifted field paths that were restored
    written: bool = False

    @property
    def ready(self) -> bool:
        return self.observation.exists and (self.resource.readiness == "none" or self.observation.ready)

    def status_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.resource.name,
            "provider": self.resource.provider,
            "externalId": self.observation.external_id or None,
            "ready": self.ready,
        }
        if not self.ready and self.observation.message:
            entry["message"] = self.observation.message
        return {key: value for key, value in entry.items() if value is not None}


@dataclass
class ComposeResult:
    """The typed outcome of one composed reconcile (no I/O left to do except the status write)."""

    generation: int | None
    spec: Model | None = None
    composition: str | None = None
    revision: str | None = None  # the CompositionRevision rendered
    render_hash: str | None = None
    states: list[ResourceState] = field(default_factory=list)
    pending: list[RenderedResource] = field(default_factory=list)  # not applied: waiting for outputs, or stopped by an error
    pruned: list[str] = field(default_factory=list)
    error: ComposeError | None = None

    @property
    def ready(self) -> bool:
        return self.error is None and not self.pending and all(state.ready for state in self.states)

    @property
    def written(self) -> bool:
        return any(state.written for state in self.states) or bool(self.pruned)

    @property
    def corrected(self) -> list[str]:
        return [f"{s.observation.external_id or s.resource.name} ({', '.join(s.corrected)})" for s in self.states if s.corrected]

    def waiting_for(self) -> list[str]:
        return [state.resource.name for state in self.states if not state.ready] + [r.name for r in self.pending]

    @property
    def result_label(self) -> str:
        """Low-cardinality outcome for paved_reconcile_total."""
        if self.error is not None:
            return "error" if self.error.retryable else "invalid"
        if not self.ready:
            return "waiting"
        return "ready" if self.written else "unchanged"


@dataclass
class Outcome:
    """A reconcile plus the status it implies (the reconcile's fields are written from it);
    `changed`: which of those fields differ from what the intent showed (empty: no write)."""

    result: ComposeResult
    status: dict[str, Any]
    changed: frozenset[str]

    def written(self) -> tuple[dict[str, Any], Outcome]:
        """(the status to write, this outcome): what ComposeEngine.reconcile_and_write's `compute` returns."""
        return self.status, self


# --------------------------------------------------------------------------- helpers


def owner_of(body: Mapping[str, Any]) -> Owner:
    metadata = body.get("metadata") or {}
    return Owner(
        api_version=body.get("apiVersion", API_VERSION),
        kind=body.get("kind", ""),
        name=metadata.get("name", ""),
        namespace=metadata.get("namespace"),
        uid=metadata.get("uid", ""),
        generation=metadata.get("generation"),
    )




def in_scope(namespace: str | None, namespaces: Collection[str]) -> bool:
    """Whether an operator serving `namespaces` (empty: every namespace, `paved run
    --namespace`) serves `namespace`.

    Kopf filters watch events by namespace itself; this guards the paths that find intents
    on their own (children's owner annotations, Composition re-renders, the audit).
    """
    return not namespaces or namespace in namespaces


def compositions_from(index: Mapping[str, Iterable[Mapping[str, Any]]] | Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Compositions as a list, from a Kopf index ({name: Store}) or any iterable of dicts."""
    if isinstance(index, Mapping):
        return [composition for store in index.values() for composition in store]
    return list(index)



def backoff(retry: int) -> float:
    """Exponential backoff with jitter for Kopf TemporaryError delays: 2 s, 4 s, ... <= 300 s."""
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(retry, 0)) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret
