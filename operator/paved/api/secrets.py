"""ExternalSecretRef, SecretStore and ClusterSecretStore: remote secrets into Kubernetes Secrets.

Stores say where secrets live and how Paved authenticates; refs say which remote keys go
into which Secret. A ClusterSecretStore additionally says which namespaces may read which
key prefixes, so a cluster-wide store is never a cluster-wide read grant.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from paved.api.common import IntentStatus, Model
from paved.api.fields import (
    HTTP_URL_PATTERN,
    CelRule,
    DNSLabel,
    Duration,
    FieldGroup,
    LabelSelector,
    ObjectName,
    RuledModel,
    SecretKeySelector,
    Timestamp,
)

# --- stores -------------------------------------------------------------------------------


class ServiceAccountRef(Model):
    """A ServiceAccount whose short-lived token (TokenRequest API) is presented to Vault."""

    name: ObjectName = Field(description="Name of the ServiceAccount.")
    namespace: DNSLabel | None = Field(
        default=None, description="Its namespace; only for ClusterSecretStore (a SecretStore uses its own)."
    )
    audiences: list[str] = Field(
        default_factory=list, description="Token audiences; empty means the API server's default audience."
    )


class VaultKubernetesAuth(Model):
    """Vault Kubernetes auth: log in with a ServiceAccount token that Vault reviews."""

    mountPath: str = Field(default="kubernetes", min_length=1, description="Mount path of the Kubernetes auth method.")
    role: str = Field(min_length=1, description="Vault role to log in as.")
    serviceAccountRef: ServiceAccountRef = Field(description="ServiceAccount whose token is used to log in.")


class VaultAppRoleAuth(Model):
    """Vault AppRole auth."""

    path: str = Field(default="approle", min_length=1, description="Mount path of the AppRole auth method.")
    roleId: str = Field(min_length=1, description="AppRole role_id (not secret).")
    secretRef: SecretKeySelector = Field(description="Secret key holding the AppRole secret_id.")


class VaultAuth(RuledModel):
    """How Paved authenticates to Vault; exactly one method."""

    field_groups = (FieldGroup(("kubernetes", "tokenSecretRef", "appRole")),)

    kubernetes: VaultKubernetesAuth | None = Field(default=None, description="Kubernetes auth (recommended).")
    tokenSecretRef: SecretKeySelector | None = Field(
        default=None, description="A Vault token stored in a Secret (operator's namespace for a ClusterSecretStore)."
    )
    appRole: VaultAppRoleAuth | None = Field(default=None, description="AppRole auth.")


class VaultProvider(Model):
    """HashiCorp Vault or OpenBao, KV secrets engine version 2."""

    server: str = Field(
        pattern=HTTP_URL_PATTERN,
        description="Vault address, e.g. https://vault.example:8200. A SecretStore may name only the platform's "
        "Vault (PAVED_VAULT_ADDR) unless an IntentPolicy allows it AnyEndpoint.",
    )
    path: str = Field(default="secret", min_length=1, description="Mount path of the KV secrets engine.")
    version: Literal["v2"] = Field(default="v2", description="KV engine version; only v2 is supported.")
    caBundle: str | None = Field(
        default=None, description="PEM CA bundle to verify the server; absent means system roots."
    )
    auth: VaultAuth = Field(description="Authentication method.")


class AwsSecretRefAuth(Model):
    """Static AWS credentials stored in a Secret (a ClusterSecretStore reads it in the operator's namespace)."""

    accessKeyIDSecretRef: SecretKeySelector = Field(description="Secret key holding the access key id.")
    secretAccessKeySecretRef: SecretKeySelector = Field(description="Secret key holding the secret access key.")


STS_AUDIENCE = "sts.amazonaws.com"


class AwsServiceAccountRef(ServiceAccountRef):
    """A ServiceAccount whose short-lived token (TokenRequest API) is exchanged for the role's credentials."""

    audiences: list[str] = Field(
        default_factory=lambda: [STS_AUDIENCE],
        min_length=1,
        description=f"Token audiences, as the IAM OIDC provider of the cluster expects them; default {STS_AUDIENCE}.",
    )


class AwsAuth(RuledModel):
    """AWS credentials. Without secretRef or serviceAccountRef the store acts with the operator's own
    credentials (default chain, e.g. IRSA): a ClusterSecretStore may, a SecretStore only where an
    IntentPolicy allows OperatorCredentials (docs/secrets.md)."""

    field_groups = (FieldGroup(("secretRef", "serviceAccountRef"), "at-most-one"),)
    cel_rules = (CelRule("!has(self.serviceAccountRef) || has(self.role)",
                         "serviceAccountRef needs role: the IAM role its token is exchanged for (AssumeRoleWithWebIdentity)"),)

    secretRef: AwsSecretRefAuth | None = Field(default=None, description="Static credentials from a Secret.")
    serviceAccountRef: AwsServiceAccountRef | None = Field(
        default=None,
        description="Assume `role` with AssumeRoleWithWebIdentity, presenting a token of this ServiceAccount "
        "(IRSA-style trust: the role trusts the cluster's OIDC issuer and this ServiceAccount).",
    )
    role: str | None = Field(
        default=None,
        pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$",
        description="IAM role ARN to assume: with secretRef's credentials, with serviceAccountRef's token "
        "(required then), or alone with the operator's own credentials.",
    )

    @model_validator(mode="after")
    def _service_account_needs_role(self) -> Self:
        if self.serviceAccountRef is not None and self.role is None:
            raise ValueError(self.cel_rules[0].message)
        return self


class AwsProvider(Model):
    """AWS Secrets Manager or SSM Parameter Store."""

    service: Literal["SecretsManager", "ParameterStore"] = Field(
        default="SecretsManager", description="Which AWS service holds the secrets."
    )
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$", description="AWS region, e.g. eu-west-1.")
    endpointURL: str | None = Field(
        default=None, pattern=HTTP_URL_PATTERN,
        description="Override the service endpoint (testing, VPC endpoints). A SecretStore may name only the "
        "platform's endpoint (PAVED_AWS_ENDPOINT_URL) unless an IntentPolicy allows it AnyEndpoint.",
    )
    auth: AwsAuth | None = Field(
        default=None, description="Credentials; absent means the operator's own (see auth)."
    )


class SecretStoreProvider(RuledModel):
    """The backend of a store; exactly one."""

    field_groups = (FieldGroup(("vault", "aws")),)

    vault: VaultProvider | None = Field(default=None, description="Vault / OpenBao KV v2.")
    aws: AwsProvider | None = Field(default=None, description="AWS Secrets Manager or Parameter Store.")


class SecretStoreSpec(Model):
    """Where secrets come from and how Paved authenticates; usable by refs in its namespace."""

    provider: SecretStoreProvider = Field(description="Secret backend.")
    missingKeyGracePeriod: Duration = Field(
        default="10m",
        description=(
            "How long a remote key must keep being reported missing, each time by a call about that one key,"
            " before the refs' deletionPolicy applies: it must be missing on two refreshes at least this far"
            " apart (\"0\": on the next refresh). Editing the store, or the ref, starts over. A backend's"
            " ambiguous answers (a key left out of a batch answer, a 404 of a disabled or mistyped Vault mount)"
            " never count."
        ),
    )


class NamespaceAccess(RuledModel):
    """Which namespaces may read which key prefixes through a ClusterSecretStore."""

    field_groups = (FieldGroup(("namespaces", "namespaceSelector")),)

    namespaces: list[DNSLabel] | None = Field(default=None, description="Namespaces granted by name.")
    namespaceSelector: LabelSelector | None = Field(default=None, description="Namespaces granted by label.")
    keyPrefixes: list[str] = Field(
        min_length=1,
        description=(
            'Remote key prefixes they may read; "{namespace}" is replaced by the reading namespace,'
            " e.g. teams/{namespace}/."
        ),
    )


class ClusterSecretStoreSpec(SecretStoreSpec):
    """A store shared across namespaces; only the namespaces and prefixes in access may use it."""

    access: list[NamespaceAccess] = Field(
        default_factory=list, max_length=64, description="Allowances; empty means no namespace may use the store."
    )


class SecretStoreStatus(IntentStatus):
    """Observed state of a store; Ready reflects a real authentication check."""

    lastAuthCheck: Timestamp | None = Field(default=None, description="When authentication was last verified.")


# --- refs ---------------------------------------------------------------------------------

SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 - a name, not a secret


class StoreRef(Model):
    """The store a ref reads from."""

    name: ObjectName = Field(description="Name of the store.")
    kind: Literal["SecretStore", "ClusterSecretStore"] = Field(
        default="SecretStore", description="SecretStore (same namespace) or ClusterSecretStore."
    )


class RemoteRef(Model):
    """One remote secret, optionally one property of it."""

    key: str = Field(
        min_length=1, description="Remote key: Vault path under the KV mount, secret name or parameter name."
    )
    property: str | None = Field(
        default=None, description="JSON property (or KV field) to take; absent means the whole value."
    )
    version: str | None = Field(default=None, description="Pin a version; absent means the latest.")


class DataItem(Model):
    """One key of the target Secret."""

    secretKey: str = Field(pattern=SECRET_KEY_PATTERN, max_length=253, description="Key in the target Secret.")
    remoteRef: RemoteRef = Field(description="Where the value comes from.")


class Extract(Model):
    """A whole remote JSON secret or KV map, one Secret key per property."""

    key: str = Field(min_length=1, description="Remote key to extract.")
    version: str | None = Field(default=None, description="Pin a version; absent means the latest.")


class DataFromItem(Model):
    """Many keys of the target Secret from one remote secret."""

    extract: Extract = Field(description="Extract every property of a remote secret.")


class SecretTemplate(Model):
    """Shape the target Secret's values from the fetched ones."""

    data: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Secret key -> Jinja2 template over the fetched values, e.g. {{ password }}; when set, the Secret"
            " holds exactly these keys."
        ),
    )


class Target(Model):
    """The Kubernetes Secret that receives the values."""

    name: ObjectName | None = Field(default=None, description="Secret name; default is the ref's name.")
    type: str = Field(
        default="Opaque", min_length=1, description="Secret type, e.g. Opaque or kubernetes.io/dockerconfigjson."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Labels added to the Secret.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations added to the Secret.")
    template: SecretTemplate | None = Field(default=None, description="Templates for the Secret's values.")
    creationPolicy: Literal["Owner", "Merge"] = Field(
        default="Owner", description="Owner: Paved creates and owns the Secret; Merge: add keys to an existing Secret."
    )
    deletionPolicy: Literal["Retain", "Delete"] = Field(
        default="Retain", description="When a remote key is confirmed gone: Retain the last value or Delete it."
    )


class ExternalSecretRefSpec(RuledModel):
    """Keep a Kubernetes Secret equal to remote secrets, refreshed on an interval.

    On any backend error the Secret is left exactly as it was and the ref is marked Stale.
    """

    field_groups = (FieldGroup(("data", "dataFrom"), "at-least-one"),)

    storeRef: StoreRef = Field(description="Store to read from.")
    refreshInterval: Duration = Field(
        default="1h", description='How often to re-read the backend; "0" syncs once; otherwise at least 5s.'
    )
    data: list[DataItem] = Field(default_factory=list, description="Individual keys.")
    dataFrom: list[DataFromItem] = Field(default_factory=list, description="Whole remote secrets.")
    target: Target = Field(default_factory=Target, description="The Secret to write.")

    def target_name(self, ref_name: str) -> str:
        """The target Secret's name, applying the metadata.name default."""
        return self.target.name or ref_name


class ExternalSecretRefStatus(IntentStatus):
    """Observed state of an ExternalSecretRef; never contains secret values."""

    lastSyncTime: Timestamp | None = Field(default=None, description="Last time the Secret was written.")
    lastRefreshTime: Timestamp | None = Field(
        default=None, description=(
            "Last time the backend was asked, successfully or not. Moves with every status change; a "
            "refresh that changes nothing moves it only once it is 10 minutes old (a status write per ref "
            "per refresh would load the API server at rest)."
        )
    )
    lastGoodSyncTime: Timestamp | None = Field(
        default=None, description=(
            "Last time the backend answered and the Secret matched it; moves like lastRefreshTime."
        )
    )
    contentHash: str | None = Field(
        default=None, description="Hash of the Secret's content; changes exactly when the content changes."
    )
    sourceVersions: dict[str, str] = Field(default_factory=dict, description="Remote key -> version last read.")
    missingSince: dict[str, Timestamp] = Field(
        default_factory=dict,
        description=(
            "Remote key -> when the store first reported it missing; acted on when still missing at a refresh"
            " the store's missingKeyGracePeriod later."
        ),
    )
    missingBasis: str | None = Field(
        default=None,
        description=(
            "What missingSince was observed against (this ref's generation, the store's uid and generation);"
            " when either changes, the observations start over."
        ),
    )


SECRET_STORE_EXAMPLE = """\
apiVersion: paved.dev/v1alpha1
kind: SecretStore
metadata:
  name: vault
spec:
  provider:
    vault:
      server: https://vault.example:8200
      path: secret
      auth:
        kubernetes:
          role: orders
          serviceAccountRef: {name: secrets-reader}
"""  # noqa: S105 - an example of the kind, no secret in it

CLUSTER_SECRET_STORE_EXAMPLE = """\
apiVersion: paved.dev/v1alpha1
kind: ClusterSecretStore
metadata:
  name: aws-secrets
spec:
  provider:
    aws:
      service: SecretsManager
      region: eu-west-1
  access:
    - namespaceSelector:
        matchLabels: {paved.dev/tenant: "true"}
      keyPrefixes: ["teams/{namespace}/"]
"""  # noqa: S105 - an example of the kind, no secret in it

EXAMPLE = """\
apiVersion: paved.dev/v1alpha1
kind: ExternalSecretRef
metadata:
  name: db-credentials
spec:
  storeRef: {name: vault}
  refreshInterval: 15m
  data:
    - secretKey: username
      remoteRef: {key: production/database, property: username}
    - secretKey: password
      remoteRef: {key: production/database, property: password}
  target:
    name: db-credentials
"""
