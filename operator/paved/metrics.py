"""The operator's Prometheus metrics: defined once here, incremented where the work happens.

Label values are low-cardinality by construction (provider names, operation verbs, kinds,
results); object names never become labels, so 1,000 intents do not make 1,000 series.
`paved run` serves them on `--metrics-port` (see paved.runtime).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

PROVIDER_API_CALLS = Counter(
    "provider_api_calls_total",
    "Calls made by providers to the systems they manage (Kubernetes API, AWS, Vault, ...).",
    ["provider", "operation"],
)

RECONCILES = Counter(
    "reconcile_total",
    "Reconciles of intents, by kind and result (ready, waiting, invalid, error, unchanged).",
    ["kind", "result"],
)

RECONCILE_DURATION = Histogram(
    "reconcile_duration_seconds",
    "Wall time of one reconcile of an intent, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def count_call(provider: str, operation: str) -> None:
    """Count one call of `provider` doing `operation` (get, list, apply, create, delete, ...)."""
    PROVIDER_API_CALLS.labels(provider=provider, operation=operation).inc()


@contextmanager
def timed_reconcile(kind: str) -> Iterator[None]:
    """Observe the duration of the enclosed reconcile of one `kind` object."""
    start = time.perf_counter()
    try:
        yield
    finally:
        RECONCILE_DURATION.labels(kind=kind).observe(time.perf_counter() - start)
