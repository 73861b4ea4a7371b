"""The engines: the stateful middle layer between Kopf's handlers and the providers.

`Engines` is the one object that holds a process's state (paved.runtime builds it once and
hands it to every Kopf handler as `memo`): the compose engine and the kinds built on it
(databases, identities), the Compositions' rollout waves, the secret sync engine, the rollout engine, the policy audit, the
namespace cache, and what `paved run` was told to serve. Handlers read from it, call into
it and write what it returns; nothing in paved.handlers keeps state of its own.

Lifecycle: the engines that run threads (secret sync and its watches, the audit, the
rollout and identity pools) work only on the leader. `start_leading` and `stop` are called by
the runtime when this process takes the Lease and when it shuts down; the compose engine
and the namespace cache have no threads and serve both roles (admission reads them too).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from paved.engines.audit import DEFAULT_AUDIT_INTERVAL, Auditor
from paved.engines.compose import ComposeEngine
from paved.engines.compose.waves import CompositionWaves
from paved.engines.database import DatabaseEngine
from paved.engines.identity import IdentityEngine
from paved.engines.namespaces import NamespaceCache
from paved.engines.rollout import RolloutEngine
from paved.engines.secretsync import KubeApi, SyncEngine
from paved.kube.port import ApiKube, KubePort

log = logging.getLogger(__name__)


class Watch(Protocol):
    """A watch that feeds an engine (paved.kube.watch.Informer)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Scope:
    """What this operator serves (`paved run` options)."""

    namespaces: frozenset[str] = frozenset()  # empty: every namespace
    exception_namespaces: frozenset[str] = frozenset()  # where PolicyExceptions are honoured
    audit_interval: float = DEFAULT_AUDIT_INTERVAL  # seconds between full policy audits
    prometheus_address: str | None = None  # the Prometheus of rollouts whose spec names none


class Engines:
    """Every engine of the process, shared by every handler (see the module docstring)."""

    def __init__(self, scope: Scope = Scope(), *, secrets: SyncEngine | None = None, kube: KubePort | None = None) -> None:
        self.scope = scope
        self.namespaces = NamespaceCache()
        self.compose = ComposeEngine(kube or ApiKube())  # the API server; a FakeKube in unit tests
        self.waves = CompositionWaves(self.compose)
        self.databases = DatabaseEngine(self.compose)
        self.identities = IdentityEngine(self.compose)
        self.rollouts = RolloutEngine(self.compose.allowances, scope.prometheus_address)
        self.secrets = secrets or SyncEngine(KubeApi(), allowances=self.compose.allowances)
        self.audit = Auditor(namespaces=scope.namespaces, exception_namespaces=scope.exception_namespaces,
                             namespace_cache=self.namespaces, interval=scope.audit_interval)
        self._watches: list[Watch] = []

    def __copy__(self) -> Engines:
        # Kopf gives each object a shallow copy of the memo; this one is shared on purpose.
        return self

    def start_leading(self, watches: Sequence[Watch] = ()) -> None:
        """This process leads: the secret engine, then the watches that feed it."""
        self.secrets.start()
        self._watches = list(watches)
        for watch in self._watches:
            watch.start()

    def stop(self) -> None:
        """Stop every engine's threads (the process is shutting down)."""
        for watch in self._watches:
            watch.stop()
        self.secrets.stop()
        self.waves.stop()
        self.audit.stop()
        self.rollouts.stop()
        self.identities.stop()


__all__ = ["Engines", "Scope", "Watch"]
