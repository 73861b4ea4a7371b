"""Drift of owned objects: a child edited or deleted by hand is restored at once.

For every kind in paved.kube.apply.MANAGED_KINDS a stateless `@kopf.on.event` handler
(no annotations, no finalizers on children) receives MODIFIED and DELETED events of objects
labelled `app.kubernetes.io/managed-by: paved`, finds the owning intent (ownerReference,
else the `paved.dev/owner` annotation of children in other namespaces), and re-runs that
intent's composed reconcile: with an unchanged render hash it observes every resource and
server-side-applies only the missing or drifted ones.

Watch cost: paved.runtime configures a server-side label selector
(`settings.watching.label_selectors`) for these kinds, so the API server streams only
Paved's own objects; the `labels=` filter below is a second, client-side guard. Without the
server-side selector Kopf would list and watch every Secret and Role of the cluster.

Our own writes also produce MODIFIED events; `written_by_paved` skips those cheaply (the
newest managedFields entry is Paved's), so restoring one object costs one reconcile, not a
loop. When in doubt (a tie in timestamps) the reconcile runs: it only reads unless
something really drifted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from paved.engines import Engines
from paved.engines.compose import compositions_from, in_scope
from paved.kube import apply as kube
from paved.kube.client import ApiError
from paved.providers.base import Owner

log = logging.getLogger(__name__)


def owner_ref_of(child: Mapping[str, Any]) -> Owner | None:
    """The intent a Paved child belongs to: the controller ownerReference, else the owner annotation."""
    metadata = child.get("metadata") or {}
    uid = (metadata.get("labels") or {}).get(kube.OWNER_UID_LABEL)
    if not uid:
        return None
    for ref in metadata.get("ownerReferences") or []:
        if ref.get("uid") == uid:
            return Owner(ref.get("apiVersion", ""), ref.get("kind", ""), ref.get("name", ""), metadata.get("namespace"), uid)
    annotation = (metadata.get("annotations") or {}).get(kube.OWNER_ANNOTATION, "")
    parts = annotation.rsplit("/", 3)  # "<group>/<version>/<Kind>/<namespace>/<name>"
    if len(parts) == 4 and all(parts[:2]) and parts[3]:
        api_version, kind, namespace, name = parts
        return Owner(api_version, kind, name, namespace or None, uid)
    return None


def written_by_paved(child: Mapping[str, Any]) -> bool:
    """Whether the newest write recorded in managedFields was Paved's own (and no one else's)."""
    entries = (child.get("metadata") or {}).get("managedFields") or []
    stamped = [entry for entry in entries if entry.get("time")]
    if not stamped:
        return False
    newest = max(entry["time"] for entry in stamped)
    managers = {entry.get("manager") for entry in stamped if entry["time"] == newest}
    return managers == {kube.FIELD_MANAGER}


def restore_owner(child: Mapping[str, Any], event: str, compositions: list[Mapping[str, Any]], engines: Engines) -> None:
    """Re-run the reconcile of `child`'s intent (no-op if the intent is gone, going, or not ours)."""
    ref = owner_ref_of(child)
    if ref is None or not in_scope(ref.namespace, engines.scope.namespaces):
        return
    intent_kind = engines.compose.registered_kind(ref.kind)
    if intent_kind is None:
        return
    intent = kube.get(ref.api_version, ref.kind, ref.name, ref.namespace)
    if intent is None or intent["metadata"].get("uid") != ref.uid or intent["metadata"].get("deletionTimestamp"):
        return  # the garbage collector or the finalizer is removing this child on purpose
    trigger = f"{event} of {kube.key_of(child)}"
    engines.compose.reconcile_written(intent_kind, intent, compositions, trigger=trigger)


async def on_child_event(type: str | None, body: kopf.Body, composition_index: kopf.Index, memo: Engines, **_: Any) -> None:
    """MODIFIED by someone else, or DELETED: restore. Initial listing and ADDED: nothing to do.

    Decided in Kopf's event loop (Paved's own writes are most of these events); a restore,
    which reads and writes, runs in a thread."""
    if type not in ("MODIFIED", "DELETED"):
        return
    if type == "MODIFIED" and written_by_paved(body):
        return
    await asyncio.to_thread(restore_logged, type, body, composition_index, memo)


def restore_logged(type: str, body: Mapping[str, Any], composition_index: kopf.Index, engines: Engines) -> None:
    try:
        restore_owner(body, type, compositions_from(composition_index), engines)
    except ApiError as error:  # event handlers are not retried by Kopf: log, the next event retries
        log.warning("could not restore the owner of %s after %s: %s", kube.key_of(body), type, error)


def register(registry: kopf.OperatorRegistry) -> None:
    """Add a drift handler per managed kind to the leader's registry."""
    for kind, api_version in kube.MANAGED_KINDS.items():
        # ExternalSecretRefs' target Secrets never come here: paved.runtime's server-side
        # selector leaves them out of Kopf's watch (paved.handlers.secrets watches them).
        kopf.on.event(api_version, kind, labels={kube.MANAGED_BY_LABEL: kube.MANAGED_BY},
                      id=f"drift-{kind.lower()}", registry=registry)(on_child_event)  # type: ignore[arg-type]  # indexes by name: see paved.handlers
