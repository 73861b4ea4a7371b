"""What the composition engine produces, shared with the providers that act on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RenderedResource:
    """One composed resource: the desired state a provider must make true.

    `body` is provider-specific: a Kubernetes manifest for `kubernetes`, the exact
    parameters of the cloud call for `aws-rds` and friends. `pending` is True when the
    template read an output of an earlier resource that is not known yet; such a resource
    must not be applied until a later pass.
    """

    name: str
    provider: str
    body: dict[str, Any]
    pending: bool = False
    readiness: str = "provider"  # "provider": ask the provider; "none": ready once applied
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class RenderResult:
    composition: str
    resources: tuple[RenderedResource, ...]
    hash: str  # sha256 of the canonical rendered bodies; changes iff the desired state changes
    warnings: tuple[str, ...] = field(default=())
