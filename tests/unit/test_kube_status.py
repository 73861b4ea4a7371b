"""paved.kube.status: what a status writer owns, when it writes, and what it removes.

The requests are recorded here; tests/integration/test_status_writers.py sends them to the
real API server (two writers racing, objects written by the old merge patches).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from paved.kube import status as kube_status
from paved.kube.client import ResourceInfo
from paved.kube.status import StatusWriter, with_conditions

RECONCILE = StatusWriter("paved-reconcile", frozenset({"observedGeneration", "renderHash", "expiresAt", "progress"}),
                         frozenset({"Ready", "Synced"}))
AUDIT = StatusWriter("paved-policy-audit", conditions=frozenset({"PolicyCompliant"}))


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


class Requests:
    """The status requests a writer sends; applies answer `answer` (default: the object with
    the applied status and no managedFields)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.applied: list[tuple[str, dict[str, Any]]] = []
        self.patches: list[list[dict[str, Any]]] = []
        self.answer: dict[str, Any] | None = None
        monkeypatch.setattr(kube_status, "apply_status", self.apply_status)
        monkeypatch.setattr(kube_status, "request", self.request)
        monkeypatch.setattr(kube_status, "resource_info",
                            lambda api_version, kind: ResourceInfo(api_version, kind, kind.lower() + "s", True))

    def apply_status(self, api_version: str, kind: str, namespace: str | None, name: str, status: Any, *,
                     field_manager: str) -> dict[str, Any]:
        self.applied.append((field_manager, copy.deepcopy(dict(status))))
        if self.answer is not None:
            return copy.deepcopy(self.answer)
        return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace},
                "status": copy.deepcopy(dict(status))}

    def request(self, method: str, path: str, *, operation: str, body: Any, content_type: str, **_: Any) -> dict[str, Any]:
        assert (method, content_type) == ("PATCH", "application/json-patch+json") and path.endswith("/status")
        self.patches.append(body)
        return {"status": {}}


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> Requests:
    return Requests(monkeypatch)


def intent(status: dict[str, Any] | None = None, managed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity",
                            "metadata": {"name": "a", "namespace": "ns", "generation": 2}}
    if status is not None:
        body["status"] = status
    if managed is not None:
        body["metadata"]["managedFields"] = managed
    return body


def test_a_writer_owns_its_fields_and_conditions_without_nulls() -> None:
    status = with_conditions({"observedGeneration": 2, "renderHash": None, "expiresAt": "2030-01-01T00:00:00Z",
                              "progress": {"stage": "A", "pending": None, "done": {}}, "grants": []},
                             [("Ready", True, "Ready", "ok"), ("PolicyCompliant", True, "NoPolicies", "")], 2)
    owned = RECONCILE.owned(status)
    assert set(owned) == {"observedGeneration", "expiresAt", "progress", "conditions"}  # not grants, not a null
    assert owned["progress"] == {"stage": "A", "done": {}}  # a null is no entry; an empty map is one
    assert [c["type"] for c in owned["conditions"]] == ["Ready"]
    assert AUDIT.owned(status) == {"conditions": [condition(status, "PolicyCompliant")]}
    assert RECONCILE.owned({"observedGeneration": 2, "conditions": [condition(status, "PolicyCompliant")]}) == \
        {"observedGeneration": 2}  # no conditions of its own: the key is left out, so its earlier ones go


def test_changed_is_empty_when_nothing_changed_and_ignores_other_writers() -> None:
    first = with_conditions({"observedGeneration": 2}, [("Ready", True, "Ready", "ok"), ("Synced", True, "Applied", "")], 2)
    again = with_conditions(first, [("Ready", True, "Ready", "ok"), ("Synced", True, "Applied", "")], 2)
    assert RECONCILE.changed(first, again) == frozenset()
    reordered = {**first, "conditions": list(reversed(first["conditions"]))}
    audited = with_conditions(first, [("PolicyCompliant", False, "Violation", "p/r")], 2)
    assert RECONCILE.changed(reordered, audited) == frozenset()  # order, and the audit's condition, are not its business
    assert RECONCILE.changed({**first, "expiresAt": None}, first) == frozenset()  # None is absent
    flipped = with_conditions(first, [("Ready", False, "RenderFailed", "spec.x: bad")], 3)
    assert RECONCILE.changed(first, flipped) == {"conditions"}
    assert RECONCILE.changed(first, {**first, "renderHash": "h"}) == {"renderHash"}


def test_write_sends_nothing_when_the_object_shows_it_already(requests: Requests) -> None:
    status = with_conditions({"observedGeneration": 2}, [("Ready", True, "Ready", "ok")], 2)
    shown = intent(with_conditions(status, [("PolicyCompliant", True, "NoPolicies", "")], 2))
    assert RECONCILE.write(shown, with_conditions(shown["status"], [("Ready", True, "Ready", "ok")], 2)) is None
    assert requests.applied == [] and requests.patches == []


def test_write_applies_only_the_writers_part(requests: Requests) -> None:
    shown = intent(with_conditions({}, [("PolicyCompliant", True, "NoPolicies", "")], 2))
    status = with_conditions({**shown["status"], "observedGeneration": 2, "expiresAt": None, "grants": [{"kind": "Role"}]},
                             [("Ready", True, "Ready", "ok")], 2)
    assert RECONCILE.write(shown, status) is not None
    [(manager, applied)] = requests.applied
    assert manager == "paved-reconcile"
    assert applied == {"observedGeneration": 2, "conditions": [condition(status, "Ready")]}
    assert requests.patches == []  # nothing held by another manager


def test_what_another_manager_holds_of_the_writers_fields_is_removed_once(requests: Requests) -> None:
    """An object written by the old merge patches: `paved` (an Update manager) still holds
    expiresAt, progress.old and the Synced condition; the reconcile has dropped them."""
    legacy = {"manager": "paved", "operation": "Update", "subresource": "status", "fieldsV1": {"f:status": {
        "f:expiresAt": {}, "f:progress": {"f:old": {}, "f:stage": {}},
        "f:conditions": {".": {}, 'k:{"type":"PolicyCompliant"}': {}, 'k:{"type":"Ready"}': {"f:reason": {}},
                         'k:{"type":"Synced"}': {"f:status": {}}}}}}
    mine = {"manager": "paved-reconcile", "operation": "Apply", "subresource": "status", "fieldsV1": {"f:status": {
        "f:observedGeneration": {}, "f:progress": {"f:stage": {}}, "f:conditions": {'k:{"type":"Ready"}': {"f:reason": {}}}}}}
    wanted = with_conditions({"observedGeneration": 2, "progress": {"stage": "B"}}, [("Ready", True, "Ready", "ok")], 2)
    answer = intent({**wanted, "expiresAt": "2030-01-01T00:00:00Z", "progress": {"stage": "B", "old": 1},
                     "conditions": with_conditions(wanted, [("PolicyCompliant", True, "NoPolicies", ""),
                                                            ("Synced", True, "Applied", "")], 2)["conditions"]},
                    managed=[legacy, mine])
    requests.answer = answer
    RECONCILE.write(intent({}), wanted)
    assert len(requests.applied) == 1
    [operations] = requests.patches
    assert sorted(operations, key=lambda op: op["path"]) == [
        {"op": "remove", "path": "/status/conditions/2"},
        {"op": "test", "path": "/status/conditions/2/type", "value": "Synced"},  # by position, tested first
        {"op": "remove", "path": "/status/expiresAt"},
        {"op": "remove", "path": "/status/progress/old"},
    ]  # not Ready (applied), not PolicyCompliant (not the reconcile's), never the whole list
    assert operations.index({"op": "test", "path": "/status/conditions/2/type", "value": "Synced"}) + 1 == \
        operations.index({"op": "remove", "path": "/status/conditions/2"})


def test_a_writer_that_owns_no_condition_now_never_removes_the_list(requests: Requests) -> None:
    legacy = {"manager": "paved", "operation": "Update", "subresource": "status",
              "fieldsV1": {"f:status": {"f:conditions": {'k:{"type":"Ready"}': {}, 'k:{"type":"PolicyCompliant"}': {}}}}}
    requests.answer = intent(with_conditions({}, [("PolicyCompliant", True, "NoPolicies", ""), ("Ready", True, "Ready", "")], 2),
                             managed=[legacy])
    RECONCILE.write(intent({}), {"observedGeneration": 2})
    assert requests.patches == [[{"op": "test", "path": "/status/conditions/1/type", "value": "Ready"},
                                 {"op": "remove", "path": "/status/conditions/1"}]]


def writers_by_kind() -> dict[str, list[StatusWriter]]:
    """Every status writer of the operator, by the kinds it writes."""
    from paved.api.kinds import INTENT_KINDS
    from paved.engines.audit import AUDIT_STATUS, PLATFORM_STATUS
    from paved.engines.compose import ComposeEngine
    from paved.engines.compose.waves import COMPOSITION_ROLLOUT_STATUS, REVISION_STATUS
    from paved.engines.database import DATABASES, DRIFT_CHECK_STATUS
    from paved.engines.identity import IdentityEngine
    from paved.engines.rollout import ROLLOUT_STATUS
    from paved.engines.secretsync import REF_STATUS, STORE_STATUS
    from paved.handlers.platform import COMPOSITION_STATUS

    identities = IdentityEngine(ComposeEngine())
    identities.stop()
    writers: dict[str, list[StatusWriter]] = {
        "DatabaseIntent": [DATABASES.status_writer, DRIFT_CHECK_STATUS],
        "AgentIdentity": [identities.kind.status_writer],
        "ExternalSecretRef": [REF_STATUS],
        "ProgressiveRollout": [ROLLOUT_STATUS],
        "SecretStore": [STORE_STATUS],
        "ClusterSecretStore": [STORE_STATUS],
        "Composition": [COMPOSITION_STATUS, COMPOSITION_ROLLOUT_STATUS],
        "CompositionRevision": [REVISION_STATUS],
        **{kind: [writer] for kind, writer in PLATFORM_STATUS.items()},
    }
    for kind in INTENT_KINDS:
        writers[kind].append(AUDIT_STATUS)
    return writers


def test_per_kind_every_status_field_has_one_writer_and_no_condition_two() -> None:
    from paved.api.kinds import KINDS

    writers = writers_by_kind()
    reconciled = [info for info in KINDS if info.reconciled]  # nothing writes an analysis template's status
    assert set(writers) == {info.kind for info in reconciled}
    for info in reconciled:
        fields = [field for writer in writers[info.kind] for field in writer.fields]
        conditions = [type_ for writer in writers[info.kind] for type_ in writer.conditions]
        assert sorted(fields) == sorted(set(info.status.model_fields) - {"conditions"}), info.kind
        assert len(conditions) == len(set(conditions)) and "Ready" in conditions, info.kind
        managers = [writer.field_manager for writer in writers[info.kind]]
        assert len(managers) == len(set(managers)), info.kind


def test_every_writer_is_in_the_table_of_the_status_module() -> None:
    for writer in {writer for kind_writers in writers_by_kind().values() for writer in kind_writers}:
        assert f"| {writer.field_manager} |" in (kube_status.__doc__ or ""), writer.field_manager


def test_every_status_request_is_a_status_writers() -> None:
    """No status request outside StatusWriter (paved.kube.status): no direct apply_status, no
    other request to a status subresource, no Kopf `patch.status`."""
    import ast
    from pathlib import Path

    import paved

    def is_status_request(node: ast.AST) -> bool:
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            return name == "apply_status" or any(
                keyword.arg == "subresource" and isinstance(keyword.value, ast.Constant) and keyword.value.value == "status"
                for keyword in node.keywords)
        return isinstance(node, ast.Attribute) and node.attr == "status" and getattr(node.value, "id", "") == "patch"

    root = Path(paved.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        allowed: set[int] = set()
        if path == root / "kube" / "status.py":  # the writer's own requests, and apply_status itself
            for node in ast.walk(tree):
                if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name in ("StatusWriter", "apply_status"):
                    allowed |= {id(inner) for inner in ast.walk(node)}
        found += [f"{path.relative_to(root)}:{node.lineno}" for node in ast.walk(tree)
                  if is_status_request(node) and id(node) not in allowed]
    assert not found, "status written outside a StatusWriter: " + ", ".join(found)
