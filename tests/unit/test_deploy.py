"""deploy/ stays in step with the code: every kind and child kind has its RBAC, every CRD is listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from paved.api.kinds import KINDS
from paved.kube.apply import MANAGED_KINDS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


def cluster_role_rules() -> list[dict[str, Any]]:
    role = next(doc for doc in documents("rbac.yaml") if doc["kind"] == "ClusterRole")
    return role["rules"]


def verbs_for(group: str, resource: str) -> set[str]:
    return {
        verb
        for rule in cluster_role_rules()
        if group in rule["apiGroups"] and resource in rule["resources"]
        for verb in rule["verbs"]
    }


def plural(kind: str) -> str:
    return {"NetworkPolicy": "networkpolicies"}.get(kind, kind.lower() + "s")


def test_every_paved_kind_is_watchable_and_its_status_patchable() -> None:
    for info in KINDS:
        assert {"get", "list", "watch", "patch"} <= verbs_for("paved.dev", info.plural), info.kind
        assert "patch" in verbs_for("paved.dev", f"{info.plural}/status"), info.kind


def test_every_managed_child_kind_can_be_applied_watched_and_pruned() -> None:
    for kind, api_version in MANAGED_KINDS.items():
        group = api_version.rpartition("/")[0]
        assert {"get", "list", "watch", "create", "patch", "delete"} <= verbs_for(group, plural(kind)), kind


def test_the_operator_can_watch_namespaces_to_start_its_audit() -> None:
    assert {"get", "list", "watch"} <= verbs_for("", "namespaces")


def test_rbac_grants_escalate_and_bind_on_roles_and_nothing_wildcard() -> None:
    # Roles and ClusterRoles hold exactly what identities declare: escalate/bind, no more.
    for resource in ("roles", "clusterroles"):
        assert {"escalate", "bind"} <= verbs_for("rbac.authorization.k8s.io", resource)
    for resource in ("rolebindings", "clusterrolebindings"):
        assert not {"escalate", "bind", "impersonate"} & verbs_for("rbac.authorization.k8s.io", resource)
    assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in cluster_role_rules())


def test_deployment_is_locked_down() -> None:
    deployment = documents("deployment.yaml")[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["serviceAccountName"] == "paved-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["image"] == "paved:0.1.0"


def test_deployment_is_highly_available() -> None:
    deployment = documents("deployment.yaml")[0]
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # readiness: the webhook serves
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"  # liveness: not leadership
    (budget,) = documents("pdb.yaml")
    assert budget["spec"]["minAvailable"] == 1 and budget["spec"]["selector"] == spec["selector"]


def test_the_lease_is_granted_in_the_operator_namespace_only_and_by_name() -> None:
    role = next(doc for doc in documents("rbac.yaml") if doc["kind"] == "Role" and doc["metadata"]["name"] == "paved-leader-election")
    assert role["metadata"]["namespace"] == "paved-system"
    by_name = [rule for rule in role["rules"] if rule.get("resourceNames")]
    assert by_name == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["paved-operator"],
                        "verbs": ["get", "update"]}]
    unnamed = {verb for rule in role["rules"] if not rule.get("resourceNames") for verb in rule["verbs"]}
    assert unnamed == {"create", "list", "watch"}  # Kubernetes cannot restrict these by name
    assert not verbs_for("coordination.k8s.io", "leases")  # nothing cluster-wide


def test_kustomizations_list_every_file() -> None:
    base = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert "../crds" in base["resources"]
    for resource in base["resources"]:
        assert (DEPLOY / resource).exists(), resource
    crds = yaml.safe_load((ROOT / "crds" / "kustomization.yaml").read_text())["resources"]
    assert sorted(crds) == sorted(path.name for path in (ROOT / "crds").glob("*.paved.dev.yaml"))
