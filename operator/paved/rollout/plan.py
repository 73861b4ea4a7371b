"""The rollout plan: a typed, checked reading of a ProgressiveRollout `spec`.

The shape of the spec (types, ranges, one-of groups, duration syntax, shorthand expansion)
is defined once, by the API model `paved.api.rollout.ProgressiveRolloutSpec`. This module
adds the checks a schema cannot express — weights that step backwards, CEL conditions that
do not compile or do not yield a boolean, zero intervals — and converts the model into the
small frozen `RolloutPlan` the state machine reads.

Every problem is a `FieldError` naming the exact field (`spec.steps[2].setWeight`), so the
handler can set a condition that says what to fix, and move no traffic.

Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any, Mapping, Union

from pydantic import ValidationError

from paved.api import rollout as api
from paved.api.common import parse_duration
from paved.api.kinds import field_errors
from paved.errors import FieldError, SafeError
from paved.rollout import cel


class SpecError(SafeError, ValueError):
    """The spec cannot be run; `errors` names every offending field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = list(errors)


class RouterKind(str, Enum):
    GATEWAY_API = "gatewayAPI"
    REPLICA_RATIO = "replicaRatio"


class OriginalScaleDown(str, Enum):
    """What happens to the user's own Deployment's pods once Paved's stable copy serves."""

    NEVER = "Never"
    ON_SUCCESS = "OnSuccess"
    PROGRESSIVELY = "Progressively"


class NoDataPolicy(str, Enum):
    """What an empty query result means: hold (inconclusive, extend the step), fail, or pass."""

    HOLD = "hold"
    FAIL = "fail"
    PASS = "pass"  # noqa: S105 - a name, not a secret


class WebhookType(str, Enum):
    PRE_ROLLOUT = "pre-rollout"
    ROLLOUT = "rollout"
    CONFIRM_PROMOTION = "confirm-promotion"
    POST_ROLLOUT = "post-rollout"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class SetWeightStep:
    weight: int

    def describe(self) -> str:
        return f"setWeight {self.weight}"


@dataclass(frozen=True)
class PauseStep:
    """Wait `duration`, or (None) until a `promote` command."""

    duration: timedelta | None = None

    def describe(self) -> str:
        if self.duration is None:
            return "pause until promoted"
        return f"pause {self.duration.total_seconds():g}s"


@dataclass(frozen=True)
class AnalysisStep:
    """Run these metrics now (empty: all metrics); the step ends when each has passed."""

    metrics: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"analysis of {', '.join(self.metrics)}" if self.metrics else "analysis of all metrics"


Step = Union[SetWeightStep, PauseStep, AnalysisStep]


@dataclass(frozen=True)
class Metric:
    name: str
    query: str
    success_condition: str
    failure_condition: str | None = None
    failure_limit: int = 1
    min_samples: int = 0
    samples_query: str | None = None
    no_data: NoDataPolicy = NoDataPolicy.HOLD
    max_holds: int = 5
    warmup: timedelta = timedelta(0)
    interval: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class Webhook:
    name: str
    type: WebhookType
    url: str
    timeout: timedelta = timedelta(seconds=10)


class NotificationEvent(str, Enum):
    """The transitions a spec.notifications entry may ask to hear about."""

    STARTED = "Started"
    STEP_STARTED = "StepStarted"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"


@dataclass(frozen=True)
class Notification:
    url: str
    events: frozenset[NotificationEvent]
    timeout: timedelta = timedelta(seconds=5)


MAX_NOTIFICATION_TIMEOUT = timedelta(seconds=30)
"""A notification holds one of the engine's read workers while it waits: keep that short."""


@dataclass(frozen=True)
class RolloutPlan:
    """Everything the state machine needs from the spec, already expanded and checked.

    `steps` always ends at weight 100: when the user's highest weight is lower, an implicit
    `setWeight 100` is appended, because promotion starts from 100% canary (the stable set
    then takes the new template while it serves no traffic).
    """

    router: RouterKind
    steps: tuple[Step, ...]
    metrics: tuple[Metric, ...] = ()
    webhooks: tuple[Webhook, ...] = ()
    interval: timedelta = timedelta(seconds=30)
    original_scale_down: OriginalScaleDown = OriginalScaleDown.NEVER
    autoscaled: bool = False  # spec.autoscalerRef: HPAs own the copies' replica counts between transitions
    notifications: tuple[Notification, ...] = ()

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)

    def has_metric(self, name: str) -> bool:
        return any(m.name == name for m in self.metrics)

    def webhooks_of(self, kind: WebhookType) -> tuple[Webhook, ...]:
        return tuple(w for w in self.webhooks if w.type == kind)

    def step_metrics(self, step: AnalysisStep) -> tuple[str, ...]:
        return step.metrics or tuple(m.name for m in self.metrics)


def validate_spec(spec: Any) -> list[FieldError]:
    """Every problem in `spec`, each naming its field; empty when the spec can run."""
    return _check(_as_dict(spec))[1]


def read_plan(spec: Any) -> RolloutPlan:
    """The plan for `spec`; raises SpecError (listing every bad field) when it cannot run."""
    model, errors = _check(_as_dict(spec))
    if errors or model is None:
        raise SpecError(errors)
    return _plan(model)


def _as_dict(spec: Any) -> dict[str, Any]:
    if hasattr(spec, "model_dump"):
        return dict(spec.model_dump(mode="json", exclude_none=True))
    return dict(spec or {})


def _check(spec: Mapping[str, Any]) -> tuple[api.ProgressiveRolloutSpec | None, list[FieldError]]:
    """The schema's verdict (via the API model) plus the checks only the core can make."""
    errors: list[FieldError] = []
    model = None
    try:
        model = api.ProgressiveRolloutSpec.model_validate(spec)
    except ValidationError as exc:
        errors += [FieldError(path, "is required" if message == "Field required" else message)
                   for path, message in field_errors(exc, "spec")]
    errors += _weights_never_decrease(spec.get("steps"))
    errors += _conditions_compile(spec.get("analysis"))
    errors += _durations_positive(spec)
    unique: dict[tuple[str, str], FieldError] = {(e.path, e.message): e for e in errors}
    return model, list(unique.values())


def _weights_never_decrease(steps: Any) -> list[FieldError]:
    """Traffic only moves forward: a lower setWeight after a higher one is refused."""
    errors: list[FieldError] = []
    highest: tuple[int, int] | None = None
    for index, step in enumerate(_list(steps)):
        weight = _mapping(step).get("setWeight")
        if not isinstance(weight, int) or isinstance(weight, bool):
            continue
        if highest is not None and weight < highest[0]:
            errors.append(FieldError(f"spec.steps[{index}].setWeight",
                                     f"{weight} is lower than {highest[0]} at spec.steps[{highest[1]}]; "
                                     "weights must not decrease"))
        elif highest is None or weight > highest[0]:
            highest = (weight, index)
    return errors


def _conditions_compile(analysis: Any) -> list[FieldError]:
    return conditions_problems(_mapping(analysis).get("metrics"), "spec.analysis.metrics")


def conditions_problems(metrics: Any, prefix: str) -> list[FieldError]:
    """Each CEL condition of `metrics` (a list of metric dicts at `prefix`) compiles and yields
    a boolean for a sample result (see cel.check)."""
    errors: list[FieldError] = []
    for index, metric in enumerate(_list(metrics)):
        for key in ("successCondition", "failureCondition"):
            expression = _mapping(metric).get(key)
            if isinstance(expression, str) and expression.strip():
                problem = cel.check(expression)
                if problem:
                    errors.append(FieldError(f"{prefix}[{index}].{key}", problem))
    return errors


def _durations_positive(spec: Mapping[str, Any]) -> list[FieldError]:
    """Intervals and timeouts of 0 would spin the operator; the schema allows `0` elsewhere."""
    analysis = _mapping(spec.get("analysis"))
    candidates: list[tuple[str, Any]] = [("spec.analysis.interval", analysis.get("interval")),
                                         ("spec.stepInterval", spec.get("stepInterval"))]
    candidates += [(f"spec.analysis.metrics[{i}].interval", _mapping(m).get("interval"))
                   for i, m in enumerate(_list(analysis.get("metrics")))]
    candidates += [(f"spec.webhooks[{i}].timeout", _mapping(h).get("timeout"))
                   for i, h in enumerate(_list(spec.get("webhooks")))]
    notifications = [(f"spec.notifications[{i}].timeout", _mapping(n).get("timeout"))
                     for i, n in enumerate(_list(spec.get("notifications")))]
    errors = []
    for path, value in candidates + notifications:
        if value is None:
            continue
        try:
            duration = parse_duration(value, path)
        except ValueError:
            continue  # the schema reports the syntax
        if duration <= timedelta(0):
            errors.append(FieldError(path, "must be longer than 0s"))
        elif path.startswith("spec.notifications[") and duration > MAX_NOTIFICATION_TIMEOUT:
            errors.append(FieldError(path, f"must be at most {MAX_NOTIFICATION_TIMEOUT.total_seconds():g}s"))
    return errors


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _plan(model: api.ProgressiveRolloutSpec) -> RolloutPlan:
    router = RouterKind.GATEWAY_API if model.trafficRouting.gatewayAPI is not None else RouterKind.REPLICA_RATIO
    interval = parse_duration(model.analysis.interval) if model.analysis else timedelta(seconds=30)
    metrics = tuple(_metric(m, interval) for m in (model.analysis.metrics if model.analysis else []))
    webhooks = tuple(Webhook(h.name, WebhookType(h.type), h.url, parse_duration(h.timeout)) for h in model.webhooks)
    steps = tuple(_step(s) for s in model.expanded_steps())
    notifications = tuple(Notification(n.url, frozenset(NotificationEvent(e) for e in n.events), parse_duration(n.timeout))
                          for n in model.notifications)
    return RolloutPlan(router, _end_at_full_weight(steps), metrics, webhooks, interval,
                       OriginalScaleDown(model.originalScaleDown), model.autoscalerRef is not None, notifications)


def _metric(m: api.Metric, default_interval: timedelta) -> Metric:
    return Metric(
        name=m.name, query=m.query, success_condition=m.successCondition, failure_condition=m.failureCondition,
        failure_limit=m.failureLimit, min_samples=m.minSamples, samples_query=m.samplesQuery,
        no_data=NoDataPolicy(m.noData), max_holds=max(m.maxHolds, 1), warmup=parse_duration(m.warmup),
        interval=parse_duration(m.interval) if m.interval else default_interval,
    )


def _step(step: api.Step) -> Step:
    if step.setWeight is not None:
        return SetWeightStep(step.setWeight)
    if step.pause is not None:
        return PauseStep(parse_duration(step.pause.duration) if step.pause.duration is not None else None)
    assert step.analysis is not None  # noqa: S101 - exactly one of the three, by the model's field group
    return AnalysisStep(tuple(step.analysis.metrics or ()))


def _end_at_full_weight(steps: tuple[Step, ...]) -> tuple[Step, ...]:
    """Append `setWeight 100` unless the steps already reach it (promotion starts at 100%)."""
    if any(isinstance(s, SetWeightStep) and s.weight == 100 for s in steps):
        return steps
    return steps + (SetWeightStep(100),)


def canary_replicas(router: RouterKind, full: int, weight: int) -> int:
    """Canary pods for `weight`% of `full`.

    Gateway API: enough pods for the share, at least one (the canary must exist for
    pre-rollout checks even at 0%). Replica ratio: the pod count *is* the traffic share, so
    0% means no canary pod at all.
    """
    if full <= 0:
        return 0
    share = full * weight / 100
    if router is RouterKind.GATEWAY_API:
        return max(1, math.ceil(share))
    if weight <= 0:
        return 0
    return min(full, max(1, round(share)))


def stable_replicas(router: RouterKind, full: int, weight: int) -> int:
    """Stable pods while the canary has `weight`%: always full with Gateway API (instant,
    safe rollback); the complement of the canary with replica ratio (at least one pod while
    stable still takes traffic)."""
    if router is RouterKind.GATEWAY_API or full <= 0:
        return max(full, 0)
    if weight >= 100:
        return 0
    return max(1, full - canary_replicas(router, full, weight))
