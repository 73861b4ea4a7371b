"""AgentIdentity: a least-privilege, expiring identity for an agent or an automation.

One object declares everything the workload may do (Kubernetes verbs, Vault paths, cloud
actions), so the grant can be reviewed, narrowed by delegation and revoked at expiry as a
whole, instead of being spread over five tools.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from paved.api.common import Model
from paved.api.fields import (
    NAME_MAX,
    TEXT_MAX,
    URL_MAX,
    CelRule,
    ComposedStatus,
    CompositionReference,
    RevisionRefField,
    UpdatePolicyField,
    DNSLabel,
    Duration,
    FieldGroup,
    ObjectName,
    RuledModel,
    Time,
    Timestamp,
)

Verb = Literal[
    "get", "list", "watch", "create", "update", "patch", "delete", "deletecollection",
    "use", "bind", "escalate", "impersonate", "approve", "sign", "*",
]
"""RBAC verbs Paved accepts; `*` is refused by default policy unless the platform allows it."""

IamAction = Annotated[str, Field(pattern=r"^([a-zA-Z0-9-]+:[a-zA-Z0-9*]+|\*)$", max_length=128)]
RbacName = Annotated[str, Field(max_length=NAME_MAX)]

SecretCapability = Literal["read", "list", "create", "update", "delete", "patch"]


class Capability(RuledModel):
    """One RBAC rule granted to the identity's ServiceAccount."""

    cel_rules = (CelRule("!has(self.clusterWide) || !self.clusterWide || !has(self.namespaces) || size(self.namespaces) == 0",
                         "namespaces is redundant with clusterWide: a cluster-wide rule applies in every namespace"),)

    apiGroups: list[RbacName] = Field(
        default_factory=lambda: [""], min_length=1, max_length=8,
        description='API groups; "" is the core group (the default).',
    )
    resources: list[RbacName] = Field(
        min_length=1, max_length=32, description="Resources, e.g. pods, deployments, pods/log."
    )
    verbs: list[Verb] = Field(min_length=1, max_length=16, description="Verbs allowed on those resources.")
    resourceNames: list[RbacName] | None = Field(
        default=None, max_length=64, description="Only these object names; absent means all."
    )
    namespaces: list[DNSLabel] | None = Field(
        default=None, max_length=8, description="Further namespaces to grant this rule in, beyond the intent's own."
    )
    clusterWide: bool = Field(
        default=False,
        description="Grant in every namespace and on cluster-scoped resources (a ClusterRole and ClusterRoleBinding). "
        "Refused unless an IntentPolicy allows ClusterScope for this identity.",
    )

    @model_validator(mode="after")
    def _cluster_wide_alone(self) -> Self:
        if self.clusterWide and self.namespaces:
            raise ValueError(self.cel_rules[0].message)
        return self


class SecretGrant(Model):
    """Vault paths the identity may use, rendered into a Vault policy."""

    path: str = Field(min_length=1, max_length=TEXT_MAX, description="Vault path, e.g. secret/data/agents/reporter/*.")
    capabilities: list[SecretCapability] = Field(
        default_factory=lambda: list[SecretCapability](["read"]), min_length=1, max_length=8,
        description="Vault capabilities on the path.",
    )


class AwsGrant(Model):
    """AWS permissions, rendered into an IAM role with an IRSA trust policy for this ServiceAccount."""

    actions: list[IamAction] = Field(
        min_length=1, max_length=64, description="IAM actions, e.g. s3:GetObject or s3:Get*."
    )
    resources: list[Annotated[str, Field(min_length=1, max_length=URL_MAX)]] = Field(
        default_factory=lambda: ["*"], min_length=1, max_length=64, description="Resource ARNs the actions apply to."
    )


class CloudGrants(Model):
    """Cloud permissions by provider."""

    aws: AwsGrant | None = Field(default=None, description="AWS IAM permissions.")


class DelegationReference(Model):
    """The parent identity this one derives its permissions from."""

    name: ObjectName = Field(description="Name of the parent AgentIdentity.")
    namespace: DNSLabel | None = Field(
        default=None, description="Namespace of the parent; absent means the same namespace."
    )


class AgentIdentitySpec(RuledModel):
    """An identity for an agent: exactly the permissions listed, until it expires.

    Paved creates a ServiceAccount with least-privilege RBAC, and optionally a Vault policy
    and role and an AWS IAM role; at expiry it revokes them all and keeps this object as the
    audit record. A delegated identity may only narrow its parent's permissions.
    """

    field_groups = (FieldGroup(("expiresAt", "ttl"), "at-most-one"),)

    capabilities: list[Capability] = Field(default_factory=list, max_length=32, description="Kubernetes permissions.")
    secrets: list[SecretGrant] = Field(default_factory=list, max_length=32, description="Vault paths and capabilities.")
    cloud: CloudGrants = Field(default_factory=CloudGrants, description="Cloud permissions.")
    tokenTTL: Duration = Field(default="1h", description="Lifetime of tokens issued to the identity (Vault token_ttl).")
    audience: str = Field(
        default="paved", min_length=1, max_length=NAME_MAX, description="Audience of the identity's ServiceAccount tokens."
    )
    expiresAt: Time | None = Field(
        default=None, description="Absolute expiry (RFC 3339); every grant is revoked then. Exclusive with ttl."
    )
    ttl: Duration | None = Field(
        default=None, description="Expiry relative to creation, e.g. 8h. Exclusive with expiresAt."
    )
    delegatedFrom: DelegationReference | None = Field(
        default=None, description="Parent identity; this identity's grants must be a subset of the parent's."
    )
    owner: str | None = Field(
        default=None, max_length=NAME_MAX, description="Person or team accountable for the identity (audit)."
    )
    purpose: str | None = Field(default=None, max_length=TEXT_MAX, description="Why the identity exists (audit).")
    serviceAccountName: ObjectName | None = Field(
        default=None, description="ServiceAccount to create; default is the intent's name."
    )
    compositionRef: CompositionReference | None = Field(
        default=None, description="Composition to use; absent means selector match, else the kind's default."
    )
    compositionUpdatePolicy: UpdatePolicyField = "Automatic"
    compositionRevisionRef: RevisionRefField = None

    def service_account_name(self, intent_name: str) -> str:
        """The ServiceAccount's name, applying the metadata.name default."""
        return self.serviceAccountName or intent_name


class Grant(Model):
    """A permission that is live now."""

    kind: str = Field(description="What was granted: Role, RoleBinding, VaultPolicy, VaultRole, IAMRole, ...")
    name: str = Field(description="Name of the granted object.")
    namespace: str | None = Field(default=None, description="Namespace of the granted object, if any.")
    detail: str | None = Field(default=None, description="Short summary of the permissions it carries.")
    grantedAt: Timestamp | None = Field(default=None, description="When it was granted.")


class DelegationHop(Model):
    """One step of the delegation chain, root first."""

    issuer: str = Field(description="namespace/name of the delegating identity.")
    subject: str = Field(description="namespace/name of the identity receiving the delegation.")
    scope: list[str] = Field(default_factory=list, description="Permissions passed along at this hop.")
    at: Timestamp | None = Field(default=None, description="When the delegation was accepted.")


class AgentIdentityStatus(ComposedStatus):
    """Observed state of an AgentIdentity."""

    serviceAccount: str | None = Field(default=None, description="Name of the identity's ServiceAccount.")
    expiresAt: Timestamp | None = Field(
        default=None, description="Effective expiry (from expiresAt, ttl or the parent's)."
    )
    grants: list[Grant] = Field(default_factory=list, description="Permissions live now.")
    delegationChain: list[DelegationHop] = Field(
        default_factory=list, description="Delegation hops from the root identity."
    )


EXAMPLE = """\
apiVersion: paved.dev/v1alpha1
kind: AgentIdentity
metadata:
  name: report-agent
spec:
  owner: team-analytics
  purpose: nightly sales report
  ttl: 8h
  capabilities:
    - resources: [configmaps]
      verbs: [get, list]
  secrets:
    - path: secret/data/analytics/report/*
      capabilities: [read]
  cloud:
    aws:
      actions: [s3:GetObject]
      resources: [arn:aws:s3:::sales-reports/*]
"""
