"""`aws-iam-role`: the IAM role of an AgentIdentity (IRSA trust + one inline policy), boto3.

Body: the exact parameters of iam.create_role plus `InlinePolicies` ([{PolicyName,
PolicyDocument}], applied with put_role_policy). Idempotent: the role name is derived from the
intent's uid, an existing role is brought back to the body (trust policy, inline policies,
description), extra inline policies are removed. Outputs: arn, roleName.

Deletion policies: "Delete" (the intent is deleted) removes the inline policies and the role;
"Revoke" (the identity expired) keeps the role as the audit record but replaces its trust
policy with an explicit deny of every principal, so nobody can assume it, and removes the
inline policies.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from paved.providers.aws import session
from paved.providers.aws.session import AwsError
from paved.providers.base import DeletionResult, Observation, Owner
from paved.render.types import RenderedResource

PROVIDER = "aws-iam-role"
REVOKE = "Revoke"
DENY_ALL_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "PavedExpired", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"},
                  {"Sid": "PavedExpiredWebIdentity", "Effect": "Deny", "Principal": {"Federated": "*"}, "Action": "sts:AssumeRoleWithWebIdentity"}],
}


def _doc(value: Any) -> Any:
    """A policy document as a dict, whether boto3 gave a dict, JSON or URL-encoded JSON."""
    if isinstance(value, str):
        text = value if value.lstrip().startswith("{") else urllib.parse.unquote(value)
        return json.loads(text)
    return value


class IamRoleProvider:
    name = PROVIDER

    def _iam(self) -> Any:
        return session.client("iam")

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return session.call(PROVIDER, self._iam(), operation, **params)

    def _get(self, role: str) -> dict[str, Any] | None:
        try:
            return self._call("get_role", RoleName=role)["Role"]
        except AwsError as error:
            if error.code == "NoSuchEntity":
                return None
            raise

    def _inline(self, role: str) -> dict[str, Any]:
        names = self._call("list_role_policies", RoleName=role).get("PolicyNames") or []
        return {name: _doc(self._call("get_role_policy", RoleName=role, PolicyName=name)["PolicyDocument"]) for name in names}

    @staticmethod
    def _observation(role: dict[str, Any], drift: list[str] | None = None, changed: bool = False) -> Observation:
        return Observation(exists=True, ready=True, external_id=role["Arn"], drift=drift or [], changed=changed,
                           outputs={"arn": role["Arn"], "roleName": role["RoleName"]})

    def _drift(self, role: dict[str, Any], body: dict[str, Any]) -> list[str]:
        drift = []
        if _doc(role.get("AssumeRolePolicyDocument")) != _doc(body["AssumeRolePolicyDocument"]):
            drift.append("AssumeRolePolicyDocument")
        want = {p["PolicyName"]: _doc(p["PolicyDocument"]) for p in body.get("InlinePolicies") or []}
        if self._inline(body["RoleName"]) != want:
            drift.append("InlinePolicies")
        return drift

    def observe(self, resource: RenderedResource, owner: Owner) -> Observation:
        body = resource.body
        role = self._get(body["RoleName"])
        if role is None:
            return Observation(exists=False, external_id=body["RoleName"], message="IAM role not found")
        return self._observation(role, self._drift(role, body))

    def apply(self, resource: RenderedResource, owner: Owner) -> Observation:
        body = resource.body
        name = body["RoleName"]
        role = self._get(name)
        if role is None:
            params = {key: value for key, value in body.items() if key != "InlinePolicies"}
            role = self._call("create_role", **params)["Role"]
        else:
            if _doc(role.get("AssumeRolePolicyDocument")) != _doc(body["AssumeRolePolicyDocument"]):
                self._call("update_assume_role_policy", RoleName=name, PolicyDocument=body["AssumeRolePolicyDocument"])
            if body.get("Description") is not None and role.get("Description") != body["Description"]:
                self._call("update_role", RoleName=name, Description=body["Description"])
        want = {p["PolicyName"]: p["PolicyDocument"] for p in body.get("InlinePolicies") or []}
        have = self._inline(name)
        for policy_name, document in want.items():
            if have.get(policy_name) != _doc(document):
                self._call("put_role_policy", RoleName=name, PolicyName=policy_name, PolicyDocument=document)
        for policy_name in have.keys() - want.keys():
            self._call("delete_role_policy", RoleName=name, PolicyName=policy_name)
        return self._observation(role, changed=True)

    def delete(self, resource: RenderedResource, owner: Owner, policy: str) -> DeletionResult:
        name = resource.body["RoleName"]
        if self._get(name) is None:
            return DeletionResult(done=True, message=f"IAM role {name} already gone")
        for policy_name in self._call("list_role_policies", RoleName=name).get("PolicyNames") or []:
            self._call("delete_role_policy", RoleName=name, PolicyName=policy_name)
        if policy == REVOKE:
            self._call("update_assume_role_policy", RoleName=name, PolicyDocument=json.dumps(DENY_ALL_TRUST))
            return DeletionResult(done=True, message=f"IAM role {name}: trust replaced by deny-all, inline policies removed")
        for attached in self._call("list_attached_role_policies", RoleName=name).get("AttachedPolicies") or []:
            self._call("detach_role_policy", RoleName=name, PolicyArn=attached["PolicyArn"])
        self._call("delete_role", RoleName=name)
        return DeletionResult(done=True, message=f"deleted IAM role {name}")

