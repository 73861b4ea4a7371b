"""The RBAC ceiling, against the real API server and the real operator (deploy/'s RBAC).

What any AgentIdentity may be granted is bounded by the ClusterRole paved-agent-ceiling, which
the operator is bound to; it holds no `escalate` and no `bind`. So:
- with the operator's own token, the API server refuses every attempt to grant more than the
  operator holds (cluster-admin, `*`, admin, an aggregating ClusterRole, widening its own role);
- an identity asking for more than the ceiling is refused up front (Ready=False,
  OutsideCeiling, naming spec.capabilities[i] and the ClusterRole) and nothing is created;
- a ClusterRole the platform labels extends the ceiling (aggregation), without touching
  Paved's files, and withdrawing it narrows what was granted;
- the API server's own refusal (the operator not holding the ceiling) reads the same.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.cluster import Cluster, condition
from fixtures.cluster import Kubectl, wait_for
from fixtures.operator import OperatorProcess
from paved.identity.ceiling import AGGREGATION_LABEL, CLUSTER_ROLE, ESCALATION_REFUSAL, refused_rules
from paved.providers.secretstores import SERVICE_ACCOUNT_TOKENS_LABEL

pytestmark = pytest.mark.cluster

OPERATOR_USER = "system:serviceaccount:paved-system:paved-operator"
# In the default ceiling (deploy/rbac.yaml), not among the operator's own rules.
WITHIN = {"resources": ["pods"], "verbs": ["get"]}
# Not in the default ceiling. The operator holds Secrets itself, so only Paved's own check
# refuses them; PersistentVolumeClaims it does not hold, so the API server would refuse them too.
BEYOND = [{"resources": ["secrets"], "verbs": ["get"]}, {"resources": ["persistentvolumeclaims"], "verbs": ["get", "list"]}]


def apply_identity(cluster: Cluster, namespace: str, name: str, capabilities: list[dict[str, Any]]) -> None:
    cluster.apply({"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": name, "namespace": namespace},
                   "spec": {"owner": "team-e2e", "purpose": "ceiling e2e", "capabilities": capabilities}})


def wait_reason(cluster: Cluster, namespace: str, name: str, type_: str, reason: str) -> dict[str, Any]:
    return cluster.wait_condition("agentidentity", name, namespace, type_, status=None, reason=reason)


def allowed(cluster: Cluster, namespace: str, account: str, verb: str, resource: str) -> bool:
    return cluster.allowed(f"system:serviceaccount:{namespace}:{account}", verb, resource, namespace)


def created_for(cluster: Cluster, namespace: str, name: str) -> list[str]:
    """Everything Paved made in `namespace` for identity `name` (ServiceAccount, Roles, bindings)."""
    listing = cluster.items("serviceaccounts,roles,rolebindings", namespace, selector=f"paved.dev/agent-identity={name}")
    return [f"{item['kind']}/{item['metadata']['name']}" for item in listing]


# --------------------------------------------------------------------------- the operator's own token


def as_operator(kubectl: Kubectl, operator: OperatorProcess, body: dict[str, Any]) -> str:
    """Create `body` with the operator's token; the API server's refusal (the test fails if it was created)."""
    result = kubectl("create", "-f", "-", input=json.dumps(body), check=False, kubeconfig=operator.kubeconfig)
    assert result.returncode != 0, f"the operator's token created {body['kind']} {body['metadata']['name']}"
    assert "Forbidden" in result.stderr, result.stderr
    print(f"\n[escalation] {body['kind']} {body['metadata']['name']}: {result.stderr.strip()[:400]}")
    return result.stderr


def rbac(kind: str, name: str, namespace: str | None = None, **fields: Any) -> dict[str, Any]:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata, **fields}


def role_ref(kind: str, name: str) -> dict[str, str]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}


OPERATOR_SUBJECT = [{"kind": "ServiceAccount", "name": "paved-operator", "namespace": "paved-system"}]


def test_the_operators_token_cannot_grant_beyond_what_it_holds(operator: OperatorProcess, kubectl: Kubectl, cluster: Cluster,
                                                                namespace: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    # cluster-admin to itself
    refusal = as_operator(kubectl, operator, rbac("ClusterRoleBinding", f"e2e-escalate-{suffix}", roleRef=role_ref("ClusterRole", "cluster-admin"),
                                                   subjects=OPERATOR_SUBJECT))
    assert ESCALATION_REFUSAL in refusal
    assert {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]} in (refused_rules(refusal) or [])  # the backstop reads it
    # a Role holding everything in a namespace
    refusal = as_operator(kubectl, operator, rbac("Role", "everything", namespace,
                                                   rules=[{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]))
    assert ESCALATION_REFUSAL in refusal and refused_rules(refusal)
    # the built-in admin role in a namespace
    refusal = as_operator(kubectl, operator, rbac("RoleBinding", "admin", namespace, roleRef=role_ref("ClusterRole", "admin"),
                                                   subjects=OPERATOR_SUBJECT))
    assert ESCALATION_REFUSAL in refusal and refused_rules(refusal)
    # an aggregating ClusterRole (it would collect admin's rules): cluster-admin only
    refusal = as_operator(kubectl, operator, rbac("ClusterRole", f"e2e-aggregate-{suffix}", aggregationRule={
        "clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-admin": "true"}}]}))
    assert "aggregationRule" in refusal
    # widening its own ClusterRole
    widen = json.dumps([{"op": "add", "path": "/rules/-", "value": {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}}])
    result = kubectl("patch", "clusterrole", "paved-operator", "--type=json", "-p", widen, check=False, kubeconfig=operator.kubeconfig)
    assert result.returncode != 0 and ESCALATION_REFUSAL in result.stderr, result.stderr
    print(f"\n[escalation] patch ClusterRole paved-operator: {result.stderr.strip()[:400]}")
    # nothing of the above exists
    assert cluster.get("clusterrolebinding", f"e2e-escalate-{suffix}") is None
    assert cluster.get("role", "everything", namespace) is None
    assert cluster.get("clusterrole", f"e2e-aggregate-{suffix}") is None
    assert all("*" not in rule["verbs"] for rule in cluster.get("clusterrole", "paved-operator")["rules"])  # type: ignore[index]


def token_request(kubectl: Kubectl, operator: OperatorProcess, namespace: str, account: str) -> Any:
    """`kubectl create token` with the operator's own credentials (a TokenRequest)."""
    return kubectl("create", "token", account, "-n", namespace, "--duration=10m", check=False, kubeconfig=operator.kubeconfig)


def test_the_operators_token_mints_tokens_only_in_namespaces_that_opted_in(operator: OperatorProcess, kubectl: Kubectl,
                                                                          namespace: str) -> None:
    """deploy/token-policy.yaml: TokenRequest is cluster-wide in RBAC (tenants' stores need it in
    their namespaces), but another namespace's account (argocd, flux-system, a system account)
    would step over the ceiling; so the operator gets tokens only where the platform opted in."""
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    unlabelled = token_request(kubectl, operator, namespace, "reader")
    assert unlabelled.returncode != 0, unlabelled.stdout
    assert (f"namespace {namespace} does not allow the Paved operator ServiceAccount tokens: "
            f"label it {SERVICE_ACCOUNT_TOKENS_LABEL}=allowed") in unlabelled.stderr, unlabelled.stderr
    kubectl("label", "namespace", namespace, f"{SERVICE_ACCOUNT_TOKENS_LABEL}=other")
    assert token_request(kubectl, operator, namespace, "reader").returncode != 0  # only `allowed` opts in
    kubectl("label", "namespace", namespace, f"{SERVICE_ACCOUNT_TOKENS_LABEL}=allowed", "--overwrite")
    tenant = token_request(kubectl, operator, namespace, "reader")
    assert tenant.returncode == 0, tenant.stderr  # what SecretStores need still works where allowed
    system = token_request(kubectl, operator, "kube-system", "clusterrole-aggregation-controller")
    assert system.returncode != 0 and "may not request a token for a ServiceAccount of system namespace kube-system" in \
        system.stderr, system.stderr
    kubectl("label", "namespace", "kube-system", f"{SERVICE_ACCOUNT_TOKENS_LABEL}=allowed")
    try:  # a system namespace stays refused even when someone labels it
        labelled = token_request(kubectl, operator, "kube-system", "clusterrole-aggregation-controller")
        assert labelled.returncode != 0 and "of system namespace kube-system" in labelled.stderr, labelled.stderr
    finally:
        kubectl("label", "namespace", "kube-system", f"{SERVICE_ACCOUNT_TOKENS_LABEL}-")
    print(f"\n[escalation] TokenRequest {namespace}/reader, unlabelled: {unlabelled.stderr.strip()[:300]}")
    print(f"[escalation] TokenRequest kube-system/clusterrole-aggregation-controller: {system.stderr.strip()[:300]}")


# --------------------------------------------------------------------------- identities and the ceiling


@pytest.fixture
def ceiling_extension(kubectl: Kubectl) -> Iterator[str]:
    """A ClusterRole the platform may label into the ceiling; deleted afterwards."""
    name = f"e2e-ceiling-{uuid.uuid4().hex[:8]}"
    yield name
    kubectl("delete", "clusterrole", name, "--ignore-not-found", check=False)


def test_beyond_the_ceiling_is_refused_until_the_platform_extends_it(
    operator: OperatorProcess, kubectl: Kubectl, cluster: Cluster, namespace: str, ceiling_extension: str
) -> None:
    apply_identity(cluster, namespace, "modest", [WITHIN])
    apply_identity(cluster, namespace, "greedy", [WITHIN, *BEYOND])

    # Within the ceiling: granted, exactly.
    wait_reason(cluster, namespace, "modest", "Ready", "Ready")
    assert allowed(cluster, namespace, "modest", "get", "pods") and not allowed(cluster, namespace, "modest", "list", "pods")

    # Beyond it: refused up front (not by the API server), naming the capability and the
    # ClusterRole, and nothing exists.
    refused = wait_reason(cluster, namespace, "greedy", "Ready", "OutsideCeiling")
    message = condition(refused, "Ready")["message"]
    assert message.startswith("spec.capabilities[1]: ") and f"outside the platform's ceiling (ClusterRole {CLUSTER_ROLE})" in message
    assert 'verb "get" on secrets' in message and 'spec.capabilities[2]: verb "get" on persistentvolumeclaims' in message
    assert "refused by the API server" not in message
    assert condition(refused, "Accepted")["status"] == "False"
    assert created_for(cluster, namespace, "greedy") == [] and not (refused.get("status") or {}).get("grants")

    # The platform labels a ClusterRole into the ceiling (no Paved file changes): now granted.
    cluster.apply(rbac("ClusterRole", ceiling_extension, rules=[
        {"apiGroups": [""], "resources": ["secrets", "persistentvolumeclaims"], "verbs": ["get", "list", "watch"]}]))
    kubectl("label", "clusterrole", ceiling_extension, f"{AGGREGATION_LABEL}=true")
    wait_reason(cluster, namespace, "greedy", "Ready", "Ready")
    assert allowed(cluster, namespace, "greedy", "get", "secrets") and allowed(cluster, namespace, "greedy", "list", "persistentvolumeclaims")
    assert not allowed(cluster, namespace, "greedy", "list", "secrets")  # still exactly the declared verbs

    # Withdrawn: the granted identity is narrowed to what the ceiling still holds.
    kubectl("delete", "clusterrole", ceiling_extension, "--wait=true")
    wait_reason(cluster, namespace, "greedy", "Accepted", "Narrowed")
    wait_for(lambda: not allowed(cluster, namespace, "greedy", "get", "secrets"), timeout=20, what="grant narrowed to the ceiling")
    assert not allowed(cluster, namespace, "greedy", "get", "persistentvolumeclaims")
    assert allowed(cluster, namespace, "greedy", "get", "pods")


@pytest.fixture
def operator_without_ceiling(kubectl: Kubectl, cluster: Cluster) -> Iterator[None]:
    """The operator's binding to the ceiling removed (a misconfigured install), restored afterwards."""
    binding = cluster.get("clusterrolebinding", "paved-operator-agent-ceiling")
    assert binding is not None
    kubectl("delete", "clusterrolebinding", "paved-operator-agent-ceiling", "--wait=true")
    try:
        yield
    finally:
        restored = {key: binding[key] for key in ("apiVersion", "kind", "roleRef", "subjects")}
        restored["metadata"] = {"name": binding["metadata"]["name"], "labels": binding["metadata"].get("labels") or {}}
        kubectl("apply", "-f", "-", input=json.dumps(restored))


def test_the_api_servers_refusal_reads_as_the_same_condition(
    operator: OperatorProcess, cluster: Cluster, namespace: str, operator_without_ceiling: None
) -> None:
    # Paved's own check passes (pods/get is in the ceiling), but the operator does not hold the
    # ceiling: the API server refuses the Role, and the apply stops before anything is bound.
    apply_identity(cluster, namespace, "unbound", [{"resources": ["configmaps"], "verbs": ["get"]}, WITHIN])
    refused = wait_reason(cluster, namespace, "unbound", "Ready", "OutsideCeiling")
    message = condition(refused, "Ready")["message"]
    assert message.startswith("spec.capabilities[1]: ") and "refused by the API server" in message, message
    assert condition(refused, "Accepted")["reason"] == "OutsideCeiling"
    assert created_for(cluster, namespace, "unbound") == []  # the Role was refused: nothing after it was applied
    assert not allowed(cluster, namespace, "unbound", "get", "configmaps")
