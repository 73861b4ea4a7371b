"""Compositions: their Ready status, and re-rendering the intents that use one when it changes.

A Composition whose spec or templates do not compile gets Ready=False naming the resource
and line; a valid one Ready=True. Status is written only when it changes (server-side
apply as `paved-composition-check`, paved.kube.status). (The composition index itself,
which every intent is rendered from, is in paved.handlers.indexes.)

When a Composition's spec changes, its new CompositionRevision is recorded and the change
reaches the intents that use it in waves (paved.engines.compose.waves: at most
spec.rollout.maxInFlight intents changing at once, halted by maxFailures failing ones); the
engine's thread goes on with the next waves while the rollout is under way, and re-counts a
settled one now and then. Intents still waiting with NoComposition are re-rendered at once,
as are the users of a deleted Composition. All of this runs in the Composition's handler
threads, one intent after another (each is one render plus reads, and writes only where the
render changed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from paved import API_VERSION, GROUP, VERSION
from paved.api.common import READY, get_condition
from paved.api.kinds import SpecError, kind_info
from paved.engines import Engines
from paved.engines.compose import REASON_NO_COMPOSITION, compositions_from, in_scope
from paved.handlers.indexes import revision_index
from paved.kube import status as kube_status
from paved.kube.client import ApiError, request, resource_info
from paved.kube.status import StatusWriter
from paved.render import check_composition

log = logging.getLogger(__name__)

COMPOSITION = "Composition"
COMPOSITION_STATUS = StatusWriter("paved-composition-check", frozenset({"observedGeneration"}), frozenset({READY}))


def problems_of(composition: Mapping[str, Any]) -> list[str]:
    """Why a Composition cannot be used: spec errors, then template problems ([] = valid)."""
    try:
        kind_info(COMPOSITION).parse_spec(composition.get("spec"))
    except SpecError as error:
        return list(error.problems)
    return [str(error) for error in check_composition(composition)]


def composition_changed(type: str | None, body: kopf.Body, composition_index: kopf.Index, memo: Engines, **_: Any) -> None:
    """Keep the Composition's Ready condition true to its validity; re-render its users on change."""
    metadata = body.get("metadata") or {}
    name, generation = str(metadata.get("name") or ""), metadata.get("generation")
    served = (body.get("spec") or {}).get("compositeKind")
    if type == "DELETED":
        memo.waves.forget(name)
        _rerender_users(name, served, composition_index, memo, reason=f"composition {name} deleted")
        return
    old = dict(body.get("status") or {})
    problems = problems_of(body)
    ready = (READY, True, "Valid", "templates compile") if not problems else (READY, False, "Invalid", "; ".join(problems))
    status = kube_status.with_conditions({**old, "observedGeneration": generation}, [ready], generation)
    if COMPOSITION_STATUS.write({"apiVersion": API_VERSION, "kind": COMPOSITION, **body}, status) is not None:
        if problems:
            log.warning("composition %s is invalid: %s", name, "; ".join(problems))
    spec_changed = old.get("observedGeneration") != generation
    if problems:  # nothing moves to a revision that cannot render at all; Ready=False says why
        return
    if spec_changed or type is None:  # also on the initial listing: it may have changed while no one led
        memo.waves.step(body, compositions_from(composition_index), memo.scope.namespaces, trigger=f"composition {name} changed")
    if spec_changed and type is not None:
        _rerender_users(name, served, composition_index, memo, reason=f"composition {name} changed", users=False)


def share_revisions(revision_index: kopf.Index, composition_index: kopf.Index, memo: Engines, **_: Any) -> None:
    """Renders everywhere on the leader read CompositionRevisions from the live revision index
    (Kopf fills it before any intent handler runs); the rollout waves start stepping."""
    memo.compose.set_revision_source(lambda: {name: item for name, store in revision_index.items() for item in store})
    memo.waves.start(lambda: compositions_from(composition_index), memo.scope.namespaces)


def _rerender_users(name: str, kind: str | None, composition_index: kopf.Index, memo: Engines, *, reason: str,
                    users: bool = True) -> None:
    """Reconcile every intent waiting for any composition of its kind, and (`users`) every one
    rendered through `name`."""
    intent_kind = memo.compose.registered_kind(kind or "")
    if intent_kind is None:
        return
    compositions = compositions_from(composition_index)
    try:
        items = request("GET", resource_info(API_VERSION, intent_kind.kind).path(), operation="list").get("items", [])
    except ApiError as error:
        log.warning("cannot list %s to re-render after %s: %s", intent_kind.plural, reason, error)
        return
    for item in items:
        item.setdefault("apiVersion", API_VERSION)
        item.setdefault("kind", intent_kind.kind)
        if not _uses(item, name if users else None) or not in_scope(item["metadata"].get("namespace"), memo.scope.namespaces):
            continue
        try:
            memo.compose.reconcile_written(intent_kind, item, compositions, trigger=reason)
        except ApiError as error:  # one intent's failure must not stop the others
            log.warning("re-render of %s %s/%s after %s failed: %s", intent_kind.kind,
                        item["metadata"].get("namespace"), item["metadata"].get("name"), reason, error)


def _uses(intent: Mapping[str, Any], composition: str | None) -> bool:
    status = intent.get("status") or {}
    if composition is not None and status.get("composition") == composition:
        return True
    ready = get_condition(status.get("conditions"), READY) or {}
    return ready.get("reason") == REASON_NO_COMPOSITION


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the Composition handlers and the revision index to the leader's registry."""
    kopf.index(GROUP, VERSION, "compositionrevisions", registry=registry)(revision_index)
    kopf.on.startup(registry=registry)(share_revisions)  # type: ignore[arg-type]  # indexes by name: see paved.handlers
    kopf.on.event(GROUP, VERSION, "compositions", registry=registry)(composition_changed)  # type: ignore[arg-type]  # indexes by name: see paved.handlers
