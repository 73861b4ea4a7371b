"""Compositions: their Ready status, and re-rendering the intents that use one when it changes.

A Composition whose spec or templates do not compile gets Ready=False naming the resource
and line; a valid one Ready=True. Status is written only when it changes (server-side
apply as `paved-composition-check`, paved.kube.status). (The composition index itself,
which every intent is rendered from, is in paved.handlers.indexes.)

When a Composition's spec changes (or it appears or disappears), the intents that use it,
and those still waiting with NoComposition, are re-rendered at once through the kind's
registered reconcile (paved.engines.compose). This runs in the Composition's event handler
thread, one intent after another: fine for tens or hundreds of intents, and a platform
change is rare; at thousands, expect it to take a while (each intent is one render plus
reads, and writes only where the render changed).
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
    if spec_changed and type is not None:  # not on the initial listing: intents resume by themselves
        _rerender_users(name, served, composition_index, memo, reason=f"composition {name} changed")


def _rerender_users(name: str, kind: str | None, composition_index: kopf.Index, memo: Engines, *, reason: str) -> None:
    """Reconcile every intent rendered through `name`, or waiting for any composition of its kind."""
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
        if not _uses(item, name) or not in_scope(item["metadata"].get("namespace"), memo.scope.namespaces):
            continue
        try:
            memo.compose.reconcile_written(intent_kind, item, compositions, trigger=reason)
        except ApiError as error:  # one intent's failure must not stop the others
            log.warning("re-render of %s %s/%s after %s failed: %s", intent_kind.kind,
                        item["metadata"].get("namespace"), item["metadata"].get("name"), reason, error)


def _uses(intent: Mapping[str, Any], composition: str) -> bool:
    status = intent.get("status") or {}
    if status.get("composition") == composition:
        return True
    ready = get_condition(status.get("conditions"), READY) or {}
    return ready.get("reason") == REASON_NO_COMPOSITION


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the Composition handler to the leader's registry."""
    kopf.on.event(GROUP, VERSION, "compositions", registry=registry)(composition_changed)  # type: ignore[arg-type]  # indexes by name: see paved.handlers
