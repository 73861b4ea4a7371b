"""Kopf handlers, one module per kind; each module's `register` adds its handlers to a registry.

Two registries per process (paved.runtime runs one Kopf operator on each):
- `serving_registry`: the admission webhook's handlers and the indexes they read. Every
  replica runs it, leader or not; nothing in it writes.
- `leading_registry`: everything that reconciles and writes, and the indexes those handlers
  read. Only the replica holding the Lease runs it.

Typing: Kopf hands a handler the indexes it names (`composition_index`, ...) as keyword
arguments, which Kopf's callback Protocols cannot express; registering such a handler is
marked `type: ignore[arg-type]` (indexes by name), and only that.
"""

from __future__ import annotations

from concurrent.futures import Executor

import kopf

from paved.handlers import admission, children, database, identity, indexes, platform, policy, rollout, secrets
from paved.handlers._guard import guard_handlers


def _registry() -> kopf.OperatorRegistry:
    """An empty registry that logs in as Kopf's default one does: through the kubernetes
    client's configuration (kubeconfig or in-cluster), like paved.kube.client."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_via_client)
    return registry


def serving_registry(admission_executor: Executor) -> kopf.OperatorRegistry:
    """Admission and its indexes: what every replica runs."""
    registry = _registry()
    indexes.register(registry)
    admission.register(registry, admission_executor)
    guard_handlers(registry)  # Kopf never sees an unexpected error's message (paved.handlers._guard)
    return registry


def leading_registry() -> kopf.OperatorRegistry:
    """Every reconcile, daemon, timer and watch that writes: what the leader runs."""
    registry = _registry()
    indexes.register(registry)
    for module in (platform, policy, children, database, identity, rollout, secrets):
        module.register(registry)
    guard_handlers(registry)
    return registry


__all__ = ["admission", "children", "database", "identity", "indexes", "leading_registry", "platform", "policy",
           "rollout", "secrets", "serving_registry"]
