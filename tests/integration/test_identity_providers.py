"""vault-policy, vault-k8s-role and aws-iam-role against a real OpenBao and a moto server.

Bodies come from rendering the shipped default Composition, so the providers are tested on
exactly what the operator sends.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from paved.providers.aws import iam, session
from paved.providers.base import Owner
from paved.providers.vault import admin
from paved.render import render

ROOT = Path(__file__).resolve().parents[2]
ISSUER = "oidc.paved.test/id/DEV"
OWNER = Owner("paved.dev/v1alpha1", "AgentIdentity", "reporter", "team-a", "0b5c6a8e-1111-2222-3333-444455556666", 1)


def rendered(spec: dict) -> dict:
    composition = yaml.safe_load((ROOT / "compositions" / "agent-identity-default.yaml").read_text())
    composition["spec"]["parameters"]["aws"]["oidcIssuer"] = ISSUER
    intent = {"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity",
              "metadata": {"name": OWNER.name, "namespace": OWNER.namespace, "uid": OWNER.uid, "generation": 1},
              "spec": {"tokenTTL": "10m", "audience": "vault", **spec}}
    result = render(composition, intent, outputs={"iam-role": {"arn": "arn:aws:iam::123456789012:role/x"}})
    return {r.name: r for r in result.resources}


@pytest.fixture
def vault_env(openbao, monkeypatch):
    """The providers with the operator's own token: only its documented policy, for this mount."""
    for name, value in openbao.operator_env(("itest-k8s",)).items():
        monkeypatch.setenv(name, value)
    admin.reset_client()
    client = openbao.client
    if "itest-k8s/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("kubernetes", path="itest-k8s")
    yield openbao
    admin.reset_client()


def test_vault_policy_and_role_are_idempotent_and_deleted(vault_env):
    resources = rendered({"secrets": [{"path": "secret/data/team-a/reporter/*", "capabilities": ["read"]}]})
    policy, role = resources["vault-policy"], resources["vault-role"]
    role.body["mount_point"] = "itest-k8s"
    p, r = admin.VaultPolicyProvider(), admin.VaultKubernetesRoleProvider()
    assert not p.observe(policy, OWNER).exists and not r.observe(role, OWNER).exists
    p.apply(policy, OWNER)
    r.apply(role, OWNER)
    seen_policy, seen_role = p.observe(policy, OWNER), r.observe(role, OWNER)
    assert seen_policy.exists and seen_policy.drift == [], seen_policy
    assert seen_role.exists and seen_role.drift == [], seen_role
    live = vault_env.client.adapter.get(f"/v1/auth/itest-k8s/role/{role.body['name']}")["data"]
    assert live["bound_service_account_names"] == ["reporter"]
    assert live["bound_service_account_namespaces"] == ["team-a"]
    assert live["token_ttl"] == 600 and live["token_policies"] == [policy.body["name"]]
    # drift is seen and corrected
    vault_env.client.sys.create_or_update_acl_policy(name=policy.body["name"], policy='path "secret/*" { capabilities = ["read"] }')
    assert p.observe(policy, OWNER).drift == ["policy"]
    p.apply(policy, OWNER)
    assert p.observe(policy, OWNER).drift == []
    # deletion (as at expiry) removes both; again is a no-op
    assert r.delete(role, OWNER, "Revoke").done and p.delete(policy, OWNER, "Revoke").done
    assert not p.observe(policy, OWNER).exists and not r.observe(role, OWNER).exists
    assert r.delete(role, OWNER, "Revoke").done and p.delete(policy, OWNER, "Revoke").done


@pytest.fixture
def iam_provider(aws_env):
    session.reset_clients()
    yield iam.IamRoleProvider()
    session.reset_clients()


def test_iam_role_trust_is_exact_and_apply_is_idempotent(iam_provider, boto3_client):
    resource = rendered({"cloud": {"aws": {"actions": ["s3:GetObject"], "resources": ["arn:aws:s3:::reports/*"]}}})["iam-role"]
    assert not iam_provider.observe(resource, OWNER).exists
    first = iam_provider.apply(resource, OWNER)
    assert first.outputs["arn"].startswith("arn:aws:iam::123456789012:role/paved/")
    again = iam_provider.observe(resource, OWNER)
    assert again.exists and again.drift == [] and again.outputs == first.outputs
    client = boto3_client("iam")
    role = client.get_role(RoleName=resource.body["RoleName"])["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Federated": f"arn:aws:iam::123456789012:oidc-provider/{ISSUER}"}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"] == {"StringEquals": {f"{ISSUER}:sub": "system:serviceaccount:team-a:reporter",
                                                       f"{ISSUER}:aud": "sts.amazonaws.com"}}
    assert "*" not in json.dumps(statement["Condition"]) and "StringLike" not in json.dumps(trust)
    inline = client.get_role_policy(RoleName=resource.body["RoleName"], PolicyName="paved-agent-identity")["PolicyDocument"]
    assert inline["Statement"][0]["Action"] == ["s3:GetObject"]
    # drift: someone widens the inline policy -> observed and restored
    client.put_role_policy(RoleName=resource.body["RoleName"], PolicyName="paved-agent-identity",
                           PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    assert iam_provider.observe(resource, OWNER).drift == ["InlinePolicies"]
    iam_provider.apply(resource, OWNER)
    assert iam_provider.observe(resource, OWNER).drift == []
    # expiry: trust becomes deny-all, the permissions go, the role stays (audit record)
    assert iam_provider.delete(resource, OWNER, "Revoke").done
    revoked = client.get_role(RoleName=resource.body["RoleName"])["Role"]["AssumeRolePolicyDocument"]
    revoked = json.loads(revoked) if isinstance(revoked, str) else revoked
    assert {s["Effect"] for s in revoked["Statement"]} == {"Deny"}
    assert client.list_role_policies(RoleName=resource.body["RoleName"])["PolicyNames"] == []
    assert iam_provider.observe(resource, OWNER).drift == ["AssumeRolePolicyDocument", "InlinePolicies"]
    iam_provider.apply(resource, OWNER)  # extension restores
    assert iam_provider.observe(resource, OWNER).drift == []
    assert iam_provider.delete(resource, OWNER, "Delete").done
    assert not iam_provider.observe(resource, OWNER).exists
    assert iam_provider.delete(resource, OWNER, "Delete").done


def test_the_operators_vault_token_holds_only_its_documented_policy(vault_env):
    """What the operator's token may do is admin.operator_policy(): identity policies and roles
    named paved-* with only the fields Paved writes, token revocation; not its own policy, no
    secrets, no sys/ beyond ACL policies."""
    import hvac.exceptions

    secret = vault_env.operator_env(("itest-k8s",))["PAVED_VAULT_TOKEN"]
    assert vault_env.client.auth.token.lookup(secret)["data"]["policies"] == [admin.OPERATOR_POLICY_NAME]  # no default
    token = vault_env.new_client(secret)
    refused = [
        lambda: token.sys.create_or_update_acl_policy(name=admin.OPERATOR_POLICY_NAME, policy='path "*" { capabilities = ["sudo"] }'),
        lambda: token.sys.create_or_update_acl_policy(name="other", policy='path "*" { capabilities = ["read"] }'),
        lambda: token.adapter.post("/v1/auth/itest-k8s/role/other", json={"token_policies": ["paved-x"]}),
        lambda: token.adapter.post("/v1/auth/itest-k8s/role/paved-x", json={"token_period": "1h"}),  # a never-expiring token
        lambda: token.secrets.kv.v2.read_secret_version(path="anything", mount_point="secret", raise_on_deleted_version=True),
        lambda: token.sys.enable_auth_method("approle", path="paved-approle"),
        lambda: token.sys.list_policies(),
    ]
    for index, attempt in enumerate(refused):
        with pytest.raises(hvac.exceptions.Forbidden):
            attempt()
            pytest.fail(f"attempt {index} was allowed")
