"""Run `decide` in a loop over synthetic time against a scripted, in-memory cluster.

Used by the unit tests to prove timing properties ("a canary with 30% errors is rolled back
within one analysis interval of the breach") and by benchmarks to compare settings without
a cluster. It plays the handler's part exactly as the contract says: write status, execute
the actions in order, answer Measure and RunWebhook at once and call
`decide` again at the same moment, otherwise sleep for RequeueAfter (capped by `max_sleep`,
standing in for watch events).

Pure: the clock is a number this module advances; nothing sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, TypeVar

from paved.rollout.actions import (
    Action, EnsureCanary, Measure, PromoteStableTemplate, RunWebhook, ScaleCanary, ScaleOriginal, ScaleStable,
    RemoveAutoscalers, SetAutoscaler, SetWeights,
)
from paved.rollout.machine import Decision, decide
from paved.rollout.observation import (
    AutoscalerState, Command, CommandKind, MetricMeasurement, Observation, TargetState, WebhookResult, Weights, WorkloadState,
)

_A = TypeVar("_A")

EPOCH = datetime(2030, 1, 1, tzinfo=timezone.utc)
"""t = 0 of every simulation: the moment the target Deployment gets the new revision."""


def example_spec(**overrides: Any) -> dict[str, Any]:
    """The seed canary: 5 -> 20 -> 50 -> 100% with a minute between steps, judged by
    `success-rate >= 0.95` (severe below 0.8) every 30 s with at least 50 samples.
    Keyword arguments replace top-level spec fields."""
    spec: dict[str, Any] = {
        "targetRef": {"name": "checkout"},
        "service": {"name": "checkout", "port": 80},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "checkout"}},
        "steps": [
            {"setWeight": 5}, {"pause": {"duration": "1m"}},
            {"setWeight": 20}, {"pause": {"duration": "1m"}},
            {"setWeight": 50}, {"pause": {"duration": "1m"}},
            {"setWeight": 100}, {"pause": {"duration": "1m"}},
        ],
        "analysis": {
            "prometheus": {"address": "http://prometheus.monitoring:9090"},
            "interval": "30s",
            "metrics": [{
                "name": "success-rate",
                "query": 'sum(rate(http_requests_total{version="canary",code!~"5.."}[1m]))'
                         ' / sum(rate(http_requests_total{version="canary"}[1m]))',
                "successCondition": "result >= 0.95",
                "failureCondition": "result < 0.8",
                "failureLimit": 2,
                "minSamples": 50,
                "samplesQuery": 'sum(increase(http_requests_total{version="canary"}[1m]))',
            }],
        },
    }
    spec.update(overrides)
    return spec


@dataclass(frozen=True)
class Sample:
    """What one metric query returns: `value` None is an empty result."""

    value: float | None
    samples: int | None = None
    error: str | None = None


MetricSource = Callable[[float, int], Sample]
"""(seconds since t = 0, canary weight in %) -> the metric's value at that moment."""


def always_ok(call: RunWebhook, t: float) -> WebhookResult:
    return WebhookResult(True, "HTTP 200")


@dataclass
class Scenario:
    """A scripted world. Times are seconds relative to t = 0 (the new revision appears)."""

    metrics: Mapping[str, MetricSource] = field(default_factory=dict)
    replicas: int = 4
    stable_revision: str = "v1"
    new_revision: str = "v2"
    ready_delay: float = 1.0
    stable_ready_delay: float | None = None
    webhooks: Callable[[RunWebhook, float], WebhookResult] = always_ok
    commands: Mapping[float, CommandKind] = field(default_factory=dict)
    revisions: Mapping[float, str] = field(default_factory=dict)  # further target changes
    restarts: tuple[float, ...] = ()  # the operator dies after writing status, half-way through the actions
    until: float = 3600.0
    max_sleep: float = 5.0
    stop_when_idle: bool = True
    autoscaler: AutoscalerState | None = None  # the user's HPA (for specs with an autoscalerRef)


@dataclass(frozen=True)
class TickRecord:
    """One call of `decide` and the world around it."""

    t: float
    status_before: dict[str, Any]
    observation: Observation
    decision: Decision
    route: Weights  # after the decision's actions were applied
    pods: int = 0  # pods the user's Deployment and both copies ask for, after the actions
    autoscalers: Mapping[str, AutoscalerState] = field(default_factory=dict)  # the copies' HPAs, after the actions

    @property
    def phase(self) -> str | None:
        return self.decision.status.get("phase")

    @property
    def stage(self) -> str | None:
        return (self.decision.status.get("progress") or {}).get("stage")

    @property
    def message(self) -> str:
        return self.decision.status.get("message") or ""


@dataclass
class SimulationResult:
    ticks: list[TickRecord]

    @property
    def status(self) -> dict[str, Any]:
        return self.ticks[-1].decision.status if self.ticks else {}

    @property
    def phase(self) -> str | None:
        return self.status.get("phase")

    def first(self, predicate: Callable[[TickRecord], bool], after: float = float("-inf")) -> TickRecord | None:
        return next((tick for tick in self.ticks if tick.t >= after and predicate(tick)), None)

    def actions(self, kind: type[_A]) -> list[tuple[float, _A]]:
        """(time, action) for every action of `kind` the machine asked for, in order."""
        return [(tick.t, a) for tick in self.ticks for a in tick.decision.actions if isinstance(a, kind)]

    def all_actions(self) -> list[tuple[float, Action]]:
        return [(tick.t, a) for tick in self.ticks for a in tick.decision.actions]

    def phases(self) -> list[str]:
        seen: list[str] = []
        for tick in self.ticks:
            if tick.phase and (not seen or seen[-1] != tick.phase):
                seen.append(tick.phase)
        return seen


@dataclass
class _Workload:
    """A Deployment as kwok would run it: scale-ups and template changes get ready after a delay."""

    delay: float
    revision: str | None = None
    desired: int = 0
    ready: int = 0
    ready_at: float = 0.0

    def set(self, t: float, replicas: int, revision: str | None = None) -> None:
        if revision is not None and revision != self.revision:
            self.revision = revision
            self.ready = 0
        self.ready = min(self.ready, replicas)
        self.desired = replicas
        self.ready_at = t + self.delay

    def autoscale(self, t: float, hpa: AutoscalerState | None) -> None:
        """What its HPA does at rest (no load): keep a running copy within the HPA's bounds."""
        if hpa is not None and self.desired > 0 and not hpa.min_replicas <= self.desired <= hpa.max_replicas:
            self.set(t, min(max(self.desired, hpa.min_replicas), hpa.max_replicas))

    def observe(self, t: float) -> WorkloadState:
        if t >= self.ready_at:
            self.ready = self.desired
        return WorkloadState(self.revision, self.desired, self.ready)


@dataclass
class _World:
    scenario: Scenario
    stable: _Workload
    canary: _Workload
    original: int  # the user's Deployment's spec.replicas
    remembered: int | None = None  # its paved.dev/original-replicas annotation while Paved owns the scale
    route: Weights = Weights(100, 0)
    measurements: dict[str, MetricMeasurement] = field(default_factory=dict)
    webhook_results: dict[str, WebhookResult] = field(default_factory=dict)
    autoscalers: dict[str, AutoscalerState] = field(default_factory=dict)  # the copies' HPAs, by role

    def target_revision(self, t: float) -> str:
        revision = self.scenario.stable_revision if t < 0 else self.scenario.new_revision
        for at, changed in sorted(self.scenario.revisions.items()):
            if t >= at:
                revision = changed
        return revision

    def command(self, t: float) -> Command | None:
        """The latest command at or before t; it lingers like an annotation would."""
        issued = [(at, kind) for at, kind in sorted(self.scenario.commands.items()) if at <= t]
        if not issued:
            return None
        at, kind = issued[-1]
        return Command(kind, f"{kind.value}@{at:g}")

    def observe(self, t: float) -> Observation:
        # The copies' HPAs act between two reads (the adversarial timing: at once).
        self.stable.autoscale(t, self.autoscalers.get("stable"))
        self.canary.autoscale(t, self.autoscalers.get("canary"))
        return Observation(
            target=TargetState(self.target_revision(t), self.original, self.remembered),
            stable=self.stable.observe(t), canary=self.canary.observe(t), weights=self.route,
            measurements=dict(self.measurements), webhook_results=dict(self.webhook_results),
            command=self.command(t), observed_at=EPOCH + timedelta(seconds=t), autoscaler=self.scenario.autoscaler,
            copy_autoscalers=dict(self.autoscalers),
        )

    def pods(self) -> int:
        return self.original + self.stable.desired + self.canary.desired

    def apply(self, t: float, action: Action) -> bool:
        """Execute one action; True when it produced an answer the machine should see now."""
        if isinstance(action, SetWeights):
            self.route = Weights(action.stable, action.canary)
        elif isinstance(action, EnsureCanary):
            self.canary.set(t, action.replicas, action.revision)
        elif isinstance(action, ScaleCanary):
            self.canary.set(t, action.replicas)
        elif isinstance(action, ScaleStable):
            self.stable.set(t, action.replicas)
        elif isinstance(action, PromoteStableTemplate):
            self.stable.set(t, action.replicas, action.revision)
        elif isinstance(action, ScaleOriginal):
            self.original, self.remembered = action.replicas, action.remember
        elif isinstance(action, SetAutoscaler):
            self.autoscalers[action.role] = AutoscalerState(action.min_replicas, action.max_replicas, action.revision)
        elif isinstance(action, RemoveAutoscalers):
            self.autoscalers.clear()
        elif isinstance(action, Measure):
            for query in action.metrics:
                source = self.scenario.metrics.get(query.name)
                sample = source(t, self.route.canary) if source else Sample(None)
                self.measurements[query.name] = MetricMeasurement(action.request_id, sample.value, sample.samples,
                                                                  sample.error)
            return True
        elif isinstance(action, RunWebhook):
            self.webhook_results[action.key] = self.scenario.webhooks(action, t)
            return True
        return False


def simulate(spec: Mapping[str, Any], scenario: Scenario, start: float = -60.0) -> SimulationResult:
    """Bootstrap at `start` with the stable revision, switch the target at t = 0, run to the end.

    Stops at `scenario.until`, or (with `stop_when_idle`) once the rollout of the last
    scripted revision has finished and no command or revision change is still to come.
    """
    stable_delay = scenario.stable_ready_delay if scenario.stable_ready_delay is not None else scenario.ready_delay
    world = _World(scenario, _Workload(stable_delay), _Workload(scenario.ready_delay), scenario.replicas)
    status: dict[str, Any] = {}
    ticks: list[TickRecord] = []
    restarts = sorted(scenario.restarts)
    scripted = sorted({0.0, *scenario.commands.keys(), *scenario.revisions.keys(), *scenario.restarts})
    last_scripted = scripted[-1]
    t = start
    answers_at_same_moment = 0
    while t <= scenario.until:
        observation = world.observe(t)
        decision = decide(spec, status, observation, EPOCH + timedelta(seconds=t))
        status_before, status = status, decision.status  # written before acting
        actions = list(decision.actions)
        crashed = bool(restarts and restarts[0] <= t)
        if crashed:  # dies half-way through the actions; in-memory answers are lost
            restarts.pop(0)
            actions = actions[: len(actions) // 2]
        answered = False
        for action in actions:
            answered = world.apply(t, action) or answered
        if crashed:
            world.measurements.clear()
            world.webhook_results.clear()
            answered = False
        ticks.append(TickRecord(t, status_before, observation, decision, world.route, world.pods(),
                                dict(world.autoscalers)))
        if answered and answers_at_same_moment < 5:
            answers_at_same_moment += 1
            continue
        answers_at_same_moment = 0
        stage = (status.get("progress") or {}).get("stage")
        # Idle after a crash is not the end: the actions it did not get to are the next tick's work.
        if scenario.stop_when_idle and stage == "Idle" and t > last_scripted and not crashed:
            break
        sleep = decision.requeue_after if decision.requeue_after is not None else scenario.max_sleep
        wake = t + min(max(sleep, 0.1), scenario.max_sleep)
        wake = min([wake, *(at for at in scripted if at > t)])  # never sleep through a scripted change
        t = round(wake, 3)
    return SimulationResult(ticks)
