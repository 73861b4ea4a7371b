"""Reads the platform's ceiling ClusterRole (paved.identity.ceiling) for the identity handler.

One GET of one named ClusterRole, served from the API server's watch cache and kept for
TTL_SECONDS: a thousand identities reconciled (or re-checked by their daemons) within that
time cost one request, and a platform extending the ceiling is seen within it. A ceiling
that does not exist holds nothing (the API server would refuse every grant as well).
"""

from __future__ import annotations

import threading
import time

from paved.identity.ceiling import CLUSTER_ROLE, Ceiling
from paved.kube import apply as kube

TTL_SECONDS = 5.0

_lock = threading.Lock()
_cached: tuple[float, Ceiling] | None = None


def read() -> Ceiling:
    """The ceiling as of at most TTL_SECONDS ago; raises paved.kube.client.ApiError."""
    global _cached
    now = time.monotonic()
    with _lock:
        if _cached is not None and now - _cached[0] < TTL_SECONDS:
            return _cached[1]
    live = kube.get("rbac.authorization.k8s.io/v1", "ClusterRole", CLUSTER_ROLE, cached=True)
    ceiling = Ceiling(
        rules=tuple((live or {}).get("rules") or ()),
        found=live is not None,
        version=str(((live or {}).get("metadata") or {}).get("resourceVersion", "")),
    )
    with _lock:
        _cached = (now, ceiling)
    return ceiling

