"""The shipped compositions (compositions/*.yaml) rendered with intents as the operator sees
them: API defaults applied by the pydantic models, namespace and uid set."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from paved.api.kinds import BY_KIND
from paved.api.platform import CompositionSpec
from paved.render import RenderError, RenderResult, render, select_composition

ROOT = Path(__file__).resolve().parents[2]
COMPOSITIONS = {path.stem: yaml.safe_load(path.read_text()) for path in sorted((ROOT / "compositions").glob("*.yaml"))}
SEED = yaml.safe_load((ROOT / "examples/01-database/orders-db.yaml").read_text())
POD_READER = yaml.safe_load((ROOT / "examples/02-agent-identity/pod-reader.yaml").read_text())
CNPG_KEYS = {"host", "port", "dbname", "username", "password", "uri", "jdbc-uri"}
RDS_IDENTIFIER = re.compile(r"^[a-z](?!.*--)[a-z0-9-]{0,62}(?<!-)$")
UID = "6f1c2a9e-0000-4000-8000-000000000001"


def as_operator_sees(
    document: dict[str, Any], namespace: str = "orders", uid: str = UID, **overrides: Any
) -> dict[str, Any]:
    """The intent document the handlers pass to render: spec validated with defaults, then overrides."""
    spec = BY_KIND[document["kind"]].parse_spec(document["spec"]).dump()
    spec.update(overrides)
    metadata = {"name": document["metadata"]["name"], "namespace": namespace, "uid": uid, "generation": 1, "labels": {}}
    return {"apiVersion": document["apiVersion"], "kind": document["kind"], "metadata": metadata, "spec": spec}


def by_name(result: RenderResult) -> dict[str, Any]:
    return {resource.name: resource for resource in result.resources}


def test_shipped_compositions_are_valid_composition_objects() -> None:
    """Every shipped file must pass the API model the cluster validates Compositions with."""
    assert set(COMPOSITIONS) >= {"postgres-aws-rds", "postgres-in-cluster", "agent-identity-default"}
    for name, document in COMPOSITIONS.items():
        assert (document["apiVersion"], document["kind"], document["metadata"]["name"]) == (
            "paved.dev/v1alpha1",
            "Composition",
            name,
        )
        CompositionSpec.model_validate(document["spec"])


# --------------------------------------------------------------------------- DatabaseIntent on RDS


RDS_RESOURCES = ["subnet-group", "client-security-group", "database-security-group", "instance", "connection-secret"]
NETWORK = {"subnetIds": ["subnet-a", "subnet-b"], "podSecurityGroupIds": ["sg-cluster"]}
# Outputs of the network resources once they exist (what the providers report).
NETWORK_OUTPUTS = {"subnet-group": {"name": "paved-subnets", "vpcId": "vpc-1"},
                   "client-security-group": {"groupId": "sg-client"}, "database-security-group": {"groupId": "sg-db"}}
GENERATED = {"masterPassword": "Pw0123456789", "masterPasswordId": "Id0123456789abcd"}


def rds_composition(**parameters: Any) -> dict[str, Any]:
    """The shipped RDS composition with platform parameters set (the cluster's network by default)."""
    composition = json.loads(json.dumps(COMPOSITIONS["postgres-aws-rds"]))
    composition["spec"]["parameters"].update({"network": NETWORK, **parameters})
    return composition


def test_seed_renders_to_the_exact_rds_parameters() -> None:
    result = render(rds_composition(), as_operator_sees(SEED))
    assert [r.name for r in result.resources] == [*RDS_RESOURCES, "security-group-policy-0"]
    assert not result.warnings
    instance = by_name(result)["instance"]
    assert (instance.provider, instance.pending) == ("aws-rds", True)  # its network exists only once created
    assert instance.depends_on == ("subnet-group", "database-security-group")
    params = instance.body
    assert params["Engine"] == "postgres" and params["EngineVersion"] == "16"
    assert params["MultiAZ"] is True and params["StorageEncrypted"] is True
    assert params["BackupRetentionPeriod"] == 30
    assert params["DBInstanceClass"] == "db.t3.micro" and params["AllocatedStorage"] == 20
    assert params["Port"] == 5432 and params["DeletionProtection"] is False and params["CopyTagsToSnapshot"] is True
    assert params["PubliclyAccessible"] is False
    assert params["MasterUserPassword"] == "<generated:masterPassword>" and "ManageMasterUserPassword" not in params
    assert "RestoreFromSnapshot" not in params
    assert RDS_IDENTIFIER.fullmatch(params["DBInstanceIdentifier"])
    assert params["DBInstanceIdentifier"].startswith("paved-orders-orders-db-")
    assert {tag["Key"]: tag["Value"] for tag in params["Tags"]} == {
        "paved.dev/namespace": "orders",
        "paved.dev/name": "orders-db",
        "paved.dev/uid": UID,
        "app.kubernetes.io/managed-by": "paved",
        "paved.dev/master-password-id": "<generated:masterPasswordId>",
    }


def test_the_instance_is_placed_in_the_subnet_group_behind_its_own_security_group() -> None:
    result = by_name(render(rds_composition(), as_operator_sees(SEED), outputs=NETWORK_OUTPUTS, generated=GENERATED))
    subnets = result["subnet-group"].body
    assert subnets["SubnetIds"] == ["subnet-a", "subnet-b"] and result["subnet-group"].provider == "aws-db-subnet-group"
    assert subnets["DBSubnetGroupName"] == result["instance"].body["DBInstanceIdentifier"]  # one deterministic name
    client, database = result["client-security-group"].body, result["database-security-group"].body
    assert client["VpcId"] == database["VpcId"] == "vpc-1"
    assert client["IpPermissions"] == []  # it only names who may connect
    assert database["IpPermissions"] == [  # the database port, from the client group only
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": "sg-client"}]}]
    assert client["GroupName"].endswith("-client") and database["GroupName"].endswith("-db")
    assert {"Key": "paved.dev/uid", "Value": UID} in client["Tags"] and {"Key": "paved.dev/uid", "Value": UID} in database["Tags"]
    instance = result["instance"]
    assert not instance.pending
    assert instance.body["DBSubnetGroupName"] == "paved-subnets" and instance.body["VpcSecurityGroupIds"] == ["sg-db"]


def test_pods_of_each_allowed_namespace_get_the_client_security_group() -> None:
    spec = {**SEED["spec"], "network": {"allowFrom": [{"namespace": "a", "podSelector": {"matchLabels": {"app": "api"}}},
                                                      {"namespace": "b"}]}}
    result = by_name(render(rds_composition(), as_operator_sees({**SEED, "spec": spec}), outputs=NETWORK_OUTPUTS,
                            generated=GENERATED))
    first, second = result["security-group-policy-0"].body, result["security-group-policy-1"].body
    assert (first["apiVersion"], first["kind"]) == ("vpcresources.k8s.aws/v1beta1", "SecurityGroupPolicy")
    assert first["metadata"]["namespace"] == "a" and second["metadata"]["namespace"] == "b"
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert first["spec"]["podSelector"] == {"matchLabels": {"app": "api"}} and second["spec"]["podSelector"] == {}
    assert first["spec"]["securityGroups"] == {"groupIds": ["sg-client", "sg-cluster"]}  # pods keep the cluster's group
    assert "network-policy" not in result  # a NetworkPolicy cannot select a database outside the cluster
    open_spec = {key: value for key, value in SEED["spec"].items() if key != "network"}
    names = [r.name for r in render(rds_composition(), as_operator_sees({**SEED, "spec": open_spec})).resources]
    assert names == RDS_RESOURCES


def test_without_subnets_rendering_warns_and_the_provider_will_refuse() -> None:
    result = render(COMPOSITIONS["postgres-aws-rds"], as_operator_sees(SEED))  # as shipped: no platform parameters
    assert by_name(result)["subnet-group"].body["SubnetIds"] == []
    assert any("spec.parameters.network.subnetIds" in warning for warning in result.warnings)


def test_adopting_an_existing_instance_needs_an_adopt_allowance() -> None:
    intent = as_operator_sees(SEED)
    intent["metadata"]["annotations"] = {"paved.dev/adopt-db-instance": "legacy-orders"}
    with pytest.raises(RenderError) as refused:
        render(rds_composition(), intent, allowed={"wildcards": ["w"]})
    assert refused.value.field == "metadata.annotations[paved.dev/adopt-db-instance]" and "Adopt" in str(refused.value)
    body = by_name(render(rds_composition(), intent, allowed={"adopt": ["platform-migrations"]}))["instance"].body
    assert body["DBInstanceIdentifier"] == "legacy-orders"
    assert {"Key": "paved.dev/adopted", "Value": "true"} in body["Tags"]


def test_identifier_is_stable_for_an_intent_and_unique_per_uid() -> None:
    def identifier(uid: str) -> str:
        return str(by_name(render(rds_composition(), as_operator_sees(SEED, uid=uid)))["instance"].body["DBInstanceIdentifier"])

    assert identifier(UID) == identifier(UID) != identifier("another")


@pytest.mark.parametrize(("restore", "expected"), [
    ({"snapshot": "orders-before-migration"}, {"DBSnapshotIdentifier": "orders-before-migration", "AnyNamespace": False}),
    ({"latestFinalSnapshot": True}, {"LatestFinalSnapshotOf": {"Namespace": "orders", "Name": "orders-db"}}),
])
def test_restore_from_renders_where_the_instance_comes_from(restore: dict[str, Any], expected: dict[str, Any]) -> None:
    intent = as_operator_sees({**SEED, "spec": {**SEED["spec"], "restoreFrom": restore}})
    assert by_name(render(rds_composition(), intent))["instance"].body["RestoreFromSnapshot"] == expected
    if "snapshot" in restore:  # another namespace's snapshot only where the platform allows Adopt
        allowed = by_name(render(rds_composition(), intent, allowed={"adopt": ["platform-migrations"]}))["instance"].body
        assert allowed["RestoreFromSnapshot"]["AnyNamespace"] is True
    intent["metadata"]["annotations"] = {"paved.dev/adopt-db-instance": "legacy-orders"}
    with pytest.raises(RenderError) as refused:
        render(rds_composition(), intent, allowed={"adopt": ["p"]})
    assert refused.value.field == "spec.restoreFrom"


def test_a_password_the_cloud_manages_is_synced_through_the_platform_store() -> None:
    spec = {**SEED["spec"], "masterPassword": {"managedBy": "Cloud"}}
    intent = as_operator_sees({**SEED, "spec": spec})
    with pytest.raises(RenderError) as refused:
        render(rds_composition(), intent)  # the platform offers no store for it
    assert refused.value.field == "spec.masterPassword.managedBy" and "managedPasswordStore" in refused.value.message
    outputs = {**NETWORK_OUTPUTS, "instance": {"address": "db.example", "port": 5432, "masterUserSecretArn": "arn:secret:rds!db-1"}}
    result = by_name(render(rds_composition(managedPasswordStore="rds-passwords"), intent, outputs=outputs, generated=GENERATED))
    instance = result["instance"].body
    assert instance["ManageMasterUserPassword"] is True and "MasterUserPassword" not in instance
    assert not any(tag["Key"] == "paved.dev/master-password-id" for tag in instance["Tags"])
    assert "connection-secret" not in result
    ref = result["connection-secret-sync"].body
    assert ref["kind"] == "ExternalSecretRef" and ref["metadata"]["name"] == ref["spec"]["target"]["name"] == "orders-db-connection"
    assert ref["spec"]["storeRef"] == {"kind": "ClusterSecretStore", "name": "rds-passwords"}
    assert [item["remoteRef"] for item in ref["spec"]["data"]] == [
        {"key": "arn:secret:rds!db-1", "property": "username"}, {"key": "arn:secret:rds!db-1", "property": "password"}]
    template = ref["spec"]["target"]["template"]["data"]
    assert set(template) == CNPG_KEYS and template["host"] == "db.example" and template["password"] == "{{ password }}"
    assert template["uri"] == "postgresql://{{ username | urlencode }}:{{ password | urlencode }}@db.example:5432/app"


def test_connection_secret_has_the_cnpg_keys_and_waits_for_the_endpoint() -> None:
    composition = rds_composition()
    offline = by_name(render(composition, as_operator_sees(SEED)))["connection-secret"]
    assert offline.pending and offline.depends_on == ("instance",)
    assert offline.body["metadata"] == {
        "name": "orders-db-connection",
        "namespace": "orders",
        "labels": {"app.kubernetes.io/managed-by": "paved", "paved.dev/database": "orders-db"},
    }
    assert set(offline.body["stringData"]) == CNPG_KEYS
    assert offline.body["stringData"]["host"] == "<pending:instance.address>"

    outputs = {**NETWORK_OUTPUTS, "instance": {"address": "db.example", "port": 5432}}
    online = render(composition, as_operator_sees(SEED), outputs=outputs, generated=GENERATED)
    secret = by_name(online)["connection-secret"]
    assert not secret.pending
    assert secret.body["stringData"] == {
        "host": "db.example",
        "port": "5432",
        "dbname": "app",
        "username": "paved",
        "password": "Pw0123456789",
        "uri": "postgresql://paved:Pw0123456789@db.example:5432/app",
        "jdbc-uri": "jdbc:postgresql://db.example:5432/app?password=Pw0123456789&user=paved",
    }
    instance = by_name(online)["instance"].body
    assert instance["MasterUserPassword"] == "Pw0123456789"
    assert {"Key": "paved.dev/master-password-id", "Value": "Id0123456789abcd"} in instance["Tags"]
    rotated = render(composition, as_operator_sees(SEED), outputs=outputs,
                     generated={"masterPassword": "Other0123456", "masterPasswordId": "Zz98765432109876"})
    assert online.hash == rotated.hash  # the hash is computed over placeholders, never over the password


def test_connection_secret_name_size_and_mysql() -> None:
    spec = {
        **SEED["spec"],
        "engine": "mysql",
        "version": "8.0.35",
        "size": "large",
        "connectionSecret": {"name": "creds"},
    }
    result = by_name(render(rds_composition(), as_operator_sees({**SEED, "spec": spec})))
    assert result["instance"].body["Engine"] == "mysql" and result["instance"].body["Port"] == 3306
    assert result["instance"].body["DBInstanceClass"] == "db.m6g.large"
    assert result["connection-secret"].body["metadata"]["name"] == "creds"
    assert result["connection-secret"].body["stringData"]["jdbc-uri"].startswith("jdbc:mysql://")
    assert result["database-security-group"].body["IpPermissions"][0]["FromPort"] == 3306


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"version": "13"}, "spec.version", 'postgresql version "13" is not supported; use one of: 14, 15, 16, 17'),
        ({"version": "8.0"}, "spec.version", "not supported"),
        ({"engine": "oracle"}, "spec.engine", 'engine "oracle" is not offered'),
        ({"backup": {"retentionDays": 40}}, "spec.backup.retentionDays", "from 0 to 35"),
        ({"backup": {"retentionDays": -1}}, "spec.backup.retentionDays", "from 0 to 35"),
        ({"size": "huge"}, "spec.size", "use one of: small, medium, large"),
    ],
)
def test_bad_database_input_is_refused_with_the_field(overrides: dict[str, Any], field: str, words: str) -> None:
    # Overrides bypass the API model on purpose: the composition must hold on its own
    # (a platform composition may be stricter than the schema, e.g. fewer versions).
    with pytest.raises(RenderError) as error:
        render(rds_composition(), as_operator_sees(SEED, **overrides))
    assert error.value.field == field
    assert words in error.value.message
    assert (error.value.composition, error.value.resource) == ("postgres-aws-rds", "instance")
    assert isinstance(error.value.line, int)


@settings(max_examples=60, deadline=None)
@given(
    namespace=st.from_regex(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", fullmatch=True),
    name=st.from_regex(r"^[a-z0-9]([-a-z0-9.]{0,120}[a-z0-9])?$", fullmatch=True),
    uid=st.uuids().map(str),
)
def test_rds_identifier_is_always_valid(namespace: str, name: str, uid: str) -> None:
    document = {**SEED, "metadata": {"name": name}}
    identifier = by_name(render(rds_composition(), as_operator_sees(document, namespace, uid)))["instance"].body[
        "DBInstanceIdentifier"]
    assert RDS_IDENTIFIER.fullmatch(identifier) and len(identifier) <= 63


# --------------------------------------------------------------------------- DatabaseIntent in the cluster


def test_dev_namespaces_get_the_in_cluster_composition() -> None:
    intent = as_operator_sees(SEED)
    compositions = list(COMPOSITIONS.values())
    assert (
        select_composition(intent, compositions, {"paved.dev/environment": "dev"})["metadata"]["name"]
        == "postgres-in-cluster"
    )
    assert (
        select_composition(intent, compositions, {"paved.dev/environment": "prod"})["metadata"]["name"]
        == "postgres-aws-rds"
    )


def test_in_cluster_database_needs_no_cloud_and_no_outputs() -> None:
    result = render(COMPOSITIONS["postgres-in-cluster"], as_operator_sees(SEED))
    resources = by_name(result)
    assert list(resources) == ["connection-secret", "service", "statefulset", "network-policy"]
    assert {r.provider for r in result.resources} == {"kubernetes"} and not any(r.pending for r in result.resources)
    statefulset = resources["statefulset"].body
    assert statefulset["spec"]["replicas"] == 1
    assert statefulset["spec"]["template"]["spec"]["containers"][0]["image"] == "docker.io/library/postgres:16"
    assert any("availability" in warning for warning in result.warnings)
    secret = resources["connection-secret"].body["stringData"]
    assert set(secret) == CNPG_KEYS and secret["host"] == "orders-db.orders.svc" and secret["port"] == "5432"
    assert resources["service"].body["spec"]["selector"] == {"paved.dev/database": "orders-db"}
    assert resources["network-policy"].body["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 5432}]


def test_in_cluster_refuses_mysql() -> None:
    with pytest.raises(RenderError) as error:
        render(COMPOSITIONS["postgres-in-cluster"], as_operator_sees(SEED, engine="mysql", version="8.0"))
    assert error.value.field == "spec.engine"


@pytest.mark.parametrize(("overrides", "field"), [
    ({"restoreFrom": {"snapshot": "s"}}, "spec.restoreFrom"),
    ({"masterPassword": {"managedBy": "Cloud"}}, "spec.masterPassword.managedBy"),
])
def test_in_cluster_refuses_what_only_a_cloud_can_do(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(RenderError) as error:
        render(COMPOSITIONS["postgres-in-cluster"], as_operator_sees(SEED, **overrides))
    assert error.value.field == field


# --------------------------------------------------------------------------- AgentIdentity


def identity(
    namespace: str = "agents", params: dict[str, Any] | None = None, **spec: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    composition = json.loads(json.dumps(COMPOSITIONS["agent-identity-default"]))
    composition["spec"]["parameters"].update(params or {})
    document = {**POD_READER, "spec": {**POD_READER["spec"], **spec}}
    return composition, as_operator_sees(document, namespace)


def test_pod_reader_gets_exactly_its_rules_in_its_namespace() -> None:
    composition, intent = identity()
    resources = by_name(render(composition, intent))
    assert list(resources) == ["role-agents", "binding-agents", "service-account"]
    account = resources["service-account"]
    assert not account.pending and "annotations" not in account.body["metadata"]
    assert account.body["metadata"]["name"] == "pod-reader"
    role, binding = resources["role-agents"].body, resources["binding-agents"].body
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "agents"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["get", "list", "watch"]}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pod-reader", "namespace": "agents"}]


def test_one_role_per_namespace_with_only_the_rules_that_apply_there() -> None:
    deploy = {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "patch"],
        "resourceNames": ["web"],
        "namespaces": ["shop", "agents"],
    }
    logs = {"resources": ["pods/log"], "verbs": ["get"], "namespaces": ["shop", "ops"]}
    composition, intent = identity(capabilities=[*POD_READER["spec"]["capabilities"], deploy, logs])
    resources = by_name(render(composition, intent))
    assert list(resources) == [
        "role-agents",
        "role-shop",
        "role-ops",
        "binding-agents",
        "binding-shop",
        "binding-ops",
        "service-account",
    ]
    deploy_rule = {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "patch"],
        "resourceNames": ["web"],
    }
    logs_rule = {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}
    assert resources["role-agents"].body["rules"][1:] == [deploy_rule, logs_rule]
    assert resources["role-shop"].body["rules"] == [deploy_rule, logs_rule]
    assert resources["role-ops"].body["rules"] == [logs_rule]
    for namespace in ("agents", "shop", "ops"):
        assert resources[f"role-{namespace}"].body["metadata"]["namespace"] == namespace
        assert resources[f"binding-{namespace}"].body["subjects"][0]["namespace"] == "agents"


@pytest.mark.parametrize(
    ("capability", "field"),
    [
        ({"resources": ["pods"], "verbs": ["*"]}, "spec.capabilities[1].verbs"),
        ({"resources": ["*"], "verbs": ["get"]}, "spec.capabilities[1].resources"),
        ({"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}, "spec.capabilities[1].apiGroups"),
        ({"resources": ["pods"], "verbs": ["impersonate"]}, "spec.capabilities[1].verbs"),
    ],
)
def test_wildcards_and_unknown_verbs_are_refused(capability: dict[str, Any], field: str) -> None:
    composition, intent = identity(capabilities=[*POD_READER["spec"]["capabilities"], capability])
    with pytest.raises(RenderError) as error:
        render(composition, intent)
    assert error.value.field == field and error.value.composition == "agent-identity-default"


def test_wildcards_pass_when_an_intent_policy_allows_them() -> None:
    composition, intent = identity(capabilities=[{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}])
    allowed = {"wildcards": ["platform-automation"]}
    assert by_name(render(composition, intent, allowed=allowed))["role-agents"].body["rules"] == [
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}
    ]


NODE_READER = {"resources": ["nodes"], "verbs": ["get", "list"], "clusterWide": True}


def test_cluster_wide_capabilities_are_refused_without_a_cluster_scope_allowance() -> None:
    composition, intent = identity(capabilities=[*POD_READER["spec"]["capabilities"], NODE_READER])
    with pytest.raises(RenderError) as error:
        render(composition, intent, allowed={"wildcards": ["w"]})  # the other allowance does not count
    assert error.value.field == "spec.capabilities" and "ClusterScope" in str(error.value)


def test_cluster_wide_capabilities_become_one_cluster_role_and_binding_when_allowed() -> None:
    composition, intent = identity(capabilities=[*POD_READER["spec"]["capabilities"], NODE_READER])
    resources = by_name(render(composition, intent, allowed={"clusterScope": ["platform-agents"]}))
    # Every Role before any binding: a refused Role stops the apply before anything is bound.
    assert list(resources) == ["role-agents", "cluster-role", "binding-agents", "cluster-binding", "service-account"]
    role, binding = resources["cluster-role"].body, resources["cluster-binding"].body
    assert "namespace" not in role["metadata"] and "namespace" not in binding["metadata"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]
    assert role["metadata"]["annotations"]["paved.dev/allowed-by"] == "platform-agents"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pod-reader", "namespace": "agents"}]
    # the namespaced Role keeps only the namespaced capabilities
    assert resources["role-agents"].body["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["get", "list", "watch"]}
    ]


def test_vault_policy_and_role_grant_exactly_the_declared_paths() -> None:
    secrets = [{"path": "secret/data/agents/reporter/*", "capabilities": ["read", "list"]}, {"path": "kv/data/shared"}]
    composition, intent = identity(secrets=secrets, tokenTTL="10m")
    resources = by_name(render(composition, intent))
    policy, role = resources["vault-policy"], resources["vault-role"]
    assert (policy.provider, role.provider) == ("vault-policy", "vault-k8s-role")
    assert policy.body["policy"] == (
        'path "secret/data/agents/reporter/*" {\n  capabilities = ["read", "list"]\n}\n'
        'path "kv/data/shared" {\n  capabilities = ["read"]\n}\n'
    )
    assert role.body == {
        "mount_point": "kubernetes",
        "name": policy.body["name"],
        "bound_service_account_names": ["pod-reader"],
        "bound_service_account_namespaces": ["agents"],
        "token_ttl": "10m",
        "token_max_ttl": "10m",
        "audience": "paved",
        "token_policies": [policy.body["name"]],
    }
    composition, intent = identity(secrets=[{"path": "*"}])
    with pytest.raises(RenderError) as error:
        render(composition, intent)
    assert error.value.field == "spec.secrets[0].path"


def test_iam_role_trusts_exactly_this_service_account_and_annotates_it() -> None:
    aws = {"actions": ["s3:GetObject"], "resources": ["arn:aws:s3:::reports/*"]}
    composition, intent = identity(
        params={
            "aws": {
                **COMPOSITIONS["agent-identity-default"]["spec"]["parameters"]["aws"],
                "oidcIssuer": "https://oidc.example/id/ABC",
            }
        },
        cloud={"aws": aws},
    )
    offline = by_name(render(composition, intent))
    assert list(offline)[-2:] == ["iam-role", "service-account"]
    role = offline["iam-role"].body
    assert RDS_IDENTIFIER.fullmatch(role["RoleName"].lower()) and len(role["RoleName"]) <= 64
    trust = json.loads(role["AssumeRolePolicyDocument"])
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.example/id/ABC"}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"] == {
        "StringEquals": {
            "oidc.example/id/ABC:sub": "system:serviceaccount:agents:pod-reader",
            "oidc.example/id/ABC:aud": "sts.amazonaws.com",
        }
    }
    (inline,) = role["InlinePolicies"]
    assert json.loads(inline["PolicyDocument"])["Statement"] == [
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::reports/*"]}
    ]
    account = offline["service-account"]
    assert account.pending and account.depends_on == ("iam-role",)
    assert account.body["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "<pending:iam-role.arn>"}
    arn = "arn:aws:iam::123456789012:role/paved/x"
    online = by_name(render(composition, intent, outputs={"iam-role": {"arn": arn}}))["service-account"]
    assert not online.pending and online.body["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == arn


def test_iam_needs_an_issuer_and_refuses_the_star_action() -> None:
    composition, intent = identity(cloud={"aws": {"actions": ["s3:GetObject"], "resources": ["arn:aws:s3:::b"]}})
    with pytest.raises(RenderError, match="oidcIssuer") as error:
        render(composition, intent)
    assert error.value.field == "spec.cloud.aws"
    params = {"aws": {**composition["spec"]["parameters"]["aws"], "oidcIssuer": "oidc.example"}}
    composition, intent = identity(params=params, cloud={"aws": {"actions": ["*"], "resources": ["*"]}})
    with pytest.raises(RenderError) as star:
        render(composition, intent)
    assert star.value.field == "spec.cloud.aws.actions[0]"
