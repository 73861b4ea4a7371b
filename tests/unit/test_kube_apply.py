"""Pure parts of paved.kube: body decoration (labels, ownerReferences), drift, paths (status: test_kube_status.py)."""

from __future__ import annotations

import pytest

from paved.kube import apply as kube
from paved.kube.client import ApiError, ResourceInfo
from paved.kube.events import MAX_MESSAGE, event_body
from paved.providers.base import Owner

OWNER = Owner(api_version="paved.dev/v1alpha1", kind="AgentIdentity", name="agent", namespace="team-a", uid="uid-1", generation=3)


def role(namespace: str | None = None, **extra: object) -> dict:
    metadata: dict = {"name": "reader"}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": metadata,
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}], **extra}


def test_decorate_adds_labels_and_controller_owner_reference() -> None:
    body = kube.decorate(role(), OWNER, namespaced=True)
    metadata = body["metadata"]
    assert metadata["namespace"] == "team-a"
    assert metadata["labels"] == {kube.MANAGED_BY_LABEL: "paved", kube.OWNER_UID_LABEL: "uid-1"}
    assert metadata["ownerReferences"] == [{
        "apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity", "name": "agent", "uid": "uid-1",
        "controller": True, "blockOwnerDeletion": True,
    }]
    assert kube.OWNER_ANNOTATION not in metadata.get("annotations", {})


def test_decorate_does_not_mutate_its_input_and_keeps_user_labels() -> None:
    original = role("team-a")
    original["metadata"]["labels"] = {"team": "a"}
    body = kube.decorate(original, OWNER, namespaced=True)
    assert "ownerReferences" not in original["metadata"]
    assert original["metadata"]["labels"] == {"team": "a"}
    assert body["metadata"]["labels"]["team"] == "a"


def test_decorate_replaces_an_existing_reference_to_the_same_owner() -> None:
    original = role("team-a")
    original["metadata"]["ownerReferences"] = [{"uid": "uid-1", "name": "old"}, {"uid": "other", "name": "x"}]
    references = kube.decorate(original, OWNER, namespaced=True)["metadata"]["ownerReferences"]
    assert [ref["uid"] for ref in references] == ["other", "uid-1"]


@pytest.mark.parametrize(
    ("namespace", "namespaced"),
    [("team-b", True), (None, False)],
    ids=["other-namespace", "cluster-scoped"],
)
def test_unownable_child_is_refused_unless_allowed(namespace: str | None, namespaced: bool) -> None:
    body = role(namespace)
    with pytest.raises(kube.OwnershipError, match="cannot have an ownerReference"):
        kube.decorate(body, OWNER, namespaced=namespaced)
    decorated = kube.decorate(body, OWNER, namespaced=namespaced, allow_unowned=True)
    assert "ownerReferences" not in decorated["metadata"]
    assert decorated["metadata"]["labels"][kube.OWNER_UID_LABEL] == "uid-1"
    assert decorated["metadata"]["annotations"][kube.OWNER_ANNOTATION] == "paved.dev/v1alpha1/AgentIdentity/team-a/agent"
    if not namespaced:
        assert "namespace" not in decorated["metadata"]


def test_cluster_scoped_owner_may_own_anything() -> None:
    owner = Owner("paved.dev/v1alpha1", "Composition", "c", None, "uid-2")
    assert kube.can_own(owner, child_namespace="x", child_namespaced=True)
    assert kube.can_own(owner, child_namespace=None, child_namespaced=False)


def test_decorate_requires_a_name() -> None:
    with pytest.raises(ValueError, match="metadata.name"):
        kube.decorate({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {}}, OWNER, namespaced=True)


def test_drift_ignores_server_added_fields_and_foreign_owner_references() -> None:
    desired = kube.decorate(role(), OWNER, namespaced=True)
    live = kube.decorate(role(), OWNER, namespaced=True)
    live["metadata"].update(uid="x", resourceVersion="9", managedFields=[{}])
    live["metadata"]["ownerReferences"].insert(0, {"uid": "someone-else"})
    live["metadata"]["labels"]["added-by-someone"] = "yes"
    assert kube.drift(desired, live) == []


def test_drift_names_changed_removed_and_resized_fields() -> None:
    desired = kube.decorate(role(), OWNER, namespaced=True)
    live = kube.decorate(role(), OWNER, namespaced=True)
    live["rules"][0]["verbs"] = ["get", "delete"]
    del live["metadata"]["labels"][kube.MANAGED_BY_LABEL]
    live["metadata"]["ownerReferences"] = []
    assert sorted(kube.drift(desired, live)) == [
        "metadata.labels.app.kubernetes.io/managed-by",
        "metadata.ownerReferences",
        "rules[0].verbs",
    ]


def test_drift_treats_empty_declarations_as_absent() -> None:
    assert kube.drift({"data": {}, "list": [], "x": None}, {}) == []


def test_key_of_and_owner_selector() -> None:
    assert str(kube.key_of(role("team-a"))) == "Role/team-a/reader"
    assert str(kube.ObjectKey("rbac.authorization.k8s.io/v1", "ClusterRole", "", "r")) == "ClusterRole/r"
    assert kube.owner_selector(OWNER) == "app.kubernetes.io/managed-by=paved,paved.dev/owner-uid=uid-1"


def test_resource_paths() -> None:
    core = ResourceInfo("v1", "Secret", "secrets", True)
    assert core.path("s", "ns") == "/api/v1/namespaces/ns/secrets/s"
    assert core.path() == "/api/v1/secrets"
    custom = ResourceInfo("paved.dev/v1alpha1", "AgentIdentity", "agentidentities", True)
    assert custom.path("a", "ns", subresource="status") == "/apis/paved.dev/v1alpha1/namespaces/ns/agentidentities/a/status"
    cluster = ResourceInfo("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False)
    assert cluster.path("r", "ignored") == "/apis/rbac.authorization.k8s.io/v1/clusterroles/r"


def test_api_error_classification() -> None:
    assert ApiError(503, "ServiceUnavailable", "").transient
    assert ApiError(0, "", "connection refused").transient
    assert not ApiError(422, "Invalid", "spec.x: bad").transient
    assert ApiError(409, "AlreadyExists", "").already_exists
    assert not ApiError(409, "Conflict", "").already_exists


def test_event_body_is_bounded_and_names_the_owner() -> None:
    body = event_body(OWNER, "Granted", "x" * 5000)
    assert len(body["message"]) == MAX_MESSAGE
    assert body["involvedObject"]["uid"] == "uid-1"
    assert body["metadata"]["namespace"] == "team-a"
    assert body["metadata"]["name"].startswith("agent.")


def test_secret_string_data_is_compared_as_the_stored_base64_data() -> None:
    desired = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c"}, "stringData": {"host": "db", "port": "5432"}}
    stored = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c"}, "data": {"host": "ZGI=", "port": "NTQzMg=="}}
    assert kube.drift(desired, stored) == []
    changed = {**stored, "data": {"host": "b3RoZXI=", "port": "NTQzMg=="}}
    assert kube.drift(desired, changed) == ["data.host"]
