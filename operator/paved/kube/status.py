"""Status by server-side apply: every writer sets only its own fields, as its own field manager.

Several writers share one object's status: an intent's composed reconcile and the policy
audit's PolicyCompliant, a database's drift check and its reconcile, ... A `StatusWriter`
declares one of them: its field manager and the fixed set of top-level status fields and
condition types it owns. It sends only those, by server-side apply (the conditions list is
`listType: map` keyed by type), so it never reads, keeps or overwrites another writer's
part: no merge patch of a whole `conditions` list, no resourceVersion, no conflict loop.

- What a writer computes is the whole status it wants (usually the object's status with its
  own changes); `owned` keeps its part, as the API server stores it (a None is "absent").
- A field the writer owned and now leaves out is removed by the API server (server-side
  apply drops what a manager applied before and omits now, when no other manager holds it).
  So a None in what a writer computes removes that field.
- `write` compares that part with what the object shows and sends nothing when they are
  equal: an idle reconcile makes no request at all.
- Fields written before by someone else (the merge patches of earlier versions of Paved,
  recorded as `Update` managers, or a hand edit) are not the writer's to drop: a field it
  omits that another manager holds stays, and an apply of the same value only shares it.
  So after an apply, what the answer still shows of the writer's fields beyond what it
  applied, held by another manager (managedFields), is removed by one JSON patch of just
  those fields. On an object written by an earlier Paved this happens once per field that
  is dropped later; otherwise never.

The writers (tests/unit/test_kube_status.py checks that, per kind, they own every status
field once and no condition twice):

| field manager | kinds | owns | who writes |
|---|---|---|---|
| paved-reconcile | DatabaseIntent, AgentIdentity | every status field (compositionRevision too) but lastDriftCheck; Ready, Synced (AgentIdentity: and Expired, Accepted) | the composed reconcile, whatever runs it: Kopf handlers, children drift restores, Composition re-renders, an identity's daemon, a database's drift check, a failed deletion |
| paved-drift-check | DatabaseIntent | lastDriftCheck | the drift daemon |
| paved-secret-sync | ExternalSecretRef | every status field; Ready, Stale | the secret sync engine |
| paved-rollout | ProgressiveRollout | every status field; Ready, Progressing | the rollout's ticks |
| paved-policy-audit | every intent kind; PolicyException | PolicyCompliant; (PolicyException) observedGeneration, Ready, Expired | the policy audit |
| paved-store-check | SecretStore, ClusterSecretStore | every status field; Ready | the authentication check (Kopf's handlers, timer, allowance changes) |
| paved-composition-check | Composition | observedGeneration; Ready | the Composition handler |
| paved-composition-rollout | Composition; CompositionRevision | (Composition) latestRevision, revisions, updatedIntents, failedIntents, RolledOut; (CompositionRevision) every status field; Ready | the rollout waves (paved.engines.compose.waves) |
| paved-policy-compile | IntentPolicy | every status field; Ready | the IntentPolicy handler |

Conditions are always built with paved.api.common.set_condition (`with_conditions`), never
by hand.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from paved.api.common import ConditionSpec, set_condition
from paved.kube.apply import server_side_apply
from paved.kube.client import ApiError, Json, request, resource_info

if TYPE_CHECKING:
    from paved.kube.port import KubePort

log = logging.getLogger(__name__)

CONDITIONS = "conditions"


def with_conditions(status: Mapping[str, Any] | None, conditions: Iterable[ConditionSpec], generation: int | None) -> Json:
    """A copy of `status` with each (type, status, reason, message) set via set_condition."""
    result = dict(status or {})
    current = list(result.get(CONDITIONS) or [])
    for type_, value, reason, message in conditions:
        current = set_condition(current, type_, value, reason, message, generation)
    result[CONDITIONS] = current
    return result


@dataclass(frozen=True)
class StatusWriter:
    """One writer of a kind's status: its field manager and what it owns there."""

    field_manager: str
    fields: frozenset[str] = frozenset()  # top-level status fields
    conditions: frozenset[str] = frozenset()  # condition types

    @classmethod
    def of_model(cls, field_manager: str, status_model: Any, conditions: Iterable[str], *,
                 without: Iterable[str] = ()) -> StatusWriter:
        """The writer of every field of a kind's status model (paved.api) but the conditions
        list, of which it owns `conditions`, and the fields `without` (other writers')."""
        return cls(field_manager, frozenset(status_model.model_fields) - {CONDITIONS} - set(without), frozenset(conditions))

    def owned(self, status: Mapping[str, Any] | None) -> Json:
        """This writer's part of `status` as the API server stores it: its fields without
        nulls (at any depth in maps), its conditions only; a field left out is absent."""
        status = status or {}
        part = {key: _stored(value) for key, value in status.items() if key in self.fields and value is not None}
        mine = [_stored(c) for c in status.get(CONDITIONS) or [] if isinstance(c, Mapping) and c.get("type") in self.conditions]
        if mine:
            part[CONDITIONS] = mine
        return part

    def with_part(self, status: Mapping[str, Any] | None, part: Mapping[str, Any]) -> Json:
        """`status` with this writer's part replaced by `part` (what `owned` returned); other
        writers' fields and conditions as they are."""
        status = status or {}
        others = [c for c in status.get(CONDITIONS) or [] if not (isinstance(c, Mapping) and c.get("type") in self.conditions)]
        result = {key: value for key, value in status.items() if key not in self.fields and key != CONDITIONS}
        result.update(part)
        result[CONDITIONS] = others + list(part.get(CONDITIONS) or [])
        return result

    def changed(self, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> frozenset[str]:
        """The top-level fields of this writer ("conditions" for any of its conditions) whose
        stored form differs between `old` and `new` (empty: writing `new` changes nothing)."""
        before, after = _keyed(self.owned(old)), _keyed(self.owned(new))
        return frozenset(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))

    def write(self, shown: Mapping[str, Any], status: Mapping[str, Any], *, kube: KubePort | None = None) -> Json | None:
        """Apply this writer's part of `status` to the object `shown` (as last read: apiVersion,
        kind, metadata, status); the object as the API server answers, or None when `shown`
        already holds exactly that part (no request). Sent through `kube` when given (a
        writer whose engine is handed a KubePort), else straight to the API server.

        Raises ApiError (404: the object is gone).
        """
        if not self.changed(shown.get("status"), status):
            return None
        applied = self.owned(status)
        answer = self._apply(shown, applied, kube)
        return self._drop_held_by_others(answer, applied) or answer

    def _apply(self, shown: Mapping[str, Any], status: Mapping[str, Any], kube: KubePort | None) -> Json:
        metadata = shown.get("metadata") or {}
        where = (str(shown.get("apiVersion")), str(shown.get("kind")), metadata.get("namespace"), metadata["name"])
        if kube is not None:
            return kube.apply_fields(status_body(*where, status), field_manager=self.field_manager, subresource="status")
        return apply_status(*where, status, field_manager=self.field_manager)

    def _drop_held_by_others(self, answer: Mapping[str, Any], applied: Mapping[str, Any]) -> Json | None:
        """Remove what the object shows of this writer's fields beyond `applied` that another
        field manager holds (an earlier Paved's merge patches, a hand edit): the apply cannot.

        One JSON patch of exactly those fields, each condition's position tested first; it
        happens once per object and field. Done from the apply's answer (fresh positions and
        managedFields); a patch that no longer fits (422) is left to the next write."""
        status = answer.get("status") or {}
        held = _held(_keyed(self.owned(status)), _keyed(applied), _others(answer, self.field_manager))
        if not held:
            return None
        operations = _removals(held, _keyed(applied), status.get(CONDITIONS) or [])
        metadata = answer.get("metadata") or {}
        info = resource_info(str(answer.get("apiVersion")), str(answer.get("kind")))
        try:
            return request("PATCH", info.path(metadata["name"], metadata.get("namespace"), subresource="status"),
                           operation="patch-status", body=operations, content_type="application/json-patch+json")
        except ApiError as error:
            if error.status not in (404, 409, 422):
                raise
            log.info("%s %s: fields of %s held by others not removed yet (%s %s)", answer.get("kind"),
                     metadata.get("name"), self.field_manager, error.status, error.reason)
            return None


def apply_status(api_version: str, kind: str, namespace: str | None, name: str, status: Mapping[str, Any], *,
                 field_manager: str) -> Json:
    """Server-side apply `status` to the object's status subresource as `field_manager`: the
    request behind StatusWriter.write, and no other caller (write it through a StatusWriter).
    A gone object answers 404."""
    body = status_body(api_version, kind, namespace, name, status)
    return server_side_apply(body, resource_info(api_version, kind), field_manager=field_manager, subresource="status")


def status_body(api_version: str, kind: str, namespace: str | None, name: str, status: Mapping[str, Any]) -> Json:
    """The body of a status apply: the object's identity and the status part, nothing else."""
    metadata: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "status": dict(status)}


# --------------------------------------------------------------------------- pure helpers


def _stored(value: Any) -> Any:
    """`value` as the API server stores it: a null map entry is no entry."""
    if isinstance(value, Mapping):
        return {key: _stored(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_stored(item) for item in value]
    return value


def _keyed(part: Mapping[str, Any]) -> dict[str, Any]:
    """`part` with its conditions as a map by type: compared and merged by type, as the
    API server merges them (their order in the list is not the writer's)."""
    result = dict(part)
    if CONDITIONS in result:
        result[CONDITIONS] = {c["type"]: c for c in result[CONDITIONS]}
    return result


def _unkeyed(part: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(part)
    if CONDITIONS in result:
        result[CONDITIONS] = list(result[CONDITIONS].values())
    return result


def _merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in extra.items():
        both = isinstance(value, Mapping) and isinstance(result.get(key), Mapping)
        result[key] = _merged(result[key], value) if both else value
    return result


def _others(answer: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
    """What every field manager but `field_manager` holds of the object's status (FieldsV1
    under f:status, merged)."""
    held: dict[str, Any] = {}
    for entry in (answer.get("metadata") or {}).get("managedFields") or []:
        theirs = (entry.get("fieldsV1") or {}).get("f:status")
        if theirs and (entry.get("manager"), entry.get("operation")) != (field_manager, "Apply"):
            held = _merged(held, theirs)
    return held


def _held(shown: Mapping[str, Any], applied: Mapping[str, Any], others: Mapping[str, Any], *,
          top: bool = True, by_type: bool = False) -> dict[str, Any]:
    """The sub-tree of `shown` beyond `applied` that `others` (FieldsV1 at this level) hold.
    Maps are followed key by key, the conditions map by its list-map keys
    (`k:{"type":...}`); anything else is one field."""
    left: dict[str, Any] = {}
    for key, value in shown.items():
        theirs = others.get("k:" + json.dumps({"type": key}, separators=(",", ":")) if by_type else f"f:{key}")
        conditions = top and key == CONDITIONS  # the list is shared: only some of its entries are this writer's
        if theirs is None:
            continue
        if key not in applied and not conditions:
            left[key] = value
        elif isinstance(value, Mapping) and isinstance(applied.get(key, {}), Mapping):
            deeper = _held(value, applied.get(key, {}), theirs, top=False, by_type=conditions)
            if deeper:
                left[key] = deeper
    return left


def _removals(held: Mapping[str, Any], applied: Mapping[str, Any], conditions: list[Any], path: str = "/status",
              by_type: bool = False) -> list[Json]:
    """JSON patch operations removing `held` (see _held) from the status; a condition is
    addressed by its position in `conditions`, tested first, last position first."""
    operations: list[Json] = []
    keys = list(held)
    if by_type:
        position = {c.get("type"): index for index, c in enumerate(conditions)}
        keys.sort(key=lambda type_: -position[type_])
    for key in keys:
        value, shared = held[key], path == "/status" and key == CONDITIONS
        if by_type:
            where = f"{path}/{position[key]}"
            operations.append({"op": "test", "path": f"{where}/type", "value": key})
        else:
            where = f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"
        if shared or (key in applied and isinstance(value, Mapping)):
            operations += _removals(value, applied.get(key, {}), conditions, where, by_type=shared)
        else:
            operations.append({"op": "remove", "path": where})
    return operations
