"""AgentIdentity complete: real control plane + operator (deploy/ RBAC, its Vault policy, its IAM
policy with moto enforcing IAM) + OpenBao (Kubernetes auth with real TokenReview) + moto.
Vault login with a TokenRequest token, IAM trust,
expiry-to-revocation time (printed), extension, delegation refusal/narrowing/expiry.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import hvac
import hvac.exceptions
import pytest

from e2e.cluster import Cluster, condition
from fixtures.cluster import wait_for
from fixtures.vault import configure_kubernetes_auth
from paved.dev.moto import actions_only, operator_iam_policy

pytestmark = pytest.mark.cluster
ISSUER = "oidc.paved.test/id/E2E"
DELEGATING_NAMESPACE = f"delegating-{uuid.uuid4().hex[:8]}"  # the one namespace allowed to delegate across
MAX_DEPTH = 2  # the platform's chain cap for this module's operator


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def apply(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    cluster.apply({"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": name, "namespace": namespace},
                   "spec": {"owner": "team-e2e", "purpose": "e2e", **spec}})


def wait_cond(cluster: Cluster, namespace: str, name: str, type_: str, status: str = "True", timeout: float = 60.0,
              reason: str | None = None) -> dict[str, Any]:
    """The identity once its condition `type_` has `status` (and `reason`) for its current generation."""
    return cluster.wait_condition("agentidentity", name, namespace, type_, status=status, reason=reason, current=True,
                                  timeout=timeout, interval=0.2)


@pytest.fixture(scope="module")
def world(control_plane, operator, openbao, moto_server, kubectl):
    """The operator restarted with Vault and moto settings; Kubernetes auth; the issuer set.

    Afterwards the settings are dropped for the operator's next start, but the running
    operator keeps them: the namespaces of these tests go away in the background, and their
    identities' finalizers still need Vault and AWS.
    """
    configure_kubernetes_auth(openbao, control_plane, mount="kubernetes")
    kubectl("patch", "composition", "agent-identity-default", "--type=merge",
            "-p", json.dumps({"spec": {"parameters": {"aws": {"oidcIssuer": ISSUER}}}}))
    moto_server.enforce_iam(actions_only(operator_iam_policy()))  # the operator as an IAM user with only its policy
    operator.env = {**moto_server.operator_env(), **openbao.operator_env(("kubernetes",)),  # Vault: its policy, not root
                    "PAVED_DELEGATION_NAMESPACES": DELEGATING_NAMESPACE, "PAVED_DELEGATION_MAX_DEPTH": str(MAX_DEPTH)}
    operator.restart()
    try:
        yield openbao, moto_server
    finally:
        moto_server.stop_enforcing()
        operator.env = {}


def login(openbao, control_plane, namespace, sa, role) -> hvac.Client:
    from kubernetes import client as k8s, config as k8s_config

    api = k8s_config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    try:
        token = k8s.CoreV1Api(api).create_namespaced_service_account_token(
            sa, namespace, k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=["paved"], expiration_seconds=600))
        ).status.token
    finally:
        api.close()
    agent = openbao.new_client()
    agent.auth.kubernetes.login(role=role, jwt=token, mount_point="kubernetes")
    return agent


def vault_role(obj) -> str:
    entry = next(r for r in obj["status"]["resources"] if r["provider"] == "vault-k8s-role")
    return entry["externalId"].rsplit("/", 1)[1]


def test_full_identity_expiry_revokes_within_5s_and_extension_restores(world, kubectl, cluster, namespace, control_plane):
    openbao, moto = world
    root = openbao.client
    root.secrets.kv.v2.create_or_update_secret(path=f"{namespace}/allowed", secret={"k": "v"}, mount_point="secret")
    root.secrets.kv.v2.create_or_update_secret(path=f"{namespace}/denied", secret={"k": "v"}, mount_point="secret")
    expires = (datetime.now(timezone.utc) + timedelta(seconds=45)).replace(microsecond=0)
    apply(cluster, namespace, "agent", {
        "capabilities": [{"resources": ["configmaps"], "verbs": ["get"]}],
        "secrets": [{"path": f"secret/data/{namespace}/allowed", "capabilities": ["read"]}],
        "cloud": {"aws": {"actions": ["s3:GetObject"], "resources": ["arn:aws:s3:::reports/*"]}},
        "tokenTTL": "10m", "expiresAt": iso(expires),
    })
    obj = wait_cond(cluster, namespace, "agent", "Ready", timeout=90)
    kinds = {g["kind"] for g in obj["status"]["grants"]}
    assert kinds >= {"Role", "RoleBinding", "VaultPolicy", "VaultRole", "IAMRole"}, obj["status"]["grants"]
    assert obj["status"]["expiresAt"] == iso(expires)

    # IAM: the SA carries the role; the trust names exactly this SA and the audience
    sa = cluster.get("serviceaccount", "agent", namespace)
    arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    iam = moto.client("iam")
    role_name = arn.rsplit("/", 1)[1]
    trust = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    (statement,) = trust["Statement"]
    assert statement["Condition"] == {"StringEquals": {f"{ISSUER}:sub": f"system:serviceaccount:{namespace}:agent",
                                                       f"{ISSUER}:aud": "sts.amazonaws.com"}}

    # Vault: login with a TokenRequest token (real TokenReview), declared path only
    role = vault_role(obj)
    agent = login(openbao, control_plane, namespace, "agent", role)
    assert agent.secrets.kv.v2.read_secret_version(path=f"{namespace}/allowed", mount_point="secret", raise_on_deleted_version=True)["data"]["data"] == {"k": "v"}
    with pytest.raises(hvac.exceptions.Forbidden):
        agent.secrets.kv.v2.read_secret_version(path=f"{namespace}/denied", mount_point="secret", raise_on_deleted_version=True)

    # Expiry: measure expiresAt -> every grant revoked
    binding_name = next(g["name"] for g in obj["status"]["grants"] if g["kind"] == "RoleBinding")

    def revoked() -> bool:
        gone_binding = cluster.get("rolebinding", binding_name, namespace) is None
        try:
            root.adapter.get(f"/v1/auth/kubernetes/role/{role}")
            gone_role = False
        except hvac.exceptions.InvalidPath:
            gone_role = True
        doc = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
        denied = all(s["Effect"] == "Deny" for s in doc["Statement"])
        return gone_binding and gone_role and denied

    while True:  # nothing is revoked early; a check still running at expiresAt proves nothing
        early = revoked()
        if datetime.now(timezone.utc) >= expires:
            break
        assert not early, "revoked before expiresAt"
        time.sleep(0.5)
    wait_for(revoked, timeout=15, interval=0.1, what="revocation")
    latency = (datetime.now(timezone.utc) - expires).total_seconds()
    print(f"\n[identity] expiry-to-revocation: {latency:.2f}s")
    assert latency < 5.0
    obj = wait_cond(cluster, namespace, "agent", "Expired", timeout=10)
    assert condition(obj, "Ready")["reason"] == "Expired" and obj["status"]["grants"] == []
    with pytest.raises((hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest)):  # the old token is revoked
        agent.secrets.kv.v2.read_secret_version(path=f"{namespace}/allowed", mount_point="secret", raise_on_deleted_version=True)
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=agent", "-o", "json").stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"Granted", "Revoked", "Expired"} <= reasons

    # Extension restores every grant
    kubectl("patch", "agentidentity", "agent", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"expiresAt": iso(datetime.now(timezone.utc) + timedelta(hours=1))}}))
    obj = wait_cond(cluster, namespace, "agent", "Ready", timeout=60)
    assert condition(obj, "Expired")["status"] == "False"
    assert cluster.get("rolebinding", binding_name, namespace) is not None
    agent = login(openbao, control_plane, namespace, "agent", role)
    assert agent.secrets.kv.v2.read_secret_version(path=f"{namespace}/allowed", mount_point="secret", raise_on_deleted_version=True)
    doc = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    assert doc["Statement"][0]["Effect"] == "Allow"


def rules_of(cluster, namespace, obj) -> list[dict[str, Any]]:
    name = next(g["name"] for g in obj["status"]["grants"] if g["kind"] == "Role")
    return cluster.get("role", name, namespace)["rules"]


def test_delegation_refuses_excess_narrows_and_expires_with_parent(world, cluster, namespace):
    parent_expiry = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=0)
    apply(cluster, namespace, "parent", {"capabilities": [{"resources": ["configmaps"], "verbs": ["get", "list"]}],
                                         "expiresAt": iso(parent_expiry)})
    wait_cond(cluster, namespace, "parent", "Ready")
    apply(cluster, namespace, "child", {"delegatedFrom": {"name": "parent"}, "ttl": "24h",
                                        "capabilities": [{"resources": ["configmaps"], "verbs": ["get", "list"]}]})
    child = wait_cond(cluster, namespace, "child", "Ready")
    assert child["status"]["expiresAt"] == iso(parent_expiry)  # capped at the parent's
    (hop,) = child["status"]["delegationChain"]
    assert (hop["issuer"], hop["subject"]) == (f"{namespace}/parent", f"{namespace}/child") and hop["at"]

    apply(cluster, namespace, "greedy", {"delegatedFrom": {"name": "parent"},
                                         "capabilities": [{"resources": ["configmaps"], "verbs": ["get", "delete"]}]})
    greedy = wait_cond(cluster, namespace, "greedy", "Ready", status="False", reason="DelegationRefused")
    assert f'verb "delete" on configmaps in namespace {namespace}' in condition(greedy, "Ready")["message"]
    assert not (greedy.get("status") or {}).get("grants")
    assert cluster.get("serviceaccount", "greedy", namespace) is None  # nothing granted

    apply(cluster, namespace, "orphan", {"delegatedFrom": {"name": "nobody"}})
    orphan = wait_cond(cluster, namespace, "orphan", "Ready", status="False", reason="DelegationRefused")
    assert "spec.delegatedFrom.name" in condition(orphan, "Ready")["message"]

    # the parent narrows: the child is narrowed at once
    apply(cluster, namespace, "parent", {"capabilities": [{"resources": ["configmaps"], "verbs": ["get"]}],
                                         "expiresAt": iso(parent_expiry)})
    wait_for(lambda: rules_of(cluster, namespace, cluster.get("agentidentity", "child", namespace))[0]["verbs"] == ["get"],
             timeout=30, interval=0.3, what="child narrowed")

    # the parent expires: the child expires with it
    soon = (datetime.now(timezone.utc) + timedelta(seconds=6)).replace(microsecond=0)
    apply(cluster, namespace, "parent", {"capabilities": [{"resources": ["configmaps"], "verbs": ["get"]}], "expiresAt": iso(soon)})
    wait_cond(cluster, namespace, "parent", "Expired", timeout=30)
    child = wait_cond(cluster, namespace, "child", "Expired", timeout=15)
    assert child["status"]["grants"] == []
    print(f"\n[identity] child expired {(datetime.now(timezone.utc) - soon).total_seconds():.2f}s after the parent's expiry")


def test_delegation_across_namespaces_only_from_allowed_ones_and_chains_are_capped(world, kubectl, cluster, namespace):
    forbidden = f"forbidden-{uuid.uuid4().hex[:8]}"
    for name in (DELEGATING_NAMESPACE, forbidden):
        kubectl("create", "namespace", name)
    try:
        # A platform identity in the delegating namespace holds get/list on configmaps in ours.
        reach = {"capabilities": [{"resources": ["configmaps"], "verbs": ["get", "list"], "namespaces": [namespace]}]}
        for home in (DELEGATING_NAMESPACE, forbidden):
            apply(cluster, home, "platform", reach)
            wait_cond(cluster, home, "platform", "Ready")
        wanted = {"capabilities": [{"resources": ["configmaps"], "verbs": ["get"]}]}
        apply(cluster, namespace, "tenant", {**wanted, "delegatedFrom": {"name": "platform", "namespace": DELEGATING_NAMESPACE}})
        tenant = wait_cond(cluster, namespace, "tenant", "Ready")
        (hop,) = tenant["status"]["delegationChain"]
        assert (hop["issuer"], hop["subject"]) == (f"{DELEGATING_NAMESPACE}/platform", f"{namespace}/tenant")
        apply(cluster, namespace, "smuggler", {**wanted, "delegatedFrom": {"name": "platform", "namespace": forbidden}})
        smuggler = wait_cond(cluster, namespace, "smuggler", "Ready", status="False", reason="DelegationRefused")
        assert condition(smuggler, "Ready")["message"].startswith("spec.delegatedFrom.namespace:")
        assert cluster.get("serviceaccount", "smuggler", namespace) is None  # nothing granted

        # The chain cap: tenant -> hop2 is two hops (allowed), hop3 would be three.
        apply(cluster, namespace, "hop2", {**wanted, "delegatedFrom": {"name": "tenant"}})
        hop2 = wait_cond(cluster, namespace, "hop2", "Ready")
        assert [h["subject"] for h in hop2["status"]["delegationChain"]] == [f"{namespace}/tenant", f"{namespace}/hop2"]
        apply(cluster, namespace, "hop3", {**wanted, "delegatedFrom": {"name": "hop2"}})
        hop3 = wait_cond(cluster, namespace, "hop3", "Ready", status="False", reason="DelegationRefused")
        assert f"cap of {MAX_DEPTH} hops" in condition(hop3, "Ready")["message"]
        assert cluster.get("serviceaccount", "hop3", namespace) is None
    finally:
        for name in (DELEGATING_NAMESPACE, forbidden):
            kubectl("delete", "namespace", name, "--wait=false", check=False)
