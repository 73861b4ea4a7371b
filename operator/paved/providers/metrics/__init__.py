"""Metric providers for canary analysis: a narrow Protocol and a registry keyed by provider name.

Flagger's shape: `spec.analysis` names its source with a one-of field (today only
`prometheus`); the name of the field that is set picks the factory, and the factory builds a
provider for that source's settings (its address) and the rollout's `Egress` (where it may
connect: paved.providers.egress). `for_analysis` keeps one instance per (provider, settings,
egress), so HTTP connections are reused by every rollout that queries the same server; it is
keyed by a digest of the settings, which hold credentials, and closed once no rollout asked
for it in a while (a rotated credential makes new settings, so a new instance).

A provider answers one instant query at a time:

- `query(promql)` -> a `QueryResult`: `value` (None for an empty result), or `error` (the
  server rejected the query, timed out, was unreachable). It never raises for a bad query;
  `rejected` tells a query the server refused as invalid (a spec error, shown on the field)
  from a failure that retrying later can fix.
- `measure(MetricQuery)` -> the `MetricMeasurement` the rollout state machine expects: the
  metric's value and, when the metric has a `samplesQuery`, the sample count.

`paved.providers.metrics.fake.FakeMetrics` is the in-memory provider for unit tests; it is
never registered by production code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from paved.providers.base import ProviderError
from paved.providers.egress import STRICT, Egress
from paved.providers.registry import Registry
from paved.rollout.actions import MetricQuery
from paved.rollout.observation import MetricMeasurement


@dataclass(frozen=True)
class QueryResult:
    """One instant query's answer: a number, no data (value None), or an error."""

    value: float | None = None
    error: str | None = None
    rejected: bool = False  # the server refused the query itself (syntax, unknown function)


@runtime_checkable
class MetricsProvider(Protocol):
    name: str

    def query(self, promql: str) -> QueryResult:
        """Run one instant query now; never raises for a failed query."""


def measure(provider: MetricsProvider, request_id: str, metric: MetricQuery,
            executor: Executor | None = None) -> MetricMeasurement:
    """Answer one metric of a `Measure` action: value, sample count, or the error text.

    Both queries are reported so the history shows them; with an `executor` they run at the
    same time (one round trip instead of two).
    """
    pending = executor.submit(provider.query, metric.query) if executor is not None else None
    samples: int | None = None
    if metric.samples_query:
        counted = provider.query(metric.samples_query)
        if counted.error:
            if pending is not None:
                pending.result()
            return MetricMeasurement(request_id, error=f"samplesQuery: {counted.error}")
        if counted.value is not None and math.isfinite(counted.value):
            samples = int(round(counted.value))
    result = pending.result() if pending is not None else provider.query(metric.query)
    if result.error:
        return MetricMeasurement(request_id, samples=samples, error=result.error)
    return MetricMeasurement(request_id, value=result.value, samples=samples)


_verdicts: dict[tuple[str, str], str | None] = {}  # (provider, query) -> why the server rejects it (None: valid)
_verdicts_lock = threading.Lock()


def rejection(provider: MetricsProvider, promql: str) -> str | None:
    """Why the provider's server rejects `promql` as invalid (None: it does not), asked once
    per distinct (server, query) and remembered: a rejected query never becomes a
    measurement that holds a canary with traffic on it. A server that cannot be reached says
    nothing about the query, so that answer is not remembered."""
    key = (repr(provider), promql)
    with _verdicts_lock:
        if key in _verdicts:
            return _verdicts[key]
    result = provider.query(promql)
    if result.error and not result.rejected:
        return None
    verdict = f"Prometheus rejected it: {result.error}" if result.rejected else None
    with _verdicts_lock:
        _verdicts[key] = verdict
    return verdict


# --- the registry ---------------------------------------------------------------------------

ProviderFactory = Callable[[Mapping[str, Any], Egress], MetricsProvider]
"""Builds a provider from its settings (the value of the one-of field, e.g. {address: ...}) and
the rule for its connections (paved.providers.egress)."""

METRICS: Registry[ProviderFactory] = Registry(
    "metrics provider",
    builtin={"prometheus": "paved.providers.metrics.prometheus:from_settings"},
    unknown=lambda name, known: ProviderError(f"unknown metrics provider {name!r}; known: {known}", retryable=False),
)
"""Metrics providers by the one-of field of spec.analysis."""

IDLE_SECONDS = 600.0
"""A provider no rollout asked for in this long is closed: what is left after the credentials
of its settings were rotated (the new settings are another instance), or a rollout went away."""
MAX_INSTANCES = 64
"""Beyond this many, the least recently used providers are closed first."""

_instances: dict[tuple[str, str, bool], _Instance] = {}  # (provider, digest of the settings, any_endpoint)
_lock = threading.Lock()
_clock: Callable[[], float] = time.monotonic
_DIGEST_KEY = secrets.token_bytes(32)  # keyed: the cache holds no digest a guessed credential could be checked against


@dataclass
class _Instance:
    provider: MetricsProvider
    used: float


def _settings_digest(settings: Mapping[str, Any]) -> str:
    """The settings (which hold credentials) as a cache key that does not hold them."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(_DIGEST_KEY, canonical.encode(), hashlib.sha256).hexdigest()


def _close(providers: list[MetricsProvider]) -> None:
    for provider in providers:
        close = getattr(provider, "close", None)
        if callable(close):
            close()


def _forget_instances(name: str) -> None:
    with _lock:
        gone = [_instances.pop(key).provider for key in [k for k in _instances if k[0] == name]]
    _close(gone)


METRICS.on_change(_forget_instances)


def source_of(analysis: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """(provider name, settings) of spec.analysis: the one-of field that is set."""
    for name in METRICS.names():
        settings = analysis.get(name)
        if isinstance(settings, Mapping):
            return name, settings
    raise ProviderError("spec.analysis names no metrics provider; set spec.analysis.prometheus",
                        retryable=False, field="spec.analysis")


def for_analysis(analysis: Mapping[str, Any], egress: Egress = STRICT) -> MetricsProvider:
    """The provider for spec.analysis, one instance per (provider, settings, egress) per process;
    those idle for IDLE_SECONDS, and the least recently used beyond MAX_INSTANCES, are closed."""
    name, settings = source_of(analysis)
    key = (name, _settings_digest(settings), egress.any_endpoint)
    now = _clock()
    with _lock:
        instance = _instances.get(key)
        if instance is not None:
            instance.used = now  # before any sweep can see it idle
    created = METRICS.factory(name)(settings, egress) if instance is None else None
    with _lock:
        if created is not None:
            instance = _instances.setdefault(key, _Instance(created, now))
        assert instance is not None  # noqa: S101
        idle = [k for k, other in _instances.items() if k != key and now - other.used > IDLE_SECONDS]
        crowd = sorted((k for k in _instances if k != key and k not in idle), key=lambda k: _instances[k].used)
        evicted = idle + crowd[:max(0, len(_instances) - len(idle) - MAX_INSTANCES)]
        gone = [_instances.pop(k).provider for k in evicted]
    if created is not None and created is not instance.provider:
        gone.append(created)  # another thread built the same one first
    _close(gone)
    return instance.provider
