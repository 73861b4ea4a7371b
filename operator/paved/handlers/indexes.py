"""The in-memory indexes every handler and every admission answer reads: Compositions,
IntentPolicies and PolicyExceptions, as plain snapshots.

They are Kopf indexes (injected into handlers as the keyword arguments `composition_index`,
`policy_index`, `exception_index`) rather than dicts fed by event handlers, because Kopf
holds back all handlers until every index has seen its initial listing: after a restart, no
intent is reconciled, and no admission request judged, against a half-loaded set (which
would flap intents to NoComposition). Both Kopf operators of a process keep them: the one
serving admission on every replica, and the leader's (paved.runtime).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import kopf

from paved import API_VERSION, GROUP, VERSION

_SNAPSHOT_METADATA = ("name", "namespace", "uid", "generation", "labels", "annotations")


def snapshot(body: Mapping[str, Any], kind: str = "Composition") -> dict[str, Any]:
    """A plain, independent copy of a platform object (Composition, IntentPolicy,
    PolicyException): what the indexes hold and the pure cores read."""
    metadata = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind") or kind,
        "metadata": {key: copy.deepcopy(metadata[key]) for key in _SNAPSHOT_METADATA if key in metadata},
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
    }


def composition_index(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """name -> snapshot of the Composition."""
    return {name: snapshot(body)}


def revision_index(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """name -> snapshot of the CompositionRevision (with status, to write it only on change);
    the leader's only (paved.handlers.platform): admission renders what a new intent gets."""
    item = {**snapshot(body, "CompositionRevision"), "status": copy.deepcopy(dict(body.get("status") or {}))}
    return {name: item}


def policy_index(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """name -> snapshot of the IntentPolicy."""
    return {name: {**snapshot(body), "kind": "IntentPolicy"}}


def exception_index(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """namespace -> snapshots of its PolicyExceptions (with status, to write it only on change)."""
    item = {**snapshot(body), "kind": "PolicyException", "status": copy.deepcopy(dict(body.get("status") or {}))}
    return {namespace or "": item}  # namespaced: never empty


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the three indexes to a registry (the serving one and the leader's)."""
    kopf.index(GROUP, VERSION, "compositions", registry=registry)(composition_index)
    kopf.index(GROUP, VERSION, "intentpolicies", registry=registry)(policy_index)
    kopf.index(GROUP, VERSION, "policyexceptions", registry=registry)(exception_index)
