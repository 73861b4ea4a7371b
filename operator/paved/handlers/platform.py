"""Compositions: the in-memory index every intent is rendered from, and their Ready status.

The index is a Kopf index (`composition_index`, injected by Kopf into every handler as a
keyword argument) rather than a module-level dict fed by event handlers, because Kopf holds
back all handlers until every index has seen its initial listing: after a restart, no
intent is reconciled against a half-loaded set of compositions (which would flap intents
to NoComposition). Values are plain dict snapshots of each Composition.

A Composition whose spec or templates do not compile gets Ready=False naming the resource
and line; a valid one Ready=True. Status is written only when it changes.

When a Composition's spec changes (or it appears or disappears), the intents that use it,
and those still waiting with NoComposition, are re-rendered at once through the kind's
registered reconcile (paved.handlers._compose). This runs in the Composition's event
handler thread, one intent after another: fine for tens or hundreds of intents, and a
platform change is rare; at thousands, expect it to take a while (each intent is one render
plus reads, and writes only where the render changed).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from paved import API_VERSION
from paved.api.common import READY
from paved.api.kinds import SpecError, kind_info
from paved.handlers import _compose
from paved.kube import status as kube_status
from paved.kube.client import ApiError, request, resource_info
from paved.render import check_composition

log = logging.getLogger(__name__)

COMPOSITION = "Composition"
_SNAPSHOT_METADATA = ("name", "namespace", "uid", "generation", "labels", "annotations")


def snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    """A plain, independent copy of a platform object (Composition, IntentPolicy,
    PolicyException): what the Kopf indexes hold and the pure cores read."""
    metadata = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind") or COMPOSITION,
        "metadata": {key: copy.deepcopy(metadata[key]) for key in _SNAPSHOT_METADATA if key in metadata},
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
    }


def problems_of(composition: Mapping[str, Any]) -> list[str]:
    """Why a Composition cannot be used: spec errors, then template problems ([] = valid)."""
    try:
        kind_info(COMPOSITION).parse_spec(composition.get("spec"))
    except SpecError as error:
        return list(error.problems)
    return [str(error) for error in check_composition(composition)]


# --------------------------------------------------------------------------- Kopf


@kopf.index("paved.dev", "v1alpha1", "compositions")
def composition_index(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """name -> snapshot; handlers receive it as the `composition_index` keyword argument."""
    return {name: snapshot(body)}


@kopf.on.event("paved.dev", "v1alpha1", "compositions")
def composition_changed(type: str | None, body: kopf.Body, composition_index: kopf.Index, memo: kopf.Memo, **_: Any) -> None:
    """Keep the Composition's Ready condition true to its validity; re-render its users on change."""
    metadata = body.get("metadata") or {}
    name, generation = metadata.get("name"), metadata.get("generation")
    served = (body.get("spec") or {}).get("compositeKind")
    if type == "DELETED":
        _rerender_users(name, served, composition_index, memo, reason=f"composition {name} deleted")
        return
    old = dict(body.get("status") or {})
    problems = problems_of(body)
    ready = (READY, True, "Valid", "templates compile") if not problems else (READY, False, "Invalid", "; ".join(problems))
    status = kube_status.with_conditions({**old, "observedGeneration": generation}, [ready], generation)
    delta = kube_status.status_delta(old, status)
    if delta:
        kube_status.patch_status(API_VERSION, COMPOSITION, None, name, delta)
        if problems:
            log.warning("composition %s is invalid: %s", name, "; ".join(problems))
    spec_changed = old.get("observedGeneration") != generation
    if spec_changed and type is not None:  # not on the initial listing: intents resume by themselves
        _rerender_users(name, served, composition_index, memo, reason=f"composition {name} changed")


def _rerender_users(name: str, kind: str | None, composition_index: kopf.Index, memo: kopf.Memo, *, reason: str) -> None:
    """Reconcile every intent rendered through `name`, or waiting for any composition of its kind."""
    intent_kind = _compose.registered_kind(kind or "")
    if intent_kind is None:
        return
    compositions = _compose.compositions_from(composition_index)
    try:
        items = request("GET", resource_info(API_VERSION, intent_kind.kind).path(), operation="list").get("items", [])
    except ApiError as error:
        log.warning("cannot list %s to re-render after %s: %s", intent_kind.plural, reason, error)
        return
    for item in items:
        item.setdefault("apiVersion", API_VERSION)
        item.setdefault("kind", intent_kind.kind)
        if not _uses(item, name) or not _compose.in_scope(item["metadata"].get("namespace"), memo):
            continue
        try:
            _compose.reconcile_and_write(intent_kind, item, lambda body: _compose.reconcile(intent_kind, body, compositions, trigger=reason).delta)
        except ApiError as error:  # one intent's failure must not stop the others
            log.warning("re-render of %s %s/%s after %s failed: %s", intent_kind.kind,
                        item["metadata"].get("namespace"), item["metadata"].get("name"), reason, error)


def _uses(intent: Mapping[str, Any], composition: str) -> bool:
    status = intent.get("status") or {}
    if status.get("composition") == composition:
        return True
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == READY), {})
    return ready.get("reason") == _compose.REASON_NO_COMPOSITION
