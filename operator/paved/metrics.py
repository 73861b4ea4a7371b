"""The operator's Prometheus metrics: defined once here, incremented where the work happens.

Label values are low-cardinality by construction (provider names, operation verbs, kinds,
results); object names never become labels, so 1,000 intents do not make 1,000 series.
`paved run` serves them on `--metrics-port` (see paved.runtime).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

PROVIDER_API_CALLS = Counter(
    "paved_provider_api_calls_total",
    "Calls made by providers to the systems they manage (Kubernetes API, AWS, Vault, ...).",
    ["provider", "operation"],
)

RECONCILES = Counter(
    "paved_reconcile_total",
    "Reconciles of intents, by kind and result (ready, waiting, invalid, error, unchanged).",
    ["kind", "result"],
)

RECONCILE_DURATION = Histogram(
    "paved_reconcile_duration_seconds",
    "Wall time of one reconcile of an intent, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

LEADER = Gauge(
    "paved_leader",
    "1 while this replica holds the leader Lease and runs the engines, else 0.",
)

WRITES_FENCED = Counter(
    "paved_writes_fenced_total",
    "Outbound calls not sent because this replica was not (surely) the leader (paved.fence).",
)

EVENTS_DROPPED = Counter(
    "paved_events_dropped_total",
    "Kubernetes Events not posted because the background recorder's queue was full.",
)

SECRET_REFRESH_LATENESS = Histogram(
    "paved_secret_refresh_lateness_seconds",
    "How long after its due time the secret engine started an ExternalSecretRef's refresh "
    "(stores are independent: a store that hangs must not make other stores' refs late).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)

SECRET_STORES_CIRCUIT_OPEN = Gauge(
    "paved_secret_stores_circuit_open",
    "Secret stores whose circuit breaker is open (not called until their cool-down ends).",
)


def count_call(provider: str, operation: str) -> None:
    """Count one call of `provider` doing `operation` (get, list, apply, create, delete, ...)."""
    PROVIDER_API_CALLS.labels(provider=provider, operation=operation).inc()


def call_counts(provider: str) -> dict[str, int]:
    """This process's calls of `provider` so far, by operation (for tests and benchmarks)."""
    samples = (sample for metric in PROVIDER_API_CALLS.collect() for sample in metric.samples)
    return {s.labels["operation"]: int(s.value) for s in samples if s.name.endswith("_total") and s.labels["provider"] == provider}


@contextmanager
def timed_reconcile(kind: str) -> Iterator[None]:
    """Observe the duration of the enclosed reconcile of one `kind` object."""
    start = time.perf_counter()
    try:
        yield
    finally:
        RECONCILE_DURATION.labels(kind=kind).observe(time.perf_counter() - start)


# --- ProgressiveRollout ------------------------------------------------------------------------
#
# The one deliberate exception to "object names never become labels": a rollout's weight,
# phase and verdicts are only useful per rollout (as Flagger's flagger_canary_weight{name,
# namespace}). Cardinality is bounded by the number of ProgressiveRollouts (a handful of
# series each, metric names come from their specs) and a rollout's series are removed when
# it is deleted (forget_rollout).

ROLLOUT_PHASES = ("Initializing", "Progressing", "Paused", "Promoting", "Succeeded", "RolledBack", "Failed")
ROLLOUT_VERDICTS = ("Successful", "Failed", "Inconclusive", "Error")

ROLLOUT_CANARY_WEIGHT = Gauge(
    "paved_rollout_canary_weight",
    "Percentage of traffic the route sends to the canary, by rollout.",
    ["namespace", "name"],
)

ROLLOUT_PHASE = Gauge(
    "paved_rollout_phase",
    "1 for the rollout's current phase, 0 for the others.",
    ["namespace", "name", "phase"],
)

ROLLOUT_METRIC_VALUE = Gauge(
    "paved_rollout_metric_value",
    "Last measured value of an analysis metric (NaN when the query returned no data or failed).",
    ["namespace", "name", "metric"],
)

ROLLOUT_METRIC_VERDICT = Gauge(
    "paved_rollout_metric_verdict",
    "1 for the verdict of the last measurement of an analysis metric, 0 for the others.",
    ["namespace", "name", "metric", "verdict"],
)

ROLLOUT_TICK_LATENESS = Histogram(
    "paved_rollout_tick_lateness_seconds",
    "How late a scheduled rollout tick started, after the time the state machine asked for.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

ROLLOUT_TICK_DURATION = Histogram(
    "paved_rollout_tick_duration_seconds",
    "Wall time of one rollout tick (reads, decisions, status writes and actions).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

_rollout_metrics: dict[tuple[str, str], set[str]] = {}  # (namespace, name) -> metric names seen


def set_rollout_state(namespace: str, name: str, phase: str | None, canary_weight: int | None) -> None:
    """Export a rollout's phase (one-hot) and canary weight."""
    ROLLOUT_CANARY_WEIGHT.labels(namespace=namespace, name=name).set(canary_weight or 0)
    for candidate in ROLLOUT_PHASES:
        ROLLOUT_PHASE.labels(namespace=namespace, name=name, phase=candidate).set(1 if candidate == phase else 0)
    _rollout_metrics.setdefault((namespace, name), set())


def set_rollout_metric_value(namespace: str, name: str, metric: str, value: float | None) -> None:
    ROLLOUT_METRIC_VALUE.labels(namespace=namespace, name=name, metric=metric).set(
        float("nan") if value is None else value)
    _rollout_metrics.setdefault((namespace, name), set()).add(metric)


def set_rollout_verdict(namespace: str, name: str, metric: str, verdict: str | None) -> None:
    """Export the verdict of a metric's last measurement (one-hot)."""
    for candidate in ROLLOUT_VERDICTS:
        ROLLOUT_METRIC_VERDICT.labels(namespace=namespace, name=name, metric=metric, verdict=candidate).set(
            1 if candidate == verdict else 0)
    _rollout_metrics.setdefault((namespace, name), set()).add(metric)


def forget_rollout(namespace: str, name: str) -> None:
    """Remove every series of a deleted rollout."""
    metrics_seen = _rollout_metrics.pop((namespace, name), set())
    for gauge, extra in ((ROLLOUT_CANARY_WEIGHT, [()]), (ROLLOUT_PHASE, [(p,) for p in ROLLOUT_PHASES])):
        for values in extra:
            try:
                gauge.remove(namespace, name, *values)
            except KeyError:
                pass
    for metric in metrics_seen:
        for gauge, extra in ((ROLLOUT_METRIC_VALUE, [()]), (ROLLOUT_METRIC_VERDICT, [(v,) for v in ROLLOUT_VERDICTS])):
            for values in extra:
                try:
                    gauge.remove(namespace, name, metric, *values)
                except KeyError:
                    pass
