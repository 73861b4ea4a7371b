"""The provider contract: small Protocols and one registry keyed by provider name.

A provider turns one RenderedResource into reality (a Kubernetes object, an RDS instance,
a Vault role) and reports what it observed. Providers are I/O; the layers above them
(render, policy, rollout) never import them, and unit tests of handlers substitute
in-memory fakes under the same names (PROVIDERS.substituted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from paved.errors import SafeError
from paved.providers.registry import Registry
from paved.render.types import RenderedResource


@dataclass(frozen=True)
class Owner:
    """The intent a resource belongs to: used for ownerReferences, tags and names."""

    api_version: str
    kind: str
    name: str
    namespace: str | None
    uid: str
    generation: int | None = None


@dataclass
class Observation:
    """What a provider saw (and, after apply, did) for one resource."""

    exists: bool
    ready: bool = False
    outputs: dict[str, Any] = field(default_factory=dict)  # e.g. address, port, arn; never secret values
    message: str = ""
    external_id: str = ""  # RDS identifier, Vault role path, "Kind/namespace/name", ...
    drift: list[str] = field(default_factory=list)  # field paths that differed and were corrected
    immutable_drift: list[str] = field(default_factory=list)  # differences we refuse to correct
    changed: bool = False  # apply wrote something


@dataclass(frozen=True)
class DeletionResult:
    done: bool
    message: str = ""


class ProviderError(SafeError):
    """A provider call failed. `retryable` is False for errors that retrying cannot fix
    (bad parameters, permission denied); the message is built from names, paths and codes
    (paved.errors.SafeError), never a value."""

    def __init__(self, message: str, *, retryable: bool = True, field: str | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.field = field


@runtime_checkable
class ResourceProvider(Protocol):
    name: str

    def observe(self, resource: RenderedResource, owner: Owner) -> Observation:
        """Read the current state; no writes."""

    def apply(self, resource: RenderedResource, owner: Owner) -> Observation:
        """Create the resource or bring it back to `resource.body`; idempotent; never deletes."""

    def delete(self, resource: RenderedResource, owner: Owner, policy: str) -> DeletionResult:
        """Remove (or retain/snapshot per `policy`) what apply created; idempotent."""


ProviderFactory = Callable[[], ResourceProvider]

PROVIDERS: Registry[ProviderFactory] = Registry(
    "resource provider",
    builtin={
        "kubernetes": "paved.providers.kubernetes:KubernetesProvider",
        "aws-rds": "paved.providers.aws.rds:RdsProvider",
        "aws-iam-role": "paved.providers.aws.iam:IamRoleProvider",
        "aws-db-subnet-group": "paved.providers.aws.dbsubnetgroup:DBSubnetGroupProvider",
        "aws-security-group": "paved.providers.aws.ec2:SecurityGroupProvider",
        "vault-policy": "paved.providers.vault.admin:VaultPolicyProvider",
        "vault-k8s-role": "paved.providers.vault.admin:VaultKubernetesRoleProvider",
    },
    unknown=lambda name, known: ProviderError(f"unknown provider {name!r}; registered providers: {known}", retryable=False),
)
"""Resource providers by the `provider:` field of a composition's resources."""

_INSTANCES: dict[str, ResourceProvider] = {}


def _forget_instance(name: str) -> None:
    _INSTANCES.pop(name, None)


PROVIDERS.on_change(_forget_instance)


def get(name: str) -> ResourceProvider:
    """The provider instance for `name`, created once per process."""
    if name not in _INSTANCES:
        _INSTANCES[name] = PROVIDERS.factory(name)()
    return _INSTANCES[name]


def reset() -> None:
    """Forget every instance (tests)."""
    _INSTANCES.clear()
