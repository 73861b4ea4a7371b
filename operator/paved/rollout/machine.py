"""The canary state machine: `decide(spec, status, observation, now) -> Decision`.

A pure function. Given the spec, the last status, what the handler measured this tick and
the time, it returns the actions to execute (in order) and the new status. It never reads a
clock or the cluster, so every rule is a unit test and restarts cannot change its answers:
all progress is in status, and a repeated call with the same inputs changes nothing and asks
for nothing twice (property-tested).

Shape of a rollout (stages in `status.progress.stage`):

    Bootstrap (first sight: stable := target template, 100% stable)       -> Succeeded
    new target revision -> StartCanary -> PreRollout webhooks              (Initializing)
      -> for each step: StepEnter (scale canary, wait ready, set weight) -> StepRun
                                                                  (Progressing / Paused)
      -> ConfirmPromotion webhooks (at 100% canary)
      -> Promote: stable := new template, wait ready at full scale, 100% stable,
         canary to 0                                                      (Promoting)
      -> PostRollout webhooks                                             (Succeeded)
    any failure -> Withdraw: stable to full scale, wait ready, only then 100% stable,
      then canary to 0 -> RollbackNotify webhooks                 (RolledBack / Failed)

A new target revision during a rollout withdraws the current canary the same safe way and
restarts from step 0 with the new revision. A revision change during Promote waits for the
promotion to finish (the stable set already has the previous canary's template) and then
starts a fresh rollout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping, TypeVar

from paved.api.rollout import ANALYSIS_HISTORY_LIMIT
from paved.rollout.actions import (
    Action, EnsureCanary, Event, Measure, MetricQuery, PromoteStableTemplate, RequeueAfter, RunWebhook,
    ScaleCanary, ScaleStable, SetWeights,
)
from paved.rollout.analysis import VerdictKind, judge
from paved.rollout.observation import (
    ABSENT, CommandKind, MetricMeasurement, Observation, TargetState, WorkloadState,
)
from paved.rollout.plan import (
    AnalysisStep, FieldError, PauseStep, RolloutPlan, RouterKind, SetWeightStep, SpecError, Step, WebhookType,
    canary_replicas, read_plan, stable_replicas,
)
from paved.rollout.state import (
    CallState, MetricChecks, PendingMeasure, Phase, Progress, RolloutState, Stage, WebhookCall, Withdrawal,
    as_utc, format_time,
)

_FAILED_LABEL = "Failed"  # Verdict.label of a missed success condition (or a breach)

HISTORY_LIMIT = ANALYSIS_HISTORY_LIMIT
"""analysisHistory keeps the last N measurements (all metrics together), as the API says."""

POLL = timedelta(seconds=2)
"""Re-check this soon while waiting for the cluster (readiness, a route read-back)."""

RESULT_POLL = timedelta(seconds=1)
"""Re-check this soon while a measurement is outstanding (handlers usually answer at once)."""

WEBHOOK_GRACE = timedelta(seconds=5)
"""A webhook call with no reported result after its timeout plus this is sent again (same key)."""

MIN_MEASURE_WAIT = timedelta(seconds=10)
"""An unanswered Measure is dropped and re-asked after max(interval, this)."""

_ROLLOUT_STAGES = {Stage.START_CANARY, Stage.PRE_ROLLOUT, Stage.STEP_ENTER, Stage.STEP_RUN, Stage.CONFIRM}
_ANALYSING_STAGES = {Stage.STEP_ENTER, Stage.STEP_RUN, Stage.CONFIRM}


_A = TypeVar("_A")


@dataclass(frozen=True)
class Decision:
    """The status to write and what to do now.

    The handler writes `status` first, then executes `actions` in order, stopping at the
    first failure (and retrying later). Status is the intent: if the operator dies or an
    action fails after the write, the next call sees the cluster lagging behind status and
    re-sends exactly what is missing, so traffic never steps backwards and nothing that
    succeeded is repeated (webhooks are re-sent only when their result never arrived, with
    the same key).

    `errors` is non-empty when the spec cannot run: the handler sets a condition naming the
    fields; the machine then moves no traffic and leaves its progress untouched.
    """

    actions: tuple[Action, ...]
    status: dict[str, Any]
    errors: tuple[FieldError, ...] = ()

    @property
    def requeue_after(self) -> float | None:
        return next((a.seconds for a in self.actions if isinstance(a, RequeueAfter)), None)

    def of_type(self, kind: type[_A]) -> list[_A]:
        return [a for a in self.actions if isinstance(a, kind)]


def decide(spec: Any, status: Any, observation: Observation, now: datetime) -> Decision:
    """The next actions and status for one ProgressiveRollout; see the module docstring.

    `spec` and `status` are the object's dicts (or the API models, which are dumped)."""
    now = as_utc(now)
    if hasattr(status, "model_dump"):
        status = status.model_dump(mode="json", exclude_none=True)
    try:
        plan = read_plan(spec)
    except SpecError as exc:
        return _refuse(status, exc.errors)
    tick = _Tick(plan, RolloutState.from_status(status), observation, now)
    tick.run()
    return Decision(tuple(tick.actions), tick.state.to_status(status, (m.name for m in plan.metrics)))


def _refuse(status: Mapping[str, Any] | None, errors: list[FieldError]) -> Decision:
    """Invalid spec: keep all progress, explain, move nothing (an Event only on first sight)."""
    new_status = dict(status or {})
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    message = f"spec is invalid, no traffic moved: {errors[0]}{more}"
    actions: tuple[Action, ...] = ()
    if new_status.get("message") != message:
        actions = (Event("InvalidSpec", message, warning=True),)
    new_status["message"] = message
    return Decision(actions, new_status, tuple(errors))


@dataclass
class _Gate:
    """The calls of one webhook gate: `settled` once each has answered (or was dropped)."""

    settled: bool
    failed: list[WebhookCall]

    @property
    def passed(self) -> bool:
        return self.settled and not self.failed


@dataclass
class _Tick:
    """One call of `decide`: mutable scratch state, discarded after the call."""

    plan: RolloutPlan
    state: RolloutState
    obs: Observation
    now: datetime
    actions: list[Action] = field(default_factory=list)
    wakes: list[datetime] = field(default_factory=list)
    transitions: int = 0

    # -- convenience ---------------------------------------------------------------------

    @property
    def progress(self) -> Progress:
        return self.state.progress

    @property
    def stage(self) -> Stage:
        return self.state.progress.stage

    @property
    def target(self) -> TargetState:
        assert self.obs.target is not None  # run() stops early without a target
        return self.obs.target

    @property
    def full(self) -> int:
        return max(self.target.replicas, 0)

    @property
    def rollout_revision(self) -> str:
        """The revision being rolled out (set whenever a canary stage runs)."""
        assert self.state.canary_revision is not None
        return self.state.canary_revision

    @property
    def stable_revision(self) -> str:
        assert self.state.stable_revision is not None
        return self.state.stable_revision

    @property
    def stable(self) -> WorkloadState:
        return self.obs.stable or ABSENT

    @property
    def canary(self) -> WorkloadState:
        return self.obs.canary or ABSENT

    @property
    def observed_at(self) -> datetime:
        return as_utc(self.obs.observed_at) if self.obs.observed_at else self.now

    def emit(self, *actions: Action) -> None:
        self.actions.extend(actions)

    def wake_at(self, moment: datetime) -> None:
        self.wakes.append(moment)

    def poll(self, interval: timedelta = POLL) -> None:
        self.wakes.append(self.now + interval)

    def current_step(self) -> Step | None:
        index = self.state.current_step_index
        return self.plan.steps[index] if 0 <= index < len(self.plan.steps) else None

    def where(self) -> str:
        """'step 3/5 (20%)' — the position used in messages."""
        return f"step {self.state.current_step_index + 1}/{len(self.plan.steps)} ({self.state.canary_weight}%)"

    def goto(self, stage: Stage) -> None:
        self.transitions += 1
        self.progress.stage = stage
        self.progress.stage_entered_at = self.now
        enter = getattr(self, f"_enter_{stage.name.lower()}", None)
        if enter is not None:
            enter()

    # -- the tick ------------------------------------------------------------------------

    def run(self) -> None:
        if self.obs.target is None:
            self.state.message = "target Deployment not found; nothing is changed until it exists"
            return
        self._follow_target_revision()
        self._apply_command()
        self._keep_stable_at_target_scale()
        self._repair_weight_drift()
        self._repair_workload_drift()
        self._consume_measurements()
        self._advance()
        # A revision that arrived during promotion starts now, in this decision: the next one,
        # on the same observation, would start it anyway (decide must be idempotent).
        if self.stage in (Stage.IDLE, Stage.POST_ROLLOUT):
            self._follow_target_revision()
            self._advance()
        self._schedule_measurements()
        self._refresh_phase()
        self._requeue()

    def _advance(self) -> None:
        """Run stages until one has to wait for the world (bounded: every stage moves forward)."""
        for _ in range(len(Stage) * 2 + len(self.plan.steps) * 2):
            before = self.transitions
            getattr(self, f"_run_{self.stage.name.lower()}")()
            if self.transitions == before:
                break

    # -- target revision -----------------------------------------------------------------

    def _follow_target_revision(self) -> None:
        revision = self.target.revision
        state = self.state
        if state.stable_revision is None or self.stage is Stage.BOOTSTRAP:
            if state.stable_revision != revision or self.stage is not Stage.BOOTSTRAP:
                state.stable_revision = revision
                self.goto(Stage.BOOTSTRAP)
            return
        if self.stage is Stage.PROMOTE:
            return  # the stable set already has the canary's template: finish first
        if self.stage is Stage.WITHDRAW and self.progress.withdrawal and self.progress.withdrawal.outcome is None:
            self._retarget_restart(revision)
            return
        if revision == state.stable_revision:
            if self.stage in _ROLLOUT_STAGES:
                self.withdraw(f"the target went back to the stable revision {revision}", Phase.ROLLED_BACK)
            return
        if revision == state.canary_revision:
            return  # this rollout, or a finished one that stays RolledBack/Failed until `retry`
        if self.stage in _ROLLOUT_STAGES:
            self.withdraw(f"revision {revision} replaced {state.canary_revision}", None, next_revision=revision)
        elif self.stage is not Stage.WITHDRAW:
            self.start_rollout(revision)

    def _retarget_restart(self, revision: str) -> None:
        withdrawal = self.progress.withdrawal
        assert withdrawal is not None
        if revision == self.state.stable_revision:
            withdrawal.outcome = Phase.ROLLED_BACK
            withdrawal.reason = f"the target went back to the stable revision {revision}"
            withdrawal.next_revision = None
        else:
            withdrawal.next_revision = revision

    def start_rollout(self, revision: str) -> None:
        """Begin (or retry) a rollout of `revision` from step 0 with fresh counters."""
        state = self.state
        state.canary_revision = revision
        state.current_step_index = 0
        state.step_started_at = None
        state.pause_until = None
        state.checks = {m.name: MetricChecks() for m in self.plan.metrics}
        state.history = []
        old = self.progress
        state.progress = Progress(  # keeps only what describes the cluster and the last command
            run=old.run + 1, weights_set_at=old.weights_set_at, workloads_set_at=old.workloads_set_at,
            canary_replicas=old.canary_replicas, stable_replicas=old.stable_replicas,
            stable_template=old.stable_template, last_command=old.last_command,
        )
        self.emit(Event("RolloutStarted", f"rolling out revision {revision} (stable is {state.stable_revision})"))
        self.goto(Stage.START_CANARY)

    # -- commands ------------------------------------------------------------------------

    def _apply_command(self) -> None:
        command = self.obs.command
        if command is None or command.id == self.progress.last_command:
            return
        self.progress.last_command = command.id
        handler = {CommandKind.PROMOTE: self._promote_command, CommandKind.ABORT: self._abort_command,
                   CommandKind.RETRY: self._retry_command}[command.kind]
        ignored = handler()
        if ignored:
            self.emit(Event("CommandIgnored", f"{command.kind.value} ignored: {ignored}", warning=True))

    def _promote_command(self) -> str | None:
        if self.stage not in (Stage.STEP_ENTER, Stage.STEP_RUN, Stage.CONFIRM):
            return f"nothing to promote while {self.stage.value}"
        self.progress.skip_step = True
        self.progress.hold_paused = False
        self.progress.paused_reason = None
        for checks in self.state.checks.values():
            checks.holds = 0
        self.emit(Event("Resumed", f"promote: {self.where()} completed by the user"))
        return None

    def _abort_command(self) -> str | None:
        if self.stage not in _ROLLOUT_STAGES:
            return f"no rollout to abort while {self.stage.value}"
        self.withdraw("aborted by the user", Phase.ROLLED_BACK)
        return None

    def _retry_command(self) -> str | None:
        finished = self.state.phase in (Phase.ROLLED_BACK, Phase.FAILED)
        revision = self.target.revision
        if not finished or self.stage not in (Stage.IDLE, Stage.ROLLBACK_NOTIFY) or revision != self.state.canary_revision:
            return "retry restarts a rolled-back or failed revision that is still the target"
        self.start_rollout(revision)
        return None

    # -- drift ---------------------------------------------------------------------------

    def _keep_stable_at_target_scale(self) -> None:
        """While idle, the stable workload follows the target's replica count."""
        if self.stage is Stage.IDLE:
            self._scale_stable(self.full)

    def _repair_workload_drift(self) -> None:
        """The workloads must be what status says was asked of them.

        Status is written before the actions run, so after a crash (or a failed action) the
        world may lag behind it; this re-sends what is missing. Only reads taken after our last
        workload change count, so a stale read never re-sends.
        """
        set_at = self.progress.workloads_set_at
        if set_at is None or self.observed_at <= set_at:
            return
        progress, stable, canary = self.progress, self.stable, self.canary
        if progress.stable_template and stable.revision != progress.stable_template:
            replicas = progress.stable_replicas if progress.stable_replicas is not None else stable.desired
            self._promote_stable_template(progress.stable_template, replicas)
        elif progress.stable_replicas is not None and stable.desired != progress.stable_replicas:
            self._scale_stable(progress.stable_replicas, force=True)
        if progress.canary_replicas == 0 and canary.desired != 0:
            self._scale_canary_to_zero(force=True)
        elif progress.canary_replicas and self.state.canary_revision and (
                canary.desired != progress.canary_replicas or canary.revision != self.state.canary_revision):
            self._ensure_canary(progress.canary_replicas, force=True)

    def _repair_weight_drift(self) -> None:
        """The route must say what status says; restore it if someone or something changed it.

        Only a read taken after our last change counts, so a stale read never re-sends.
        """
        weights = self.obs.weights
        set_at = self.progress.weights_set_at
        if weights is None or set_at is None or self.observed_at <= set_at:
            return
        expected = (100 - self.state.canary_weight, self.state.canary_weight)
        if (weights.stable, weights.canary) == expected:
            return
        self.emit(Event("TrafficDrift", f"route had {weights.stable}/{weights.canary} (stable/canary), "
                                        f"restoring {expected[0]}/{expected[1]}", warning=True))
        self.set_weights(expected[1])

    def set_weights(self, canary: int) -> None:
        self.state.canary_weight = canary
        self.progress.weights_set_at = self.now
        self.emit(SetWeights(100 - canary, canary))

    # -- stages: bootstrap ---------------------------------------------------------------

    def _enter_bootstrap(self) -> None:
        self._promote_stable_template(self.stable_revision, self.full)

    def _run_bootstrap(self) -> None:
        revision = self.stable_revision
        if self._waiting_for("stable", self.full, revision, "initializing: ", f" at revision {revision}"):
            return
        self.set_weights(0)
        self.state.phase = Phase.SUCCEEDED
        self.state.message = f"stable at revision {revision}; a new target revision starts a rollout"
        self.emit(Event("Initialized", self.state.message))
        self.goto(Stage.IDLE)

    def _run_idle(self) -> None:
        return

    # -- stages: start -------------------------------------------------------------------

    def _enter_start_canary(self) -> None:
        self._ensure_canary(canary_replicas(self.plan.router, self.full, 0), force=True)

    def _run_start_canary(self) -> None:
        revision = self.rollout_revision
        if self._waiting_for("canary", self.progress.canary_replicas or 0, revision, "initializing: ",
                             f" at revision {revision}"):
            return
        self.goto(Stage.PRE_ROLLOUT)

    def _enter_pre_rollout(self) -> None:
        self.open_gate(WebhookType.PRE_ROLLOUT, "pre")

    def _run_pre_rollout(self) -> None:
        gate = self.gate(WebhookType.PRE_ROLLOUT)
        if gate.failed:
            self.withdraw(_webhook_failure(gate.failed[0]), Phase.FAILED)
        elif gate.passed:
            self.state.current_step_index = 0
            self.goto(Stage.STEP_ENTER)
        else:
            self.state.message = "initializing: waiting for pre-rollout webhooks"

    # -- stages: steps -------------------------------------------------------------------

    def _step_weight(self) -> int:
        """The step's weight; never below the current weight (weights only move forward)."""
        step = self.current_step()
        weight = step.weight if isinstance(step, SetWeightStep) else self.state.canary_weight
        return max(weight, self.state.canary_weight)

    def _enter_step_enter(self) -> None:
        self.progress.step_passed = []
        self.progress.step_measured = []
        self.progress.skip_step = False
        self._ensure_canary(canary_replicas(self.plan.router, self.full, self._step_weight()))

    def _run_step_enter(self) -> None:
        if self.current_step() is None:
            self.goto(Stage.CONFIRM)  # the spec lost steps mid-rollout: all done
            return
        weight = self._step_weight()
        if self._waiting_for("canary", self.progress.canary_replicas or 0, self.rollout_revision,
                             f"{self.where()}: ", f" before sending it {weight}%"):
            return
        if weight != self.state.canary_weight:
            if self.plan.router is RouterKind.REPLICA_RATIO:
                self._scale_stable(stable_replicas(self.plan.router, self.full, weight))
            self.set_weights(weight)
        step = self.current_step()
        assert step is not None
        self.state.step_started_at = self.now
        self.state.pause_until = self.now + step.duration if isinstance(step, PauseStep) and step.duration else None
        self.emit(Event("StepStarted", f"{self.where()}: {step.describe()}"))
        self.open_gate(WebhookType.ROLLOUT, f"step{self.state.current_step_index}")
        self.goto(Stage.STEP_RUN)
        if isinstance(step, PauseStep) and step.duration is None:
            self.emit(Event("Paused", f"paused at {self.where()} until `paved rollout promote`"))

    def _run_step_run(self) -> None:
        gate = self.gate(WebhookType.ROLLOUT)
        if gate.failed:
            self.withdraw(_webhook_failure(gate.failed[0]), Phase.ROLLED_BACK)
            return
        if not self.progress.skip_step:
            waiting = self._step_waiting_for(gate)
            if waiting:
                self.state.message = f"{self.where()}: {waiting}"
                return
        self._complete_step()

    def _step_waiting_for(self, gate: _Gate) -> str | None:
        """Why the current step cannot end yet, or None when it is done."""
        step = self.current_step()
        if self.progress.hold_paused:
            return self.progress.paused_reason or "paused"
        if not gate.passed:
            return "waiting for rollout webhooks"
        blocking = self._analysis_blocking()
        if blocking:
            return blocking
        if isinstance(step, PauseStep):
            if step.duration is None:
                return "paused until `paved rollout promote`"
            if self.state.pause_until and self.now < self.state.pause_until:
                self.wake_at(self.state.pause_until)
                return f"pausing until {format_time(self.state.pause_until)}"
        if isinstance(step, AnalysisStep):
            missing = [n for n in self.plan.step_metrics(step) if n not in self.progress.step_passed]
            if missing:
                return f"analysing {', '.join(missing)}"
        return None

    def _analysis_blocking(self) -> str | None:
        """A step never ends on an unanswered or inconclusive measurement (it is extended)."""
        if self.progress.pending_measure is not None or self._due_metrics():
            return "waiting for analysis results"
        held = [name for name, c in self.state.checks.items() if c.holds > 0 and self.plan.has_metric(name)]
        if held:
            return "extended, inconclusive: " + "; ".join(
                f"{name} {self.progress.last_reason.get(name) or ''} (hold {self.state.checks[name].holds} of "
                f"{self.plan.metric(name).max_holds})" for name in held)
        # A failure below failureLimit does not roll back yet, but it must not promote either
        # (Flagger's rule): the step waits until the metric's latest verdict passes again.
        failing = [name for name, label in self._latest_verdicts().items() if label == _FAILED_LABEL]
        if failing:
            return "extended, failing: " + "; ".join(
                f"{name} {self.progress.last_reason.get(name) or ''} (failure {self.state.checks[name].failures} of "
                f"{self.plan.metric(name).failure_limit})" for name in failing if name in self.state.checks)
        return None

    def _latest_verdicts(self) -> dict[str, str]:
        """Each planned metric's most recent verdict label, from the (status-held) history."""
        latest: dict[str, str] = {}
        for entry in self.state.history:
            name = entry.get("metric")
            if isinstance(name, str) and self.plan.has_metric(name):
                latest[name] = str(entry.get("verdict"))
        return latest

    def _complete_step(self) -> None:
        if self.state.current_step_index + 1 < len(self.plan.steps):
            self.state.current_step_index += 1
            self.goto(Stage.STEP_ENTER)
        else:
            self.goto(Stage.CONFIRM)

    # -- stages: promotion ---------------------------------------------------------------

    def _enter_confirm(self) -> None:
        self.progress.skip_step = False
        self.progress.confirm_attempt += 1
        self.progress.retry_gate_at = None
        self.open_gate(WebhookType.CONFIRM_PROMOTION, f"confirm{self.progress.confirm_attempt}")

    def _run_confirm(self) -> None:
        if not self.progress.skip_step:
            waiting = self._analysis_blocking() or (self.progress.paused_reason if self.progress.hold_paused else None)
            if waiting:
                self.state.message = f"all steps done, before promotion: {waiting}"
                return
            gate = self.gate(WebhookType.CONFIRM_PROMOTION)
            if gate.failed:
                self._retry_confirmation(gate.failed[0])
                return
            if not gate.passed:
                self.state.message = "all steps done: waiting for confirm-promotion webhooks"
                return
        self.goto(Stage.PROMOTE)

    def _retry_confirmation(self, refusal: WebhookCall) -> None:
        """A refused confirm-promotion is a gate, not a verdict: ask again every interval
        while background analysis keeps guarding the canary at 100%."""
        if self.progress.retry_gate_at is None:
            self.progress.retry_gate_at = self.now + self.plan.interval
            self.emit(Event("PromotionNotConfirmed", f"{_webhook_failure(refusal)}; asking again in "
                                                     f"{self.plan.interval.total_seconds():g}s", warning=True))
        if self.now >= self.progress.retry_gate_at:
            self.goto(Stage.CONFIRM)
            return
        self.wake_at(self.progress.retry_gate_at)
        self.state.message = f"all steps done: {_webhook_failure(refusal)}; asking again at {format_time(self.progress.retry_gate_at)}"

    def _enter_promote(self) -> None:
        revision = self.rollout_revision
        self.progress.pending_measure = None
        self.emit(Event("Promoting", f"promoting revision {revision}: the stable workload takes its template"))
        self._promote_stable_template(revision, self.full)

    def _run_promote(self) -> None:
        revision = self.rollout_revision
        if self._waiting_for("stable", self.full, revision, "promoting: ", f" at revision {revision}"):
            return
        self.state.stable_revision = revision
        self.set_weights(0)
        self._scale_canary_to_zero()
        self.goto(Stage.POST_ROLLOUT)

    def _enter_post_rollout(self) -> None:
        revision = self.state.stable_revision
        self.state.canary_revision = None
        self.state.phase = Phase.SUCCEEDED
        self.state.message = f"promoted revision {revision}: 100% on stable at full scale"
        self.emit(Event("Promoted", self.state.message))
        self.open_gate(WebhookType.POST_ROLLOUT, "post")

    def _run_post_rollout(self) -> None:
        if self.gate(WebhookType.POST_ROLLOUT).settled:  # a failed notification changes nothing
            self.goto(Stage.IDLE)

    # -- stages: rollback ----------------------------------------------------------------

    def withdraw(self, reason: str, outcome: Phase | None, next_revision: str | None = None) -> None:
        """Take traffic off the canary safely; `outcome` None restarts with `next_revision`."""
        self.progress.withdrawal = Withdrawal(reason, outcome, self.state.current_step_index,
                                              self.state.canary_weight, next_revision)
        self.progress.pending_measure = None
        self.progress.webhooks = []
        self.progress.hold_paused = False
        self.goto(Stage.WITHDRAW)

    def _enter_withdraw(self) -> None:
        withdrawal = self.progress.withdrawal
        assert withdrawal is not None
        self._scale_stable(self.full, force=True)
        if withdrawal.outcome is None:
            self.emit(Event("RolloutRestarted", f"{withdrawal.reason}: taking traffic off the old canary, then "
                                                f"restarting from step 1", warning=True))
        else:
            self.emit(Event("RollingBack", self._rollback_sentence("rolling back"), warning=True))

    def _run_withdraw(self) -> None:
        withdrawal = self.progress.withdrawal
        assert withdrawal is not None
        verb = "rolling back" if withdrawal.outcome else "restarting"
        if self._waiting_for("stable", self.full, self.stable_revision, f"{self._rollback_sentence(verb)}; ",
                             " before moving traffic"):
            return
        if self.state.canary_weight != 0:
            self.set_weights(0)
        if withdrawal.outcome is None:
            self.start_rollout(withdrawal.next_revision or self.target.revision)
            return
        self._scale_canary_to_zero()
        self.goto(Stage.ROLLBACK_NOTIFY)

    def _enter_rollback_notify(self) -> None:
        withdrawal = self.progress.withdrawal
        assert withdrawal is not None
        self.state.phase = withdrawal.outcome
        self.state.message = self._rollback_sentence("rolled back")
        self.emit(Event("RolledBack" if withdrawal.outcome is Phase.ROLLED_BACK else "Failed",
                        self.state.message, warning=True))
        self.open_gate(WebhookType.ROLLBACK, "rollback")

    def _run_rollback_notify(self) -> None:
        if self.gate(WebhookType.ROLLBACK).settled:
            self.goto(Stage.IDLE)

    def _rollback_sentence(self, verb: str) -> str:
        """One human sentence: 'rolled back at step 3 (20%): success-rate 0.81 < 0.95, ...'."""
        withdrawal = self.progress.withdrawal
        assert withdrawal is not None
        if withdrawal.weight == 0 and withdrawal.outcome is Phase.FAILED:
            return f"failed before any traffic moved: {withdrawal.reason}"
        if withdrawal.weight == 0 and self.state.step_started_at is None:
            return f"{verb} before any traffic moved: {withdrawal.reason}"
        return f"{verb} at step {withdrawal.step + 1} ({withdrawal.weight}%): {withdrawal.reason}"

    # -- workloads -----------------------------------------------------------------------

    # Every workload change goes through these, so status always records what was asked
    # (and when), which is what `_repair_workload_drift` compares the cluster with.

    def _ensure_canary(self, replicas: int, force: bool = False) -> None:
        if force or replicas != self.progress.canary_replicas:
            self.progress.canary_replicas = replicas
            self.progress.workloads_set_at = self.now
            self.emit(EnsureCanary(self.rollout_revision, replicas))

    def _scale_stable(self, replicas: int, force: bool = False) -> None:
        if force or replicas != self.progress.stable_replicas:
            self.progress.stable_replicas = replicas
            self.progress.workloads_set_at = self.now
            self.emit(ScaleStable(replicas))

    def _scale_canary_to_zero(self, force: bool = False) -> None:
        if force or self.progress.canary_replicas != 0:
            self.progress.canary_replicas = 0
            self.progress.workloads_set_at = self.now
            self.emit(ScaleCanary(0))

    def _promote_stable_template(self, revision: str, replicas: int) -> None:
        self.progress.stable_template = revision
        self.progress.stable_replicas = replicas
        self.progress.workloads_set_at = self.now
        self.emit(PromoteStableTemplate(revision, replicas))

    def _waiting_for(self, name: str, replicas: int, revision: str, prefix: str, suffix: str) -> bool:
        """True while the stable or canary workload is not ready at `replicas` on `revision`;
        then the message says so ('...waiting for stable 2/4 ready...') and a poll is due."""
        workload = self.stable if name == "stable" else self.canary
        if workload.is_ready(replicas, revision):
            return False
        ready = min(workload.ready, replicas) if workload.revision == revision else 0
        self.state.message = f"{prefix}waiting for {name} {ready}/{replicas} ready{suffix}"
        self.poll()
        return True

    # -- webhooks ------------------------------------------------------------------------

    def open_gate(self, kind: WebhookType, scope: str) -> None:
        """Call every webhook of `kind` now; `gate(kind)` reports when all have answered."""
        revision = self.state.canary_revision or self.state.stable_revision or ""
        calls = []
        for hook in self.plan.webhooks_of(kind):
            key = f"{revision}/{self.progress.run}/{scope}/{kind.value}/{hook.name}"
            calls.append(WebhookCall(key, kind.value, hook.name, CallState.REQUESTED, self.now))
            self.emit(self._webhook_action(key, kind, hook.name))
        self.progress.webhooks = calls

    def _webhook_action(self, key: str, kind: WebhookType, name: str) -> RunWebhook:
        hook = next(h for h in self.plan.webhooks_of(kind) if h.name == name)
        revision = self.state.canary_revision or self.state.stable_revision or ""
        return RunWebhook(kind.value, name, hook.url, hook.timeout.total_seconds(), key, revision,
                          self.state.current_step_index)

    def gate(self, kind: WebhookType) -> _Gate:
        """Fold reported results into the calls of `kind`; re-send calls that got lost."""
        failed: list[WebhookCall] = []
        waiting = False
        for call in self.progress.webhooks:
            if call.type != kind.value:
                continue
            if call.state is CallState.REQUESTED:
                self._settle_call(call, kind)
            if call.state is CallState.FAILED:
                failed.append(call)
            elif call.state is CallState.REQUESTED:
                waiting = True
        return _Gate(settled=not waiting, failed=failed)

    def _settle_call(self, call: WebhookCall, kind: WebhookType) -> None:
        result = self.obs.webhook_results.get(call.key)
        if result is not None:
            call.state = CallState.PASSED if result.ok else CallState.FAILED
            call.detail = result.detail
            if not result.ok:
                self.emit(Event("WebhookFailed", _webhook_failure(call), warning=True))
            return
        hooks = [h for h in self.plan.webhooks_of(kind) if h.name == call.name]
        if not hooks:  # the webhook left the spec while we waited: nothing to wait for
            call.state = CallState.PASSED
            call.detail = "removed from spec"
            return
        resend_at = call.at + hooks[0].timeout + WEBHOOK_GRACE
        if self.now >= resend_at:
            call.at = self.now
            self.emit(self._webhook_action(call.key, kind, call.name))
            resend_at = self.now + hooks[0].timeout + WEBHOOK_GRACE
        self.wake_at(resend_at)

    # -- analysis ------------------------------------------------------------------------

    def _consume_measurements(self) -> None:
        """Turn the answers to our last Measure into verdicts; a breach rolls back now."""
        pending = self.progress.pending_measure
        if pending is None or self.stage not in _ANALYSING_STAGES:
            return
        answers = {name: m for name in pending.metrics
                   if (m := self.obs.measurements.get(name)) is not None and m.request_id == pending.id}
        if not answers:
            return
        self.progress.pending_measure = None
        rollback: str | None = None
        for name in pending.metrics:
            if name in answers and self.plan.has_metric(name):
                self.progress.last_measured_at[name] = pending.at
                verdict_reason = self._record(name, answers[name], pending.at)
                rollback = rollback or verdict_reason
        if rollback:
            self.withdraw(rollback, Phase.ROLLED_BACK)

    def _record(self, name: str, measurement: MetricMeasurement, at: datetime) -> str | None:
        """Count one verdict; returns the rollback reason when this verdict demands one."""
        metric = self.plan.metric(name)
        verdict = judge(metric, measurement)
        checks = self.state.checks.setdefault(name, MetricChecks())
        self.state.history.append({
            "metric": name, "value": _json_number(measurement.value), "samples": measurement.samples,
            "verdict": verdict.label, "at": format_time(at),
        })
        self.progress.last_reason[name] = verdict.reason
        del self.state.history[:-HISTORY_LIMIT]
        samples = f"; {measurement.samples} samples" if measurement.samples is not None else ""
        if self.stage is Stage.STEP_RUN and name not in self.progress.step_measured:
            self.progress.step_measured.append(name)
        if verdict.kind is VerdictKind.HOLD:
            checks.holds += 1
            self._on_hold(name, verdict.reason, checks.holds, metric.max_holds)
            return None
        checks.holds = 0
        if verdict.kind is VerdictKind.PASS:
            checks.successes += 1
            step = self.current_step()
            if self.stage is Stage.STEP_RUN and isinstance(step, AnalysisStep) and name in self.plan.step_metrics(step):
                if name not in self.progress.step_passed:
                    self.progress.step_passed.append(name)
            return None
        if verdict.kind is VerdictKind.BREACH:
            return f"{name} {verdict.reason}, failure condition met{samples}"
        checks.failures += 1
        if checks.failures >= metric.failure_limit:
            return f"{name} {verdict.reason}, failure limit {metric.failure_limit} reached{samples}"
        self.emit(Event("AnalysisFailed", f"{self.where()}: {name} {verdict.reason} "
                                          f"(failure {checks.failures} of {metric.failure_limit}){samples}", warning=True))
        return None

    def _on_hold(self, name: str, reason: str, holds: int, max_holds: int) -> None:
        if self.progress.hold_paused:
            return  # already paused and said why; keep measuring (a breach still rolls back)
        self.emit(Event("AnalysisInconclusive", f"{self.where()}: {name} {reason} (hold {holds} of {max_holds})",
                        warning=True))
        if holds >= max_holds:
            self.progress.hold_paused = True
            self.progress.paused_reason = (f"paused: {name} {reason} {holds} times in a row (maxHolds {max_holds}); "
                                           f"`paved rollout promote` continues, `abort` rolls back")
            self.emit(Event("Paused", f"{self.where()}: {self.progress.paused_reason}", warning=True))

    def _schedule_measurements(self) -> None:
        """Ask for every metric that is due; remember when the next one will be."""
        if self.stage not in _ANALYSING_STAGES or not self.plan.metrics or self.state.step_started_at is None:
            return
        pending = self.progress.pending_measure
        if pending is not None:
            expires = pending.at + max(self.plan.interval, MIN_MEASURE_WAIT)
            if self.now < expires:
                self.wake_at(min(expires, self.now + RESULT_POLL))
                return
            self.emit(Event("AnalysisTimeout", f"no answer to measurement {pending.id}; asking again", warning=True))
            self.progress.pending_measure = None
        due = self._due_metrics()
        if due:
            self.progress.measure_seq += 1  # unique even for two requests at the same instant
            request_id = f"{self.state.canary_revision}/{self.progress.run}/{self.progress.measure_seq}"
            self.progress.pending_measure = PendingMeasure(request_id, self.now, due)
            self.emit(Measure(request_id, tuple(
                MetricQuery(m.name, m.query, m.samples_query) for m in self.plan.metrics if m.name in due)))
            self.wake_at(self.now + RESULT_POLL)
        later = [at for at in (self._due_at(m.name) for m in self.plan.metrics) if at > self.now]
        if later:
            self.wake_at(min(later))

    def _due_metrics(self) -> list[str]:
        """Metrics to measure now; a step never ends while one is due (its last look counts)."""
        if self.stage not in _ANALYSING_STAGES or self.state.step_started_at is None:
            return []
        return [m.name for m in self.plan.metrics if self._due_at(m.name) <= self.now]

    def _due_at(self, name: str) -> datetime:
        """When `name` should next be measured.

        Never inside the metric's warmup after the step started; then every interval. In an
        analysis step that names the metric, its first measurement of the step is due at once.
        """
        metric = self.plan.metric(name)
        assert self.state.step_started_at is not None
        earliest = self.state.step_started_at + metric.warmup
        last = self.progress.last_measured_at.get(name)
        step = self.current_step()
        runs_now = (self.stage is Stage.STEP_RUN and isinstance(step, AnalysisStep)
                    and name in self.plan.step_metrics(step) and name not in self.progress.step_measured)
        if last is None or runs_now:
            return earliest
        return max(earliest, last + metric.interval)

    # -- phase and schedule --------------------------------------------------------------

    def _refresh_phase(self) -> None:
        """The phase shown to users, derived from the stage (terminal phases are set on entry)."""
        stage = self.stage
        if stage in (Stage.BOOTSTRAP, Stage.START_CANARY, Stage.PRE_ROLLOUT):
            self.state.phase = Phase.INITIALIZING
        elif stage in (Stage.STEP_ENTER, Stage.STEP_RUN, Stage.CONFIRM):
            step = self.current_step()
            indefinite = (stage is Stage.STEP_RUN and isinstance(step, PauseStep) and step.duration is None
                          and not self.progress.skip_step)
            self.state.phase = Phase.PAUSED if self.progress.hold_paused or indefinite else Phase.PROGRESSING
        elif stage is Stage.PROMOTE:
            self.state.phase = Phase.PROMOTING
        elif stage is Stage.WITHDRAW and self.state.phase is not Phase.INITIALIZING:
            self.state.phase = Phase.PROGRESSING  # traffic is moving back; the message says so

    def _requeue(self) -> None:
        if not self.wakes:
            return
        seconds = (min(self.wakes) - self.now).total_seconds()
        self.emit(RequeueAfter(round(max(seconds, 0.1), 3)))


def _json_number(value: float | None) -> float | None:
    """NaN and infinities are not JSON: status keeps None (the reason has the text)."""
    return value if value is not None and math.isfinite(value) else None


def _webhook_failure(call: WebhookCall) -> str:
    detail = f": {call.detail}" if call.detail else ""
    return f"{call.type} webhook {call.name} failed{detail}"
