"""Platform-owned kinds: Composition, IntentPolicy and PolicyException.

App teams say what they need in intents; these kinds are where the platform team decides
what an intent becomes (Composition) and what it may ask for (IntentPolicy), with
exceptions that are explicit, justified and expire by themselves (PolicyException).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from paved.api.common import IntentStatus, Model
from paved.api.fields import (
    EXPRESSION_MAX,
    TEXT_MAX,
    CelRule,
    DNSLabel,
    FieldGroup,
    LabelSelector,
    ObjectName,
    RuledModel,
    Time,
    UniqueBy,
)

TEMPLATE_MAX = 128 * 1024

CompositeKind = Literal["DatabaseIntent", "AgentIdentity"]
"""The intent kinds a Composition renders. ExternalSecretRef (the secret sync engine) and
ProgressiveRollout (the rollout state machine) are not rendered through Compositions, so a
Composition cannot claim them: the API server refuses it naming spec.compositeKind, and
admission never judges resources that no reconcile would create."""
IntentKindName = Literal[CompositeKind, "ExternalSecretRef", "ProgressiveRollout"]
"""Every intent kind: what app teams write, what policies match and exceptions name."""

PROVIDER_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
TEMPLATE_IDENTIFIER_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
GENERATED_SECRET_LENGTH, GENERATED_SECRET_MIN_LENGTH, GENERATED_SECRET_MAX_LENGTH = 32, 8, 1024


class PlatformStatus(IntentStatus):
    """Observed state; Ready says whether the object is usable (templates parse, CEL compiles, not expired)."""


# --- Composition --------------------------------------------------------------------------


class GeneratedSecret(Model):
    """A random value generated once per intent and kept in a Kubernetes Secret, never in status."""

    name: str = Field(
        pattern=TEMPLATE_IDENTIFIER_PATTERN,
        max_length=63,
        description="Name; templates read the value as generated.<name>.",
    )
    length: int = Field(
        default=GENERATED_SECRET_LENGTH,
        ge=GENERATED_SECRET_MIN_LENGTH,
        le=GENERATED_SECRET_MAX_LENGTH,
        description="Length in characters.",
    )


class ResourceTemplate(Model):
    """One composed resource: a Jinja2 template handled by a provider."""

    name: DNSLabel = Field(description="Resource name; later templates read this resource's outputs under it.")
    provider: str = Field(
        pattern=PROVIDER_NAME_PATTERN, max_length=63,
        description="Provider that applies it, e.g. kubernetes, aws-rds, aws-iam, vault.",
    )
    template: str = Field(
        min_length=1, max_length=TEMPLATE_MAX,
        description="Jinja2 template producing YAML: a manifest, or the parameters of the cloud call.",
    )
    when: str | None = Field(
        default=None, max_length=EXPRESSION_MAX,
        description="Jinja2 expression; the resource is included only when it is truthy.",
    )
    forEach: str | None = Field(
        default=None,
        max_length=EXPRESSION_MAX,
        description=(
            "Jinja2 expression giving a list of strings; the resource is rendered once per item, "
            "named <name>-<item>, with the item in `item` (e.g. one Role per granted namespace)."
        ),
    )
    readiness: Literal["provider", "none"] = Field(
        default="provider", description="provider: ask the provider whether it is ready; none: ready once applied."
    )


class CompositionRollout(Model):
    """How a change of the Composition reaches the intents rendered with it (Automatic ones), in waves."""

    maxInFlight: int = Field(
        default=10, ge=1, le=10000,
        description="Intents moved to the new revision that are not Ready yet, at most; the next intents move as "
        "these become Ready.",
    )
    maxFailures: int = Field(
        default=1, ge=1, le=10000,
        description="Intents failing on the new revision (RenderFailed, ProviderError) that halt the rollout: no "
        "further intent moves; the others stay on their revision. A new edit of the Composition starts a new rollout.",
    )


class CompositionSpec(Model):
    """How one intent kind becomes concrete resources.

    Selection: the intent's compositionRef, else a Composition whose selector and
    namespaceSelector match, else the kind's default.
    """

    compositeKind: CompositeKind = Field(
        description=(
            "Intent kind this Composition renders. ExternalSecretRef and ProgressiveRollout are not rendered "
            "through Compositions: their own engines sync secrets and run canaries."
        )
    )
    default: bool = Field(default=False, description="Use for intents of this kind that match no other Composition.")
    selector: LabelSelector | None = Field(default=None, description="Match intents by their labels.")
    namespaceSelector: LabelSelector | None = Field(
        default=None, description="Match intents by their namespace's labels."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Free-form values templates read as parameters.<key>."
    )
    generatedSecrets: Annotated[list[GeneratedSecret], UniqueBy("name")] = Field(
        default_factory=list, max_length=16, description="Random values (e.g. passwords) generated once per intent."
    )
    resources: Annotated[list[ResourceTemplate], UniqueBy("name")] = Field(
        min_length=1, max_length=64, description="Resources in order; later ones may read outputs of earlier ones."
    )
    rollout: CompositionRollout = Field(
        default_factory=CompositionRollout,
        description="How a change reaches the intents, in waves. Not part of a revision: changing only this makes "
        "no new revision (raise maxFailures to let a halted rollout go on).",
    )


class RevisionCount(Model):
    """How many intents are on one revision."""

    name: str = Field(description="Name of the CompositionRevision.")
    revision: int | None = Field(default=None, description="Its revision number (absent: not created yet).")
    intents: int = Field(ge=0, description="Intents rendered with it.")


class CompositionStatus(PlatformStatus):
    """Observed state of a Composition: validity (Ready) and its rollout (RolledOut)."""

    latestRevision: str | None = Field(
        default=None, description="The CompositionRevision of the current spec: where Automatic intents are moved."
    )
    revisions: list[RevisionCount] = Field(
        default_factory=list, description="Intents per revision, newest first; revisions no intent is on are left out."
    )
    updatedIntents: int | None = Field(default=None, description="Intents on the latest revision and Ready.")
    failedIntents: int | None = Field(default=None, description="Intents failing on the latest revision.")


# --- CompositionRevision ------------------------------------------------------------------


class CompositionRevisionSpec(RuledModel):
    """An immutable copy of a Composition's spec (without rollout), made by Paved at each change of it.

    Named <composition>-<hash of the spec>, owned by the Composition (deleted with it). Intents
    record the revision they are on (status.compositionRevision) and keep being rendered with it
    until the rollout moves them, or until their own compositionRevisionRef says otherwise.
    """

    cel_rules = (CelRule("self == oldSelf", "spec is immutable: a CompositionRevision is a record; edit the Composition"),)

    revision: int = Field(ge=1, description="Revision number: 1 for the first spec of the Composition, then one more per new spec.")
    compositionSpec: CompositionSpec = Field(description="The Composition's spec as it was (rollout left out).")


class CompositionRevisionStatus(PlatformStatus):
    """Observed state of a CompositionRevision."""

    intents: int | None = Field(default=None, description="Intents rendered with this revision.")


# --- IntentPolicy -------------------------------------------------------------------------


MatchKind = Literal[IntentKindName, "SecretStore"]
"""What a policy may match: the intents, and SecretStores (for allowances only: rules judge intents)."""


class PolicyMatch(Model):
    """Which intents (and, for allowances, SecretStores) a policy applies to."""

    kinds: list[MatchKind] = Field(
        min_length=1, max_length=16, description="Intent kinds checked; SecretStore only in a policy that allows and has no rules."
    )
    namespaceSelector: LabelSelector | None = Field(
        default=None, description="Only intents in namespaces with these labels."
    )


class PolicyRule(Model):
    """One CEL check; true means compliant."""

    name: DNSLabel = Field(description="Rule name, shown in rejections, reports and exceptions.")
    expression: str = Field(
        min_length=1, max_length=EXPRESSION_MAX,
        description="CEL over object, rendered, namespaceObject and params; true means compliant.",
    )
    message: str = Field(min_length=1, max_length=TEXT_MAX, description="Shown when the rule is violated; say what to change.")


Allowance = Literal["ClusterScope", "Wildcards", "Adopt", "OperatorCredentials", "AnyEndpoint"]
"""What a policy may allow the objects it matches (refused by default)."""

ALLOWED_KEYS: dict[str, str] = {
    "ClusterScope": "clusterScope", "Wildcards": "wildcards", "Adopt": "adopt",
    "OperatorCredentials": "operatorCredentials", "AnyEndpoint": "anyEndpoint",
}
"""Allowance -> its key in `allowed`, the variable templates and rules read."""


def nothing_allowed() -> dict[str, list[str]]:
    """`allowed` when no policy allows anything: every key, no allowing policy."""
    return {key: [] for key in ALLOWED_KEYS.values()}


class IntentPolicySpec(RuledModel):
    """A guardrail checked at admission and continuously, over the intent and what it renders to.

    A policy checks (`rules`), allows (`allow`), or both. Allowances are how the platform
    widens what a composition accepts for the intents a policy matches, e.g. cluster-wide RBAC
    for the agents of one platform namespace; `mode` applies to rules only.
    """

    field_groups = (FieldGroup(("rules", "allow"), "at-least-one"),)
    cel_rules = (CelRule("!(has(self.rules) && size(self.rules) > 0) || !self.match.kinds.exists(k, k == 'SecretStore')",
                         "match.kinds: SecretStore may be matched only by a policy without rules (rules judge intents); "
                         "put the rules in a separate policy"),)

    match: PolicyMatch = Field(description="Which intents are checked (and receive the allowances).")
    mode: Literal["Enforce", "Warn", "Audit"] = Field(
        default="Enforce", description="Enforce: reject; Warn: admit with a warning; Audit: admit and report."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Free-form values rules read as params.<key>.")
    rules: Annotated[list[PolicyRule], UniqueBy("name")] = Field(default_factory=list, max_length=64, description="The checks.")
    allow: list[Allowance] = Field(
        default_factory=list,
        max_length=8,
        description="Allowances for matched intents: ClusterScope (AgentIdentity capabilities with clusterWide, "
        "rendered as ClusterRole/ClusterRoleBinding), Wildcards (`*` in AgentIdentity verbs, resources, "
        "Vault paths and AWS actions), Adopt (a DatabaseIntent taking over an existing, unmanaged RDS instance "
        "with annotation paved.dev/adopt-db-instance: its master password is reset and handed to the intent's "
        "namespace), OperatorCredentials (a SecretStore acting with the operator's own cloud credentials), "
        "AnyEndpoint (a SecretStore naming its own endpointURL or Vault server; a ProgressiveRollout calling "
        "link-local addresses or the Kubernetes API server). Composition templates and CEL rules read them "
        "as `allowed`.",
    )

    @model_validator(mode="after")
    def _rules_judge_intents_only(self) -> Self:
        if self.rules and "SecretStore" in self.match.kinds:
            raise ValueError(self.cel_rules[0].message)
        return self


# --- PolicyException ----------------------------------------------------------------------


class IntentReference(Model):
    """An intent in the exception's namespace."""

    kind: IntentKindName = Field(description="Intent kind.")
    name: ObjectName = Field(description="Intent name.")


class PolicyExceptionSpec(Model):
    """Exempts named intents from named rules of a policy until it expires."""

    policy: ObjectName = Field(description="Name of the IntentPolicy.")
    rules: list[DNSLabel] = Field(min_length=1, max_length=64, description="Names of the exempted rules.")
    intents: list[IntentReference] = Field(
        min_length=1, max_length=256, description="Intents in this namespace that are exempted."
    )
    expiresAt: Time = Field(description="When the exception stops applying (RFC 3339).")
    reason: str = Field(min_length=1, max_length=TEXT_MAX, description="Why the exception is justified (audit).")


COMPOSITION_EXAMPLE = """\
apiVersion: paved.dev/v1alpha1
kind: Composition
metadata:
  name: postgres-in-cluster
spec:
  compositeKind: DatabaseIntent
  default: true
  parameters:
    image: postgres
  generatedSecrets:
    - name: password
  rollout:
    maxInFlight: 10
    maxFailures: 1
  resources:
    - name: connection
      provider: kubernetes
      template: |
        apiVersion: v1
        kind: Secret
        metadata:
          name: {{ intent.metadata.name }}-connection
        stringData:
          password: {{ generated.password }}
"""

COMPOSITION_REVISION_EXAMPLE = """\
apiVersion: paved.dev/v1alpha1
kind: CompositionRevision
metadata:
  name: postgres-in-cluster-3f2a9c1b7d
  labels:
    paved.dev/composition: postgres-in-cluster
spec:
  revision: 1
  compositionSpec:
    compositeKind: DatabaseIntent
    default: true
    resources:
      - name: connection
        provider: kubernetes
        template: |
          apiVersion: v1
          kind: ConfigMap
          metadata:
            name: {{ intent.metadata.name }}-info
"""

INTENT_POLICY_EXAMPLE = """\
apiVersion: paved.dev/v1alpha1
kind: IntentPolicy
metadata:
  name: encryption-required
spec:
  match:
    kinds: [DatabaseIntent]
  mode: Enforce
  rules:
    - name: storage-encrypted
      expression: object.spec.encryption == true
      message: set spec.encryption to true
"""

POLICY_EXCEPTION_EXAMPLE = """\
apiVersion: paved.dev/v1alpha1
kind: PolicyException
metadata:
  name: legacy-reports-db
spec:
  policy: encryption-required
  rules: [storage-encrypted]
  intents:
    - {kind: DatabaseIntent, name: legacy-reports}
  expiresAt: "2030-01-01T00:00:00Z"
  reason: migration of the legacy reporting database, ticket OPS-123
"""
