"""Pure parts of the drift watch: finding a child's intent, recognising Paved's own writes."""

from __future__ import annotations

from paved.handlers.children import owner_ref_of, written_by_paved
from paved.kube import apply as kube
from paved.providers.base import Owner


def child(**metadata: object) -> dict:
    base = {"name": "r", "namespace": "team-a", "labels": {kube.MANAGED_BY_LABEL: "paved", kube.OWNER_UID_LABEL: "uid-1"}}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {**base, **metadata}}


def test_owner_from_the_controller_reference() -> None:
    body = child(ownerReferences=[{"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity", "name": "agent", "uid": "uid-1"}])
    assert owner_ref_of(body) == Owner("paved.dev/v1alpha1", "AgentIdentity", "agent", "team-a", "uid-1")


def test_owner_from_the_annotation_of_a_child_in_another_namespace() -> None:
    body = child(namespace="team-b", annotations={kube.OWNER_ANNOTATION: "paved.dev/v1alpha1/AgentIdentity/team-a/agent"})
    assert owner_ref_of(body) == Owner("paved.dev/v1alpha1", "AgentIdentity", "agent", "team-a", "uid-1")


def test_no_owner_without_the_uid_label_or_a_matching_reference() -> None:
    assert owner_ref_of({"metadata": {"name": "x"}}) is None
    foreign = child(ownerReferences=[{"apiVersion": "v1", "kind": "X", "name": "y", "uid": "other"}])
    assert owner_ref_of(foreign) is None


def test_written_by_paved_looks_at_the_newest_managed_fields_entry() -> None:
    ours = child(managedFields=[
        {"manager": "kubectl-edit", "time": "2026-01-01T00:00:00Z"},
        {"manager": "paved", "time": "2026-01-01T00:00:05Z"},
    ])
    assert written_by_paved(ours)
    theirs = child(managedFields=[
        {"manager": "paved", "time": "2026-01-01T00:00:00Z"},
        {"manager": "kubectl-edit", "time": "2026-01-01T00:00:05Z"},
    ])
    assert not written_by_paved(theirs)
    tie = child(managedFields=[
        {"manager": "paved", "time": "2026-01-01T00:00:05Z"},
        {"manager": "kubectl-patch", "time": "2026-01-01T00:00:05Z"},
    ])
    assert not written_by_paved(tie)
    assert not written_by_paved(child())
