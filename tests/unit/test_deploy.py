"""deploy/ stays in step with the code: every kind and child kind has its RBAC, every CRD is listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from paved.api.kinds import KINDS
from paved.identity.ceiling import AGGREGATION_LABEL, CLUSTER_ROLE, Ceiling, beyond
from paved.kube.apply import MANAGED_KINDS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


def cluster_role_rules() -> list[dict[str, Any]]:
    role = next(doc for doc in documents("rbac.yaml") if doc["kind"] == "ClusterRole" and doc["metadata"]["name"] == "paved-operator")
    return role["rules"]


def verbs_for(group: str, resource: str) -> set[str]:
    return {
        verb
        for rule in cluster_role_rules()
        if group in rule["apiGroups"] and resource in rule["resources"]
        for verb in rule["verbs"]
    }


def plural(kind: str) -> str:
    return {"NetworkPolicy": "networkpolicies", "SecurityGroupPolicy": "securitygrouppolicies"}.get(kind, kind.lower() + "s")


def test_every_paved_kind_is_watchable_and_its_status_patchable() -> None:
    for info in KINDS:
        if not info.reconciled:  # only read, when a rollout resolves one
            assert verbs_for("paved.dev", info.plural) == {"get"}, info.kind
            continue
        assert {"list", "watch"} <= verbs_for("paved.dev", info.plural), info.kind
        assert "patch" in verbs_for("paved.dev", f"{info.plural}/status"), info.kind


def test_every_managed_child_kind_can_be_applied_watched_and_pruned() -> None:
    for kind, api_version in MANAGED_KINDS.items():
        group = api_version.rpartition("/")[0]
        assert {"get", "list", "watch", "create", "patch", "delete"} <= verbs_for(group, plural(kind)), kind


def test_the_operator_can_watch_namespaces_to_start_its_audit() -> None:
    assert {"get", "list", "watch"} <= verbs_for("", "namespaces")


def named(kind: str, name: str) -> dict[str, Any]:
    return next(doc for doc in documents("rbac.yaml") if doc["kind"] == kind and doc["metadata"]["name"] == name)


def rules_the_operator_holds() -> list[dict[str, Any]]:
    """Its own ClusterRole and every shipped ClusterRole aggregated into the ceiling it is bound to."""
    aggregated = [doc for doc in documents("rbac.yaml")
                  if doc["kind"] == "ClusterRole" and doc["metadata"].get("labels", {}).get(AGGREGATION_LABEL) == "true"]
    assert aggregated, "no ClusterRole is aggregated into the ceiling"
    return cluster_role_rules() + [rule for role in aggregated for rule in role["rules"]]


def test_the_operator_holds_no_escalate_bind_impersonate_and_no_wildcard() -> None:
    # Roles and bindings only within what it holds: the API server enforces the ceiling. The
    # ceiling is held too, so a wildcard there would be one the operator holds.
    for rule in rules_the_operator_holds():
        assert not {"escalate", "bind", "impersonate", "*"} & set(rule["verbs"]), rule
        assert "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule


def test_the_ceiling_aggregates_by_label_and_binds_the_operator() -> None:
    ceiling = named("ClusterRole", CLUSTER_ROLE)
    assert ceiling["aggregationRule"]["clusterRoleSelectors"] == [{"matchLabels": {AGGREGATION_LABEL: "true"}}]
    assert "rules" not in ceiling  # owned by the aggregation controller
    assert named("ClusterRole", "paved-agent-ceiling-default")["metadata"]["labels"][AGGREGATION_LABEL] == "true"
    binding = named("ClusterRoleBinding", "paved-operator-agent-ceiling")
    assert binding["roleRef"]["name"] == CLUSTER_ROLE
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "paved-operator", "namespace": "paved-system"}]


def test_every_example_identity_fits_the_default_ceiling() -> None:
    ceiling = Ceiling(rules=tuple(named("ClusterRole", "paved-agent-ceiling-default")["rules"]))
    examples = [doc for path in sorted((ROOT / "examples").glob("*/*.yaml")) for doc in yaml.safe_load_all(path.read_text())
                if doc and doc.get("kind") == "AgentIdentity"]
    assert examples
    for example in examples:
        assert beyond(example["spec"], "ns", ceiling) == [], example["metadata"]["name"]
    assert beyond({"capabilities": [{"resources": ["secrets"], "verbs": ["get"]}]}, "ns", ceiling)  # a real ceiling


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


# Actions AWS authorises besides the call's own (deploy/aws/README.md says why each is there).
DEPENDENT_AWS_ACTIONS = {
    "rds:AddTagsToResource": "CreateDBInstance with Tags",
    "rds:CreateDBSnapshot": "DeleteDBInstance with a FinalDBSnapshotIdentifier",
    "ec2:CreateTags": "CreateSecurityGroup with TagSpecifications",
    "secretsmanager:CreateSecret": "CreateDBInstance/ModifyDBInstance with ManageMasterUserPassword",
    "secretsmanager:RotateSecret": "CreateDBInstance/ModifyDBInstance with ManageMasterUserPassword",
    "secretsmanager:TagResource": "CreateDBInstance/ModifyDBInstance with ManageMasterUserPassword",
    "iam:TagRole": "CreateRole with Tags",
}


def test_the_operators_iam_policy_holds_exactly_the_actions_the_code_calls() -> None:
    import json
    import re

    import botocore.session
    from botocore import xform_name

    called = set()
    for service, module in (("rds", "rds"), ("rds", "dbsubnetgroup"), ("ec2", "ec2"), ("iam", "iam")):
        model = botocore.session.get_session().get_service_model(service)
        operations = {xform_name(name): name for name in model.operation_names}
        source = (ROOT / "operator" / "paved" / "providers" / "aws" / f"{module}.py").read_text()
        called |= {f"{service}:{operations[name]}" for name in re.findall(r'_call\("([a-z_]+)"', source)}
    policy = json.loads((DEPLOY / "aws" / "iam-policy.json").read_text())
    granted = {action for statement in policy["Statement"] for action in statement["Action"]}
    assert all(statement["Effect"] == "Allow" and "*" not in "".join(statement["Action"]) for statement in policy["Statement"])
    assert called - granted == set(), "calls the operator's IAM policy does not allow"
    assert granted - called - set(DEPENDENT_AWS_ACTIONS) == set(), "actions no code path calls"
    readme = (DEPLOY / "aws" / "README.md").read_text()
    assert [action for action in sorted(granted) if f"`{action}`" not in readme] == [], "actions the README does not explain"


# Writes to a security group or DB subnet group that exists: only to one Paved tagged (a condition).
GROUP_WRITES = {"ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup",
                "ec2:CreateTags", "rds:ModifyDBSubnetGroup", "rds:DeleteDBSubnetGroup"}
RULES_ONLY = "arn:aws:ec2:*:*:security-group-rule/*"  # a rule is a resource of its own; its group is checked


def test_every_write_to_an_existing_group_is_conditioned() -> None:
    import json

    from paved.providers.aws.tags import TAG_UID

    policy = json.loads((DEPLOY / "aws" / "iam-policy.json").read_text())
    granted = {action for statement in policy["Statement"] for action in statement["Action"]}
    assert GROUP_WRITES <= granted
    unconditioned = {action for statement in policy["Statement"] if "Condition" not in statement
                     and statement["Resource"] != RULES_ONLY for action in statement["Action"]}
    assert unconditioned & GROUP_WRITES == set()
    owned = {"Null": {f"aws:ResourceTag/{TAG_UID}": "false"}}  # the tag the code puts on what it creates
    conditions = {action: statement["Condition"] for statement in policy["Statement"] if "Condition" in statement
                  for action in statement["Action"]}
    assert conditions.pop("ec2:CreateTags") == {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}}
    assert all(conditions[action] == owned for action in GROUP_WRITES - {"ec2:CreateTags"})


# --- deploy/token-policy.yaml: ServiceAccount tokens are an opt-in per namespace

OPERATOR_USER = "system:serviceaccount:paved-system:paved-operator"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")


def token_policy() -> dict[str, Any]:
    return next(doc for doc in documents("token-policy.yaml") if doc["kind"] == "ValidatingAdmissionPolicy")


def token_refusals(namespace: str, labels: dict[str, str] | None) -> list[str]:
    """The messages of the policy's failing validations for the operator's TokenRequest in
    `namespace`, evaluated with CEL as the API server evaluates them (no failure: admitted)."""
    import celpy

    env = celpy.Environment()
    activation = {
        "request": celpy.json_to_cel({"namespace": namespace, "userInfo": {"username": OPERATOR_USER}}),
        "namespaceObject": celpy.json_to_cel({"metadata": {"name": namespace, **({"labels": labels} if labels is not None else {})}}),
    }
    return [str(env.program(env.compile(rule["messageExpression"])).evaluate(activation))
            for rule in token_policy()["spec"]["validations"]
            if not env.program(env.compile(rule["expression"])).evaluate(activation)]


def test_the_operator_gets_service_account_tokens_only_where_the_namespace_opted_in() -> None:
    from paved.providers.secretstores import SERVICE_ACCOUNT_TOKENS_LABEL as LABEL

    policy = token_policy()["spec"]
    assert policy["failurePolicy"] == "Fail"
    assert policy["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["serviceaccounts/token"]}]
    assert [c["expression"] for c in policy["matchConditions"]] == [f"request.userInfo.username == '{OPERATOR_USER}'"]
    binding = next(doc for doc in documents("token-policy.yaml") if doc["kind"] == "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": "paved-operator-token-requests", "validationActions": ["Deny"]}
    opt_in = f"does not allow the Paved operator ServiceAccount tokens: label it {LABEL}=allowed"
    for labels in (None, {}, {"team": "a"}, {LABEL: "forbidden"}, {LABEL: "true"}, {LABEL: ""}):
        assert token_refusals("team-a", labels) == [f"namespace team-a {opt_in}"], labels
    assert token_refusals("team-a", {LABEL: "allowed", "team": "a"}) == []
    for system in SYSTEM_NAMESPACES:  # refused even when labelled
        [refusal] = token_refusals(system, {LABEL: "allowed"})
        assert refusal == f"the Paved operator may not request a token for a ServiceAccount of system namespace {system}"


def test_every_namespace_whose_accounts_a_store_authenticates_as_opts_in_to_tokens() -> None:
    """The examples' stores (namespaced as `paved dev demo` applies them) and the ClusterSecretStore's
    account in paved-system: every Namespace manifest of theirs carries the label, so no apply of
    another folder sharing the namespace takes it away."""
    from paved.dev.demo import example_objects
    from paved.providers.secretstores import SERVICE_ACCOUNT_TOKENS_LABEL as LABEL

    objects = example_objects(ROOT / "examples") + documents("namespace.yaml")
    manifests: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        if obj["kind"] == "Namespace":
            manifests.setdefault(obj["metadata"]["name"], []).append(obj)
    accounts = {}
    for store in (obj for obj in objects if obj["kind"] in ("SecretStore", "ClusterSecretStore")):
        for provider in store["spec"]["provider"].values():
            auth = provider.get("auth") or {}
            ref = auth.get("serviceAccountRef") or (auth.get("kubernetes") or {}).get("serviceAccountRef")
            if ref:
                namespace = ref.get("namespace") or store["metadata"].get("namespace") or "paved-system"
                accounts[f"{namespace}/{ref['name']}"] = namespace
    assert {"orders-app/secrets-reader", "paved-system/paved-secrets"} <= set(accounts)
    for account, namespace in accounts.items():
        assert manifests.get(namespace), account
        for manifest in manifests[namespace]:
            assert (manifest["metadata"].get("labels") or {}).get(LABEL) == "allowed", (account, manifest["metadata"])
