"""With whose power a SecretStore acts: a namespaced store never borrows the operator's.

A SecretStore is written by a tenant, in the tenant's namespace; Paved then calls a backend
for it. So a SecretStore may act only with credentials that belong to its namespace, and
only at the platform's endpoints:

- credentials: a Secret of its namespace (AWS `auth.secretRef`, Vault `tokenSecretRef`,
  `appRole.secretRef`) or a ServiceAccount of its namespace (AWS `auth.serviceAccountRef` +
  `role`: AssumeRoleWithWebIdentity; Vault `auth.kubernetes`). Without either, an AWS store
  would use the operator's own identity (the default credential chain, alone or to assume
  `auth.role`): refused unless an IntentPolicy allows the namespace `OperatorCredentials`.
  A ServiceAccount of another namespace is refused always (no allowance lends one).
- endpoints: an AWS `endpointURL` other than the platform's (PAVED_AWS_ENDPOINT_URL) and a
  Vault `server` other than the platform's (PAVED_VAULT_ADDR) are refused unless an
  IntentPolicy allows the namespace `AnyEndpoint`: a tenant-chosen endpoint receives the
  store's signed requests and tokens, and makes Paved call into its network.

A ClusterSecretStore is the platform's own object: none of this applies to it (its
`access` list says who may read what through it, paved.secretsync.access).

Pure: the store's provider spec, the allowances and the platform's endpoints in, the
refusals (field + message, naming the fix) out. The engine asks before it builds a provider,
so a refused store reads nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from paved.api.platform import ALLOWED_KEYS
from paved.api.secrets import AwsProvider, SecretStoreProvider, VaultProvider
from paved.errors import FieldError
from paved.policy.endpoints import same_endpoint, without_credentials
from paved.secretsync.model import StoreKey

OPERATOR_CREDENTIALS = "OperatorCredentials"
ANY_ENDPOINT = "AnyEndpoint"
REASON = "NotAllowed"  # the store's Ready reason; its refs say STORE_NOT_ALLOWED
STORE_NOT_ALLOWED = "StoreNotAllowed"


@dataclass(frozen=True)
class PlatformEndpoints:
    """The endpoints the platform configured for the operator (its environment)."""

    aws: str | None = None  # PAVED_AWS_ENDPOINT_URL; None: AWS's own endpoints
    vault: str | None = None  # PAVED_VAULT_ADDR; None: the platform names no Vault


def refusals(key: StoreKey, provider: SecretStoreProvider, allowed: Mapping[str, Sequence[str]],
             platform: PlatformEndpoints) -> list[FieldError]:
    """Why store `key` may not act as `provider` says (empty: it may). `allowed` is what
    IntentPolicies allow SecretStores of its namespace (paved.policy.allowances)."""
    if key.cluster:
        return []
    ask = (f"or ask the platform team for an IntentPolicy that allows {{}} to SecretStores in namespace "
           f"{key.namespace} (docs/secrets.md)")
    may = {name: bool(allowed.get(ALLOWED_KEYS[name])) for name in (OPERATOR_CREDENTIALS, ANY_ENDPOINT)}
    found: list[FieldError] = []
    if provider.aws is not None:
        found += _aws(key.namespace, provider.aws, may, platform, ask)
    if provider.vault is not None:
        found += _vault(key.namespace, provider.vault, may, platform, ask)
    return found


def describe(found: Sequence[FieldError]) -> str:
    return "; ".join(str(refusal) for refusal in found)


def _foreign_namespace(field: str, namespace: str | None, own: str) -> list[FieldError]:
    if namespace is None or namespace == own:
        return []
    return [FieldError(field, f"a SecretStore may only use ServiceAccounts of its own namespace ({own}), "
                           f"not of {namespace}; remove the field or use a ClusterSecretStore")]


def _endpoint(field: str, url: str, platform: str | None, theirs: str, fix: str, may: bool, ask: str) -> list[FieldError]:
    if may or same_endpoint(url, platform):
        return []
    return [FieldError(field, f"a SecretStore calls only the platform's endpoints and {theirs}; {fix}"
                           f"use a ClusterSecretStore, {ask.format(ANY_ENDPOINT)}")]


def _aws(namespace: str, aws: AwsProvider, may: Mapping[str, bool], platform: PlatformEndpoints, ask: str) -> list[FieldError]:
    found: list[FieldError] = []
    auth = aws.auth
    if (auth is None or (auth.secretRef is None and auth.serviceAccountRef is None)) and not may[OPERATOR_CREDENTIALS]:
        borrowed = (f"assume {auth.role} with the operator's own AWS credentials" if auth is not None and auth.role
                    else "use the operator's own AWS credentials (its default credential chain)")
        found.append(FieldError("spec.provider.aws.auth", (
            f"without secretRef or serviceAccountRef this store would {borrowed}, and a SecretStore acts only with "
            f"credentials of its own namespace: set auth.secretRef (keys in a Secret of namespace {namespace}) or "
            f"auth.serviceAccountRef with auth.role (a ServiceAccount of namespace {namespace}, exchanged for the role "
            f"with AssumeRoleWithWebIdentity), use a ClusterSecretStore, {ask.format(OPERATOR_CREDENTIALS)}")))
    if auth is not None and auth.serviceAccountRef is not None:
        found += _foreign_namespace("spec.provider.aws.auth.serviceAccountRef.namespace", auth.serviceAccountRef.namespace,
                                    namespace)
    if aws.endpointURL is not None:
        theirs = (f"the platform's AWS endpoint is {without_credentials(platform.aws)} (PAVED_AWS_ENDPOINT_URL)"
                  if platform.aws else "the platform uses AWS's own endpoints")
        found += _endpoint("spec.provider.aws.endpointURL", aws.endpointURL, platform.aws, theirs,
                           "remove the field (the store then uses the platform's), ", may[ANY_ENDPOINT], ask)
    return found


def _vault(namespace: str, vault: VaultProvider, may: Mapping[str, bool], platform: PlatformEndpoints, ask: str) -> list[FieldError]:
    if platform.vault:
        theirs, fix = f"the platform's Vault is {without_credentials(platform.vault)} (PAVED_VAULT_ADDR)", "name that, "
    else:
        theirs, fix = "the platform names no Vault (the operator has no PAVED_VAULT_ADDR)", ""
    found = _endpoint("spec.provider.vault.server", vault.server, platform.vault, theirs, fix, may[ANY_ENDPOINT], ask)
    if vault.auth.kubernetes is not None:
        found += _foreign_namespace("spec.provider.vault.auth.kubernetes.serviceAccountRef.namespace",
                                    vault.auth.kubernetes.serviceAccountRef.namespace, namespace)
    return found
