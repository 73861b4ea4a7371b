"""Namespaces as admission, the audit and allowances read them: labels, briefly cached."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from paved.kube import apply as kube

NAMESPACE_TTL = 15.0


class NamespaceCache:
    """The Namespace (its labels select policies and allowances), read at most every `ttl`
    seconds per namespace: an admission answer or a thousand audits cost one read."""

    def __init__(self, ttl: float = NAMESPACE_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def get(self, namespace: str | None) -> dict[str, Any] | None:
        """{apiVersion, kind, metadata: {name, labels}}, or None when it does not exist."""
        if not namespace:
            return None
        now = self._clock()
        with self._lock:
            cached = self._cached.get(namespace)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        live = kube.get("v1", "Namespace", namespace)
        labels = dict(((live or {}).get("metadata") or {}).get("labels") or {})
        value = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}} if live else None
        with self._lock:
            self._cached[namespace] = (now, value)
        return value

    def labels(self, namespace: str | None) -> dict[str, str] | None:
        """The namespace's labels (None: no such namespace, or none given)."""
        found = self.get(namespace)
        return dict(found["metadata"]["labels"]) if found else None
