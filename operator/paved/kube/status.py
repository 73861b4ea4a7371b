"""Status writes outside Kopf's own patch (drift restores, composition re-renders).

Inside a Kopf handler, status goes into Kopf's `patch.status` so each reconcile is one
PATCH. Paths that run outside a handler cycle (the children watch restoring an object, a
Composition change re-rendering its intents) use `update_status` here; a writer that owns
its own fields outright (the secret sync engine, the policy audit's PolicyCompliant) uses
`apply_status`, each as its own field manager. Conditions are
always built with paved.api.common.set_condition (`with_conditions`), never by hand.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from paved.api.common import ConditionSpec, set_condition
from paved.kube.apply import get, server_side_apply
from paved.kube.client import ApiError, Json, request, resource_info

UPDATE_ATTEMPTS = 3


def with_conditions(status: Mapping[str, Any] | None, conditions: Iterable[ConditionSpec], generation: int | None) -> Json:
    """A copy of `status` with each (type, status, reason, message) set via set_condition."""
    result = dict(status or {})
    current = list(result.get("conditions") or [])
    for type_, value, reason, message in conditions:
        current = set_condition(current, type_, value, reason, message, generation)
    result["conditions"] = current
    return result


def status_delta(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> Json:
    """The top-level status fields of `new` that differ from `old` (a merge patch; {} = no write).

    Conditions keep their lastTransitionTime when the status did not flip (set_condition),
    so an unchanged reconcile yields an empty delta and the operator stays quiet at idle.
    """
    old = old or {}
    return {key: value for key, value in new.items() if old.get(key) != value}


def patch_status(api_version: str, kind: str, namespace: str | None, name: str, delta: Mapping[str, Any],
                 resource_version: str | None = None) -> Json | None:
    """Merge-patch `delta` into the object's status subresource; no request when `delta` is empty.

    With `resource_version` the patch applies only to that version of the object (else 409):
    a merge patch replaces whole lists such as `conditions`, so a delta computed from an older
    read must not overwrite a newer writer's conditions.
    """
    if not delta:
        return None
    info = resource_info(api_version, kind)
    body: dict[str, Any] = {"status": dict(delta)}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return request(
        "PATCH",
        info.path(name, namespace, subresource="status"),
        operation="patch-status",
        body=body,
        content_type="application/merge-patch+json",
    )


def apply_status(api_version: str, kind: str, namespace: str | None, name: str, status: Mapping[str, Any], *,
                 field_manager: str) -> Json:
    """Server-side apply `status` to the object's status subresource as `field_manager`.

    For a writer that owns a fixed set of status fields and conditions (the conditions list
    is `listType: map` keyed by type): what it applies is kept, what it applied before and
    omits now is removed, and other writers' conditions are never touched, so there is no
    read, no resourceVersion and no conflict loop. A gone object answers 404.
    """
    metadata: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    body = {"apiVersion": api_version, "kind": kind, "metadata": metadata, "status": dict(status)}
    return server_side_apply(body, resource_info(api_version, kind), field_manager=field_manager, subresource="status")


def update_status(
    api_version: str,
    kind: str,
    namespace: str | None,
    name: str,
    compute: Callable[[Mapping[str, Any]], Mapping[str, Any] | None],
    current: Mapping[str, Any] | None = None,
) -> bool:
    """Write `compute(object)` (a status delta; empty: nothing to write) onto exactly the version
    of the object it was computed from; True when something was written.

    Several writers share an object's status (an intent's reconcile, its daemons and drift
    restores, the policy audit) and a merge patch replaces whole lists such as `conditions`,
    so a delta from an older read could drop a newer writer's condition. The patch carries
    the object's resourceVersion; on a conflict the object is read again and `compute` redone.
    `current`: the version already at hand (None: read it). A gone object writes nothing.
    """
    for attempt in range(UPDATE_ATTEMPTS):
        current = current if current is not None else get(api_version, kind, name, namespace)
        if current is None:
            return False
        delta = compute(current)
        if not delta:
            return False
        try:
            patch_status(api_version, kind, namespace, name, delta,
                         resource_version=(current.get("metadata") or {}).get("resourceVersion"))
            return True
        except ApiError as error:
            if error.not_found:
                return False
            if error.status != 409 or attempt + 1 == UPDATE_ATTEMPTS:
                raise
        current = None
    return False
