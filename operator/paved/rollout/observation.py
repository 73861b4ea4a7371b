"""What the handler measured this tick, as plain immutable data.

The state machine never reads the cluster, Prometheus or a clock: the handler gathers
everything here and passes `now` separately. Results of work the machine asked for on an
earlier call (measurements, webhooks) carry the request's id or key, so a stale or repeated
result is recognised and used at most once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Mapping


@dataclass(frozen=True)
class TargetState:
    """The user's Deployment: `revision` is its pod-template hash, `replicas` its spec.replicas
    as read. `remembered` is the user's own count while Paved keeps the Deployment scaled down
    (spec.originalScaleDown): the `paved.dev/original-replicas` annotation Paved wrote with
    the scale, reported only while Paved's field manager still owns spec.replicas (a user who
    scales the Deployment takes the field over, and the count read is theirs again)."""

    revision: str
    replicas: int
    remembered: int | None = None

    @property
    def user_replicas(self) -> int:
        """The user's count: the "full scale" for stable and, at 100%, canary."""
        return self.remembered if self.remembered is not None else self.replicas


@dataclass(frozen=True)
class AutoscalerState:
    """The user's HorizontalPodAutoscaler (spec.autoscalerRef): its bounds, and `revision`, a
    hash of its spec, so a change of its metrics or behaviour reaches the derived ones."""

    min_replicas: int
    max_replicas: int
    revision: str


@dataclass(frozen=True)
class WorkloadState:
    """A stable or canary workload as read from the cluster.

    `desired` is spec.replicas; `ready` must count only ready pods running `revision`
    (e.g. `updatedReplicas`-and-ready once `observedGeneration` caught up), so "ready at full
    scale" really means the new template is serving.
    """

    revision: str | None
    desired: int
    ready: int

    def is_ready(self, replicas: int, revision: str | None = None) -> bool:
        """Scaled to exactly `replicas`, all ready, running `revision` (moot at zero pods)."""
        if replicas > 0 and revision is not None and self.revision != revision:
            return False
        return self.desired == replicas and self.ready >= replicas


ABSENT = WorkloadState(revision=None, desired=0, ready=0)


@dataclass(frozen=True)
class Weights:
    """Traffic percentages as the router read them back (stable + canary = 100)."""

    stable: int
    canary: int


@dataclass(frozen=True)
class MetricMeasurement:
    """One metric's answer to `Measure(request_id=...)`.

    `value` None means the query returned an empty result; `samples` is the companion
    samples query's value (None: no samples query, or it was empty); `error` is the query
    error text (Prometheus rejected it, timeout, connection refused).
    """

    request_id: str
    value: float | None = None
    samples: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class WebhookResult:
    """The outcome of `RunWebhook(key=...)`: `ok` only for a 2xx within the timeout."""

    ok: bool
    detail: str = ""  # e.g. "HTTP 503", "timed out after 10s", "connection refused"


class CommandKind(str, Enum):
    PROMOTE = "promote"
    ABORT = "abort"
    RETRY = "retry"


@dataclass(frozen=True)
class Command:
    """A user command (`paved rollout promote|abort|retry`). `id` makes it one-shot: a
    command whose id was already consumed is ignored, so a lingering annotation acts once."""

    kind: CommandKind
    id: str


@dataclass(frozen=True)
class Observation:
    """Everything measured this tick.

    `observed_at` is when workloads and weights were read; a read older than the machine's
    last change to them is not treated as drift. None means "read at `now`".
    `copy_autoscalers` are the copies' HPAs as read, by role ("stable", "canary"; a role
    missing: no HPA), each with the revision of the user's HPA it was derived from; None:
    not read.
    """

    target: TargetState | None
    stable: WorkloadState | None = None
    canary: WorkloadState | None = None
    weights: Weights | None = None
    measurements: Mapping[str, MetricMeasurement] = field(default_factory=dict)
    webhook_results: Mapping[str, WebhookResult] = field(default_factory=dict)
    command: Command | None = None
    observed_at: datetime | None = None
    autoscaler: AutoscalerState | None = None
    copy_autoscalers: Mapping[str, AutoscalerState] | None = None
