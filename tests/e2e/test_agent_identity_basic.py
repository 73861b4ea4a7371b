"""AgentIdentity, first slice, end to end against the real control plane and the real operator.

The operator runs as deploy/'s ServiceAccount (fixture `operator`), so these tests also
prove the shipped RBAC is sufficient. Permissions are checked by the API server itself with
SubjectAccessReview: the declared verb is allowed, its neighbours are not.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import yaml

from e2e.cluster import Cluster, condition
from fixtures.cluster import Kubectl, wait_for
from fixtures.operator import OperatorProcess
from paved.identity.ceiling import AGGREGATION_LABEL

pytestmark = pytest.mark.cluster

READY_TIMEOUT = 60


def identity_manifest(name: str, namespace: str, capabilities: list[dict[str, Any]]) -> str:
    return yaml.safe_dump({
        "apiVersion": "paved.dev/v1alpha1",
        "kind": "AgentIdentity",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"owner": "team-e2e", "purpose": "e2e test", "capabilities": capabilities},
    })


def children(cluster: Cluster, namespace: str, uid: str) -> list[dict[str, Any]]:
    """Paved's ServiceAccounts, Roles and RoleBindings of intent `uid` in `namespace`."""
    return cluster.items("serviceaccounts,roles,rolebindings", namespace, selector=f"paved.dev/owner-uid={uid}")


def wait_reason(cluster: Cluster, namespace: str, name: str, type_: str, reason: str, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    """The identity once its `type_` condition has `reason`."""
    return cluster.wait_condition("agentidentity", name, namespace, type_, status=None, reason=reason, timeout=timeout)


def wait_ready(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.wait_condition("agentidentity", name, namespace, timeout=READY_TIMEOUT)


def test_identity_gets_least_privilege_rbac_restored_on_drift_and_collected_on_delete(
    operator: OperatorProcess, kubectl: Kubectl, cluster: Cluster, namespace: str
) -> None:
    cluster.apply(identity_manifest("reporter", namespace, [{"resources": ["configmaps"], "verbs": ["get", "list"]}]))
    intent = wait_ready(cluster, namespace, "reporter")
    uid = intent["metadata"]["uid"]
    status = intent["status"]

    # Ready with the generation it describes, and what is live.
    assert condition(intent, "Ready")["status"] == "True"
    assert condition(intent, "Ready")["observedGeneration"] == intent["metadata"]["generation"]
    assert status["observedGeneration"] == intent["metadata"]["generation"]
    assert condition(intent, "Synced")["status"] == "True"
    assert status["serviceAccount"] == "reporter"
    assert status["composition"] == "agent-identity-default"
    assert {g["kind"] for g in status["grants"]} == {"Role", "RoleBinding"}

    # ServiceAccount, Role, RoleBinding: labelled, owned by the intent (garbage collection).
    account = cluster.get("serviceaccount", "reporter", namespace)
    assert account is not None
    role_name = next(g["name"] for g in status["grants"] if g["kind"] == "Role")
    role = cluster.get("role", role_name, namespace)
    binding = cluster.get("rolebinding", role_name, namespace)
    for child in (account, role, binding):
        assert child is not None
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "paved"
        references = child["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r.get("controller")) for r in references] == [("AgentIdentity", uid, True)]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]  # type: ignore[index]

    # The API server agrees: exactly the declared permissions.
    user = f"system:serviceaccount:{namespace}:reporter"
    assert cluster.allowed(user, "get", "configmaps", namespace)
    assert cluster.allowed(user, "list", "configmaps", namespace)
    assert not cluster.allowed(user, "delete", "configmaps", namespace)
    assert not cluster.allowed(user, "get", "secrets", namespace)
    assert not cluster.allowed(user, "get", "configmaps", "default")

    # Quiet at idle: nothing rewrites the intent or its children, once both status writers (the
    # reconcile's Ready, the audit's PolicyCompliant, which may come later under load) have written.
    intent = cluster.wait_condition("agentidentity", "reporter", namespace, "PolicyCompliant", status=None, timeout=READY_TIMEOUT)
    versions = {key: obj["metadata"]["resourceVersion"] for key, obj in {"intent": intent, "role": role, "binding": binding}.items()}  # type: ignore[index]
    time.sleep(3)
    assert cluster.get("agentidentity", "reporter", namespace)["metadata"]["resourceVersion"] == versions["intent"]  # type: ignore[index]
    assert cluster.get("role", role_name, namespace)["metadata"]["resourceVersion"] == versions["role"]  # type: ignore[index]

    # Drift: a deleted RoleBinding comes back (a new object), an edited Role is put back.
    kubectl("delete", "rolebinding", role_name, "-n", namespace, "--wait=true")
    restored = wait_for(lambda: cluster.get("rolebinding", role_name, namespace), timeout=20, what="RoleBinding restored")
    assert restored["metadata"]["uid"] != binding["metadata"]["uid"]  # type: ignore[index]
    kubectl("patch", "role", role_name, "-n", namespace, "--type=json",
            "-p", json.dumps([{"op": "add", "path": "/rules/0/verbs/-", "value": "delete"}]))
    wait_for(lambda: cluster.get("role", role_name, namespace)["rules"][0]["verbs"] == ["get", "list"],  # type: ignore[index]
             timeout=20, what="Role rules restored")
    assert not cluster.allowed(user, "delete", "configmaps", namespace)

    assert operator.metric("paved_reconcile_total", kind="AgentIdentity") >= 1

    # Deleting the intent removes the children through the garbage collector.
    kubectl("delete", "agentidentity", "reporter", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(lambda: not children(cluster, namespace, uid), timeout=60, what="children garbage-collected")
    assert not cluster.allowed(user, "get", "configmaps", namespace)


def test_neighbour_namespace_grant_is_removed_by_the_finalizer(
    operator: OperatorProcess, kubectl: Kubectl, cluster: Cluster, namespace: str
) -> None:
    neighbour = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", neighbour)
    try:
        capabilities = [{"resources": ["configmaps"], "verbs": ["get"], "namespaces": [neighbour]}]
        cluster.apply(identity_manifest("wide", namespace, capabilities))
        intent = wait_ready(cluster, namespace, "wide")
        assert "paved.dev/cleanup" in intent["metadata"]["finalizers"]
        user = f"system:serviceaccount:{namespace}:wide"
        assert cluster.allowed(user, "get", "configmaps", neighbour)
        assert not cluster.allowed(user, "list", "configmaps", neighbour)
        remote = cluster.items("roles", neighbour, selector=f"paved.dev/owner-uid={intent['metadata']['uid']}")
        assert len(remote) == 1 and not remote[0]["metadata"].get("ownerReferences")

        kubectl("delete", "agentidentity", "wide", "-n", namespace, "--wait=true", "--timeout=60s")
        wait_for(lambda: not cluster.allowed(user, "get", "configmaps", neighbour), timeout=30, what="neighbour grant revoked")
    finally:
        kubectl("delete", "namespace", neighbour, "--wait=false", check=False)


def test_operator_restart_rewrites_nothing(operator: OperatorProcess, cluster: Cluster, namespace: str) -> None:
    """Resuming after a restart observes every child and writes nothing when all is in place."""
    cluster.apply(identity_manifest("steady", namespace, [{"resources": ["pods"], "verbs": ["get"]}]))
    wait_ready(cluster, namespace, "steady")

    def versions() -> dict[str, str]:
        listing = cluster.items("agentidentities,serviceaccounts,roles,rolebindings", namespace)
        return {f"{item['kind']}/{item['metadata']['name']}": item["metadata"]["resourceVersion"] for item in listing}

    before = versions()
    operator.restart()
    wait_for(lambda: operator.metric("paved_reconcile_total", kind="AgentIdentity", result="unchanged") >= 1,
             timeout=30, what="the resumed reconcile")
    assert versions() == before


def allowance_policy(name: str, label: str, allow: list[str]) -> str:
    return yaml.safe_dump({
        "apiVersion": "paved.dev/v1alpha1",
        "kind": "IntentPolicy",
        "metadata": {"name": name},
        "spec": {"match": {"kinds": ["AgentIdentity"], "namespaceSelector": {"matchLabels": {"paved-e2e/allow": label}}},
                 "allow": allow},
    })


def test_cluster_scope_and_wildcards_only_while_an_intent_policy_allows_them(
    operator: OperatorProcess, kubectl: Kubectl, cluster: Cluster, namespace: str
) -> None:
    user = f"system:serviceaccount:{namespace}:node-reader"
    label = namespace  # the platform's label: selects the allowance policy below
    kubectl("label", "namespace", namespace, f"paved-e2e/allow={label}")
    # Paved's default ceiling holds explicit verbs only; a platform wanting `*` labels its own role in.
    extension = f"e2e-wildcard-ceiling-{namespace}"
    kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": extension, "labels": {AGGREGATION_LABEL: "true"}},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]}))
    capabilities = [{"resources": ["nodes"], "verbs": ["get", "list"], "clusterWide": True},
                    {"resources": ["configmaps"], "verbs": ["*"]}]
    cluster.apply(identity_manifest("node-reader", namespace, capabilities))

    # No policy allows it: refused, naming the field, and nothing at all is granted.
    ready = condition(wait_reason(cluster, namespace, "node-reader", "Ready", "NotAllowed"), "Ready")
    assert ready["status"] == "False" and "spec.capabilities[0].clusterWide" in ready["message"] and "ClusterScope" in ready["message"]
    assert not cluster.allowed(user, "get", "nodes", "") and not cluster.allowed(user, "get", "configmaps", namespace)

    # The platform allows both for this namespace: the same generation is granted, exactly.
    policy = f"allow-{namespace}"
    cluster.apply(allowance_policy(policy, label, ["ClusterScope", "Wildcards"]))
    try:
        intent = wait_ready(cluster, namespace, "node-reader")
        kinds = {g["kind"] for g in intent["status"]["grants"]}
        assert {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} <= kinds
        assert cluster.allowed(user, "get", "nodes", "") and cluster.allowed(user, "list", "nodes", "")
        assert not cluster.allowed(user, "delete", "nodes", "") and not cluster.allowed(user, "get", "pods", "")
        assert cluster.allowed(user, "delete", "configmaps", namespace)  # the allowed wildcard verb
        assert not cluster.allowed(user, "get", "configmaps", "default") and not cluster.allowed(user, "get", "secrets", namespace)
        binding_name = next(g["name"] for g in intent["status"]["grants"] if g["kind"] == "ClusterRoleBinding")
        binding = cluster.get("clusterrolebinding", binding_name)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "node-reader", "namespace": namespace}]  # type: ignore[index]
        assert not binding["metadata"].get("ownerReferences")  # type: ignore[index]  # cluster-scoped: the finalizer removes it

        # The allowance is withdrawn: the grant narrows to what is still allowed, on its own.
        kubectl("delete", "intentpolicy", policy, "--wait=true")
        wait_for(lambda: not cluster.allowed(user, "get", "nodes", ""), timeout=20, what="cluster-wide grant withdrawn")
        wait_for(lambda: not cluster.allowed(user, "delete", "configmaps", namespace), timeout=20, what="wildcard grant withdrawn")
        wait_reason(cluster, namespace, "node-reader", "Accepted", "Narrowed", timeout=10)
        assert cluster.get("clusterrolebinding", binding_name) is None

        # Allowed again, then deleted: the finalizer removes the cluster-scoped grant.
        cluster.apply(allowance_policy(policy, label, ["ClusterScope"]))
        wait_for(lambda: cluster.allowed(user, "get", "nodes", ""), timeout=20, what="cluster-wide grant restored")
        kubectl("delete", "agentidentity", "node-reader", "-n", namespace, "--wait=true", "--timeout=60s")
        assert cluster.get("clusterrolebinding", binding_name) is None
        assert not cluster.allowed(user, "get", "nodes", "")
    finally:
        kubectl("delete", "intentpolicy", policy, "--ignore-not-found", check=False)
        kubectl("delete", "clusterrole", extension, "--ignore-not-found", check=False)
