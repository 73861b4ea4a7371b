"""What the state machine asks the handler to do, as plain immutable data.

The handler writes the decision's status first, then executes its actions in order and
stops at the first failure. Every action is idempotent (set a count, set a weight, apply a
template): when the cluster lags behind status after a crash or a failed action, the next
decision re-sends what is missing. Webhooks are at-least-once and carry a stable `key` for
receivers that need to de-duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class EnsureCanary:
    """Create or update the canary workload with the target's pod template at `revision`,
    scaled to `replicas`."""

    revision: str
    replicas: int


@dataclass(frozen=True)
class ScaleStable:
    replicas: int


@dataclass(frozen=True)
class ScaleCanary:
    replicas: int


@dataclass(frozen=True)
class PromoteStableTemplate:
    """Copy the target's pod template at `revision` into the stable workload, scaled to
    `replicas` (it rolls while it serves no traffic)."""

    revision: str
    replicas: int


@dataclass(frozen=True)
class ScaleOriginal:
    """Set spec.replicas of the user's Deployment (and nothing else of it), with `remember`
    (the user's own count) kept next to it for the restore; `remember` None hands the field
    back at `replicas` (the user's count) and forgets the note."""

    replicas: int
    remember: int | None


@dataclass(frozen=True)
class SetAutoscaler:
    """Apply the `role` copy's HorizontalPodAutoscaler: the user's (spec.autoscalerRef, at
    `revision`) aimed at the copy, within these bounds."""

    role: str
    min_replicas: int
    max_replicas: int
    revision: str


@dataclass(frozen=True)
class RemoveAutoscalers:
    """Delete the copies' HorizontalPodAutoscalers (spec.autoscalerRef was removed); those
    already gone are fine."""


@dataclass(frozen=True)
class SetWeights:
    """Set the route weights; the router must read them back and fail the action (stopping
    the remaining actions) when they differ, because later actions rely on them."""

    stable: int
    canary: int


@dataclass(frozen=True)
class RunWebhook:
    """Call a webhook (POST) and report `WebhookResult` under `key` in a later observation.

    `key` is stable across retries of the same call: send it (e.g. as `X-Paved-Webhook-Key`)
    so a receiver can de-duplicate an at-least-once delivery after an operator restart.
    """

    type: str
    name: str
    url: str
    timeout_seconds: float
    key: str
    revision: str
    step_index: int


@dataclass(frozen=True)
class Notify:
    """POST a message about a transition (`event`: Started, StepStarted, Paused, Promoted,
    RolledBack) to spec.notifications[`index`].url, once, without waiting for it.

    Unlike RunWebhook nothing waits for the answer and nothing re-sends it: a failed
    notification is reported (a Warning Event) and the rollout goes on. `key` has the shape
    of a webhook call's key, so a receiver can drop the duplicate a lost status write may
    cause (the transition is then decided again, with the same key).
    """

    index: int
    url: str
    timeout_seconds: float
    key: str
    event: str
    text: str
    revision: str
    step_index: int
    weight: int


@dataclass(frozen=True)
class MetricQuery:
    name: str
    query: str
    samples_query: str | None = None


@dataclass(frozen=True)
class Measure:
    """Run these instant queries now and report each as `MetricMeasurement(request_id=...)`.

    The handler normally measures at once and calls `decide` again with the results.
    """

    request_id: str
    metrics: tuple[MetricQuery, ...]


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class RequeueAfter:
    """Call `decide` again after this many seconds (the next step or measurement is due)."""

    seconds: float


Action = Union[
    EnsureCanary, ScaleStable, ScaleCanary, PromoteStableTemplate, ScaleOriginal, SetAutoscaler, RemoveAutoscalers,
    SetWeights,
    RunWebhook, Notify, Measure, Event, RequeueAfter,
]
