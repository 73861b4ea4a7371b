"""The KubePort contract: what paved.kube.port.KubePort does, as tests any implementation passes.

Imported by tests/unit/test_support_kube.py (FakeKube) and by
tests/integration/test_kube_port_contract.py (ApiKube on the real API server): so the fake
cannot drift from the API server in what Paved's code relies on. Each module provides two
fixtures: `port` (the KubePort) and `space` (a namespace to write in).
"""

from __future__ import annotations

from typing import Any

import pytest

from paved import API_VERSION
from paved.kube.apply import OWNER_ANNOTATION, OwnershipError, key_of
from paved.kube.client import ApiError
from paved.kube.port import KubePort, prune
from paved.providers.base import Owner


RBAC = "rbac.authorization.k8s.io/v1"


@pytest.fixture
def owner(port: KubePort, space: str) -> Owner:
    """The namespace itself: cluster-scoped, so it may own anything (and the garbage collector
    of a real cluster finds it, so it does not collect what the tests write)."""
    live = port.get("v1", "Namespace", space)
    assert live is not None
    return Owner("v1", "Namespace", space, None, live["metadata"]["uid"])


def anchor(port: KubePort, space: str) -> Owner:
    """A namespaced owner (a ConfigMap): what it cannot own (cluster scope) must be unowned."""
    live = port.create(config_map("anchor", space))
    return Owner("v1", "ConfigMap", "anchor", space, live["metadata"]["uid"])


def cluster_role(space: str) -> dict[str, Any]:
    return {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": f"contract-{space}"}, "rules": []}


def config_map(name: str, space: str, data: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": space, **({"labels": labels} if labels else {})},
            "data": data or {}}


def version(body: dict[str, Any] | None) -> int:
    assert body is not None
    return int(body["metadata"]["resourceVersion"])


def deployment(name: str, space: str, image: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": space},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}}


def test_create_get_and_a_taken_name(port: KubePort, space: str) -> None:
    assert port.get("v1", "ConfigMap", "made", space) is None
    made = port.create(config_map("made", space, {"a": "1"}))
    assert made["metadata"]["uid"] and version(made) > 0
    live = port.get("v1", "ConfigMap", "made", space, cached=False)
    assert live is not None and live["data"] == {"a": "1"} and version(live) == version(made)
    with pytest.raises(ApiError) as taken:
        port.create(config_map("made", space, {"a": "2"}))
    assert taken.value.already_exists
    assert port.get("v1", "ConfigMap", "made", space)["data"] == {"a": "1"}  # type: ignore[index]


def test_every_change_gets_a_newer_resource_version_and_a_repeat_none(port: KubePort, space: str, owner: Owner) -> None:
    first = port.apply(config_map("versions", space, {"a": "1"}), owner, field_manager="contract")
    again = port.apply(config_map("versions", space, {"a": "1"}), owner, field_manager="contract")
    assert version(again) == version(first)  # nothing changed: nothing written
    changed = port.apply(config_map("versions", space, {"a": "2"}), owner, field_manager="contract")
    assert version(changed) > version(first)
    patched = port.patch("v1", "ConfigMap", "versions", space, {"data": {"b": "3"}})
    assert version(patched) > version(changed) and patched["data"] == {"a": "2", "b": "3"}


def test_apply_decorates_for_the_owner(port: KubePort, space: str, owner: Owner) -> None:
    live = port.apply(config_map("owned", space, {"a": "1"}), owner)
    labels = live["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "paved" and labels["paved.dev/owner-uid"] == owner.uid
    assert [ref["uid"] for ref in live["metadata"]["ownerReferences"]] == [owner.uid]


def test_server_side_apply_keeps_field_ownership_per_manager(port: KubePort, space: str) -> None:
    def labelled(labels: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared", "namespace": space, "labels": labels}}

    port.create(config_map("shared", space, {"kept": "yes"}))
    port.apply_fields(labelled({"a": "1", "b": "2"}), field_manager="first")
    port.apply_fields(labelled({"c": "3"}), field_manager="second")
    live = port.apply_fields(labelled({"a": "1"}), field_manager="first")  # "first" stops applying b
    assert live["metadata"]["labels"] == {"a": "1", "c": "3"} and live["data"] == {"kept": "yes"}
    live = port.apply_fields(labelled({"a": "1", "c": "9"}), field_manager="first")  # forced: takes c over
    assert live["metadata"]["labels"] == {"a": "1", "c": "9"}
    live = port.apply_fields(labelled({}), field_manager="second")  # holds nothing any more: changes nothing
    assert live["metadata"]["labels"] == {"a": "1", "c": "9"}
    live = port.apply_fields(labelled({}), field_manager="first")
    assert not live["metadata"].get("labels")


def test_a_secrets_string_data_is_stored_as_data(port: KubePort, space: str, owner: Owner) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "folded", "namespace": space},
            "stringData": {"password": "p"}, "data": {"user": "dQ=="}}
    live = port.apply(body, owner)
    assert live["data"] == {"user": "dQ==", "password": "cA=="} and "stringData" not in live
    assert version(port.apply(body, owner)) == version(live)  # as stored: nothing changed


def test_an_apply_with_a_stale_resource_version_is_refused(port: KubePort, space: str) -> None:
    made = port.create(config_map("guarded", space, {"a": "1"}))
    port.patch("v1", "ConfigMap", "guarded", space, {"data": {"a": "2"}})
    body = config_map("guarded", space, {"a": "3"})
    body["metadata"]["resourceVersion"] = made["metadata"]["resourceVersion"]
    with pytest.raises(ApiError) as stale:
        port.apply_fields(body, field_manager="contract")
    assert stale.value.status == 409


def test_a_guarded_merge_patch_loses_to_a_write_in_between(port: KubePort, space: str) -> None:
    read = port.create(config_map("raced", space, {"a": "1", "b": "2"}))
    merged = port.merge_patch(read, {"data": {"b": None, "c": "3"}})
    assert merged["data"] == {"a": "1", "c": "3"}
    with pytest.raises(ApiError) as conflict:
        port.merge_patch(read, {"data": {"d": "4"}})  # `read` is older than `merged`
    assert conflict.value.status == 409 and not conflict.value.already_exists
    with pytest.raises(ApiError) as gone:
        port.patch("v1", "ConfigMap", "never-made", space, {"data": {"a": "1"}})
    assert gone.value.not_found


def test_delete_only_the_incarnation_asked_for(port: KubePort, space: str) -> None:
    made = port.create(config_map("doomed", space))
    assert port.delete("v1", "ConfigMap", "doomed", space, uid="not-" + made["metadata"]["uid"]) is False
    assert port.get("v1", "ConfigMap", "doomed", space) is not None
    assert port.delete("v1", "ConfigMap", "doomed", space, uid=made["metadata"]["uid"]) is True
    assert port.get("v1", "ConfigMap", "doomed", space) is None
    assert port.delete("v1", "ConfigMap", "doomed", space) is False


def test_list_by_label_selector_and_metadata_only(port: KubePort, space: str) -> None:
    port.create(config_map("l-red", space, {"secret": "MARKER"}, {"colour": "red", "tier": "a"}))
    port.create(config_map("l-blue", space, {"secret": "MARKER"}, {"colour": "blue"}))
    port.create(config_map("l-none", space, {"secret": "MARKER"}, {"other": "x"}))

    def names(selector: str) -> list[str]:
        return sorted(item["metadata"]["name"] for item in port.list("v1", "ConfigMap", space, selector)
                      if item["metadata"]["name"].startswith("l-"))

    assert names("") == ["l-blue", "l-none", "l-red"]
    assert names("colour=red") == ["l-red"] and names("colour==red") == ["l-red"]
    assert names("colour!=red") == ["l-blue", "l-none"]
    assert names("colour") == ["l-blue", "l-red"] and names("!colour") == ["l-none"]
    assert names("colour=red,tier=a") == ["l-red"] and names("colour=blue,tier") == []
    items = port.list("v1", "ConfigMap", space, "colour=red")
    assert items[0]["apiVersion"] == "v1" and items[0]["kind"] == "ConfigMap"
    listed = port.list("v1", "ConfigMap", space, "colour=red", metadata_only=True)
    assert [item["metadata"]["name"] for item in listed] == ["l-red"] and "MARKER" not in repr(listed)


def test_generation_counts_spec_changes_only(port: KubePort, space: str, owner: Owner) -> None:
    first = port.apply(deployment("gen", space, "app:1"), owner)
    assert first["metadata"]["generation"] == 1
    labelled = port.apply_fields({"apiVersion": "apps/v1", "kind": "Deployment",
                                  "metadata": {"name": "gen", "namespace": space, "labels": {"x": "y"}}},
                                 field_manager="labeller")
    assert labelled["metadata"]["generation"] == 1 and version(labelled) > version(first)
    changed = port.apply(deployment("gen", space, "app:2"), owner)
    assert changed["metadata"]["generation"] == 2
    assert changed["metadata"]["labels"]["x"] == "y"  # the labeller's field stays


def test_status_by_server_side_apply_keeps_other_writers_conditions(port: KubePort, space: str) -> None:
    def status(manager: str, conditions: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        body = {"apiVersion": API_VERSION, "kind": "DatabaseIntent", "metadata": {"name": "db", "namespace": space},
                "status": {**fields, "conditions": conditions}}
        return port.apply_fields(body, field_manager=manager, subresource="status")

    def condition(type_: str, reason: str) -> dict[str, Any]:
        return {"type": type_, "status": "True", "reason": reason, "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}

    with pytest.raises(ApiError) as absent:
        status("reconcile", [condition("Ready", "One")])
    assert absent.value.not_found
    port.create({"apiVersion": API_VERSION, "kind": "DatabaseIntent", "metadata": {"name": "db", "namespace": space},
                 "spec": {"engine": "postgresql", "version": "16"}})
    status("reconcile", [condition("Ready", "One"), condition("Synced", "One")], composition="c")
    status("audit", [condition("PolicyCompliant", "Fine")])
    live = status("reconcile", [condition("Ready", "Two")])  # Synced and composition no longer applied
    by_type = {c["type"]: c["reason"] for c in live["status"]["conditions"]}
    assert by_type == {"Ready": "Two", "PolicyCompliant": "Fine"} and "composition" not in live["status"]
    assert port.get(API_VERSION, "DatabaseIntent", "db", space)["status"] == live["status"]  # type: ignore[index]


def test_create_as_an_owners_child(port: KubePort, space: str, owner: Owner) -> None:
    made = port.create(config_map("child", space, {"a": "1"}), owner)
    labels = made["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "paved" and labels["paved.dev/owner-uid"] == owner.uid
    assert [ref["uid"] for ref in made["metadata"]["ownerReferences"]] == [owner.uid]
    with pytest.raises(ApiError) as taken:
        port.create(config_map("child", space, {"a": "2"}), owner)
    assert taken.value.already_exists


def test_what_cannot_be_owned_is_applied_only_when_allowed_unowned(port: KubePort, space: str) -> None:
    namespaced_owner = anchor(port, space)
    with pytest.raises(OwnershipError):
        port.apply(cluster_role(space), namespaced_owner)
    assert port.get(RBAC, "ClusterRole", f"contract-{space}") is None
    try:
        live = port.apply(cluster_role(space), namespaced_owner, allow_unowned=True)
        metadata = live["metadata"]
        assert "namespace" not in metadata and not metadata.get("ownerReferences")
        assert metadata["labels"]["paved.dev/owner-uid"] == namespaced_owner.uid
        assert metadata["annotations"][OWNER_ANNOTATION] == f"v1/ConfigMap/{space}/anchor"
    finally:
        port.delete(RBAC, "ClusterRole", f"contract-{space}")


def test_which_kinds_are_namespaced(port: KubePort) -> None:
    assert port.namespaced("v1", "ConfigMap") and port.namespaced("apps/v1", "Deployment")
    assert not port.namespaced("v1", "Namespace") and not port.namespaced(RBAC, "ClusterRole")
    assert port.namespaced(API_VERSION, "DatabaseIntent") and not port.namespaced(API_VERSION, "Composition")


def test_prune_deletes_only_the_owners_objects_not_kept(port: KubePort, space: str) -> None:
    namespaced_owner = anchor(port, space)
    kept = port.apply(config_map("p-kept", space), namespaced_owner)
    port.apply(config_map("p-dropped", space), namespaced_owner)
    port.create(config_map("p-stranger", space, labels={"app.kubernetes.io/managed-by": "paved"}))
    port.apply(cluster_role(space), namespaced_owner, allow_unowned=True)
    kinds = [("v1", "ConfigMap"), (RBAC, "ClusterRole"), ("example.com/v1", "NotServed")]
    try:
        # A finalizer's: only what the garbage collector cannot reach (no ownerReference).
        assert prune(port, namespaced_owner, set(), kinds, only_unowned=True) == [key_of(cluster_role(space))]
        assert port.get(RBAC, "ClusterRole", f"contract-{space}") is None
        assert prune(port, namespaced_owner, {key_of(kept)}, kinds) == [key_of(config_map("p-dropped", space))]
        left = {item["metadata"]["name"] for item in port.list("v1", "ConfigMap", space)}
        assert {"anchor", "p-kept", "p-stranger"} <= left and "p-dropped" not in left
    finally:
        port.delete(RBAC, "ClusterRole", f"contract-{space}")
