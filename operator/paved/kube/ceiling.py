"""Reads the platform's ceiling ClusterRole (paved.identity.ceiling) for the identity engine.

One GET of one named ClusterRole, served from the API server's watch cache and kept for
TTL_SECONDS: a thousand identities reconciled (or re-checked by their daemons) within that
time cost one request, and a platform extending the ceiling is seen within it. A ceiling
that does not exist holds nothing (the API server would refuse every grant as well).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from paved.identity.ceiling import CLUSTER_ROLE, Ceiling
from paved.kube import apply as kube

TTL_SECONDS = 5.0


class CeilingReader:
    """The ceiling as of at most TTL_SECONDS ago (one per identity engine)."""

    def __init__(self, ttl: float = TTL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, Ceiling] | None = None

    def read(self) -> Ceiling:
        """Raises paved.kube.client.ApiError when the API server cannot be asked."""
        now = self._clock()
        with self._lock:
            if self._cached is not None and now - self._cached[0] < self.ttl:
                return self._cached[1]
        live = kube.get("rbac.authorization.k8s.io/v1", "ClusterRole", CLUSTER_ROLE, cached=True)
        ceiling = Ceiling(
            rules=tuple((live or {}).get("rules") or ()),
            found=live is not None,
            version=str(((live or {}).get("metadata") or {}).get("resourceVersion", "")),
        )
        with self._lock:
            self._cached = (now, ceiling)
        return ceiling
