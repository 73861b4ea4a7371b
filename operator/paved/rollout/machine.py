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

Where things are: this module has `decide`, the tick loop (`_run`: what every tick checks
before and after the stages run) and the stage table `STAGES`, one entry per stage;
`paved.rollout.stages` has what each stage does, `paved.rollout.gates` the webhook gates,
`paved.rollout.measurements` the analysis, and `paved.rollout.tick` the scratch state of one
call with the primitives that change workloads and weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, TypeVar

from paved.rollout import stages
from paved.rollout.actions import Action, Event, RequeueAfter
from paved.rollout.measurements import consume_measurements, schedule_measurements
from paved.rollout.observation import CommandKind, Observation
from paved.rollout.autoscaling import follow_autoscaler
from paved.rollout.original import scale_original
from paved.errors import FieldError
from paved.rollout.plan import PauseStep, SpecError, read_plan
from paved.rollout.refusal import REASON_INVALID_SPEC, refuse
from paved.rollout.state import Phase, RolloutState, Stage, as_utc
from paved.rollout.tick import StageHandler, Tick

__all__ = ["STAGES", "Decision", "decide"]

STAGES: Mapping[Stage, StageHandler] = {
    Stage.IDLE: StageHandler(run=stages.run_idle),
    Stage.BOOTSTRAP: StageHandler(enter=stages.enter_bootstrap, run=stages.run_bootstrap),
    Stage.START_CANARY: StageHandler(enter=stages.enter_start_canary, run=stages.run_start_canary),
    Stage.PRE_ROLLOUT: StageHandler(enter=stages.enter_pre_rollout, run=stages.run_pre_rollout),
    Stage.STEP_ENTER: StageHandler(enter=stages.enter_step_enter, run=stages.run_step_enter),
    Stage.STEP_RUN: StageHandler(run=stages.run_step_run),  # entered by StepEnter, which starts the step
    Stage.CONFIRM: StageHandler(enter=stages.enter_confirm, run=stages.run_confirm),
    Stage.PROMOTE: StageHandler(enter=stages.enter_promote, run=stages.run_promote),
    Stage.POST_ROLLOUT: StageHandler(enter=stages.enter_post_rollout, run=stages.run_post_rollout),
    Stage.WITHDRAW: StageHandler(enter=stages.enter_withdraw, run=stages.run_withdraw),
    Stage.ROLLBACK_NOTIFY: StageHandler(enter=stages.enter_rollback_notify, run=stages.run_rollback_notify),
}
"""Each stage's behaviour: `enter` once on arrival (`Tick.goto`), `run` on every tick in it."""

_ROLLOUT_STAGES = {Stage.START_CANARY, Stage.PRE_ROLLOUT, Stage.STEP_ENTER, Stage.STEP_RUN, Stage.CONFIRM}
"""Stages with a canary rollout in flight (an abort or a new revision withdraws it)."""

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
        refusal = refuse(status, REASON_INVALID_SPEC, exc.errors)  # progress kept, nothing moves
        return Decision((refusal.event,) if refusal.event else (), refusal.status, tuple(exc.errors))
    tick = Tick(plan, RolloutState.from_status(status), observation, now, STAGES)
    _run(tick)
    return Decision(tuple(tick.actions), tick.state.to_status(status, (m.name for m in plan.metrics)))


# -- the tick loop -------------------------------------------------------------------------


def _run(tick: Tick) -> None:
    if tick.obs.target is None:
        tick.state.message = "target Deployment not found; nothing is changed until it exists"
        return
    _follow_target_revision(tick)
    _apply_command(tick)
    _keep_stable_at_target_scale(tick)
    _repair_weight_drift(tick)
    _repair_workload_drift(tick)
    rollback = consume_measurements(tick)
    if rollback:
        stages.withdraw(tick, rollback, Phase.ROLLED_BACK)
    _advance(tick)
    # A revision that arrived during promotion, or during a rollback this very tick decided
    # (its measurement breached before the new revision could restart the run), starts now, in
    # this decision: the next one, on the same observation, would start it anyway (decide must
    # be idempotent).
    if tick.stage in (Stage.IDLE, Stage.POST_ROLLOUT, Stage.ROLLBACK_NOTIFY):
        _follow_target_revision(tick)
        _advance(tick)
    scale_original(tick)
    follow_autoscaler(tick)
    schedule_measurements(tick)
    _refresh_phase(tick)
    _requeue(tick)


def _advance(tick: Tick) -> None:
    """Run stages until one has to wait for the world (bounded: every stage moves forward)."""
    for _ in range(len(Stage) * 2 + len(tick.plan.steps) * 2):
        before = tick.transitions
        STAGES[tick.stage].run(tick)
        if tick.transitions == before:
            break


# -- target revision -----------------------------------------------------------------------


def _follow_target_revision(tick: Tick) -> None:
    revision = tick.target.revision
    state, stage = tick.state, tick.stage
    if state.stable_revision is None or stage is Stage.BOOTSTRAP:
        if state.stable_revision != revision or stage is not Stage.BOOTSTRAP:
            state.stable_revision = revision
            tick.goto(Stage.BOOTSTRAP)
        return
    if stage is Stage.PROMOTE:
        return  # the stable set already has the canary's template: finish first
    withdrawal = tick.progress.withdrawal
    if stage is Stage.WITHDRAW and withdrawal and withdrawal.outcome is None:
        # Already restarting: the restart takes the newest revision (or becomes a rollback).
        if revision == state.stable_revision:
            withdrawal.outcome = Phase.ROLLED_BACK
            withdrawal.reason = f"the target went back to the stable revision {revision}"
            withdrawal.next_revision = None
        else:
            withdrawal.next_revision = revision
        return
    if revision == state.stable_revision:
        if stage in _ROLLOUT_STAGES:
            stages.withdraw(tick, f"the target went back to the stable revision {revision}", Phase.ROLLED_BACK)
        return
    if revision == state.canary_revision:
        return  # this rollout, or a finished one that stays RolledBack/Failed until `retry`
    if stage in _ROLLOUT_STAGES:
        stages.withdraw(tick, f"revision {revision} replaced {state.canary_revision}", None, next_revision=revision)
    elif stage is not Stage.WITHDRAW:
        stages.start_rollout(tick, revision)


# -- commands ------------------------------------------------------------------------------


def _apply_command(tick: Tick) -> None:
    command = tick.obs.command
    if command is None or command.id == tick.progress.last_command:
        return
    tick.progress.last_command = command.id
    handler = {CommandKind.PROMOTE: _promote_command, CommandKind.ABORT: _abort_command,
               CommandKind.RETRY: _retry_command}[command.kind]
    ignored = handler(tick)
    if ignored:
        tick.emit(Event("CommandIgnored", f"{command.kind.value} ignored: {ignored}", warning=True))


def _promote_command(tick: Tick) -> str | None:
    if tick.stage not in (Stage.STEP_ENTER, Stage.STEP_RUN, Stage.CONFIRM):
        return f"nothing to promote while {tick.stage.value}"
    tick.progress.skip_step = True
    tick.progress.hold_paused = False
    tick.progress.paused_reason = None
    for checks in tick.state.checks.values():
        checks.holds = 0
    tick.emit(Event("Resumed", f"promote: {tick.where()} completed by the user"))
    return None


def _abort_command(tick: Tick) -> str | None:
    if tick.stage not in _ROLLOUT_STAGES:
        return f"no rollout to abort while {tick.stage.value}"
    stages.withdraw(tick, "aborted by the user", Phase.ROLLED_BACK)
    return None


def _retry_command(tick: Tick) -> str | None:
    finished = tick.state.phase in (Phase.ROLLED_BACK, Phase.FAILED)
    revision = tick.target.revision
    if not finished or tick.stage not in (Stage.IDLE, Stage.ROLLBACK_NOTIFY) or revision != tick.state.canary_revision:
        return "retry restarts a rolled-back or failed revision that is still the target"
    stages.start_rollout(tick, revision)
    return None


# -- drift ---------------------------------------------------------------------------------


def _keep_stable_at_target_scale(tick: Tick) -> None:
    """While idle, the stable workload follows the target's replica count (or its HPA's)."""
    if tick.stage is Stage.IDLE and not tick.plan.autoscaled:
        tick.scale_stable(tick.full)


def _repair_workload_drift(tick: Tick) -> None:
    """The workloads must be what status says was asked of them.

    Status is written before the actions run, so after a crash (or a failed action) the
    world may lag behind it; this re-sends what is missing. Only reads taken after our last
    workload change count, so a stale read never re-sends. With spec.autoscalerRef the copies'
    HPAs own the replica counts between transitions: only templates are repaired then.
    """
    set_at = tick.progress.workloads_set_at
    if set_at is None or tick.observed_at <= set_at:
        return
    progress, stable, canary = tick.progress, tick.stable, tick.canary
    if progress.stable_template and stable.revision != progress.stable_template:
        replicas = progress.stable_replicas if progress.stable_replicas is not None else stable.desired
        tick.promote_stable_template(progress.stable_template, replicas)
    elif progress.stable_replicas is not None and stable.desired != progress.stable_replicas and not tick.plan.autoscaled:
        tick.scale_stable(progress.stable_replicas, force=True)
    if progress.canary_replicas == 0 and canary.desired != 0:
        tick.scale_canary_to_zero(force=True)
    elif progress.canary_replicas and tick.state.canary_revision and (
            (canary.desired != progress.canary_replicas and not tick.plan.autoscaled)
            or canary.revision != tick.state.canary_revision):
        tick.ensure_canary(progress.canary_replicas, force=True)


def _repair_weight_drift(tick: Tick) -> None:
    """The route must say what status says; restore it if someone or something changed it.

    Only a read taken after our last change counts, so a stale read never re-sends.
    """
    weights = tick.obs.weights
    set_at = tick.progress.weights_set_at
    if weights is None or set_at is None or tick.observed_at <= set_at:
        return
    expected = (100 - tick.state.canary_weight, tick.state.canary_weight)
    if (weights.stable, weights.canary) == expected:
        return
    tick.emit(Event("TrafficDrift", f"route had {weights.stable}/{weights.canary} (stable/canary), "
                                    f"restoring {expected[0]}/{expected[1]}", warning=True))
    tick.set_weights(expected[1])


# -- phase and schedule --------------------------------------------------------------------


def _refresh_phase(tick: Tick) -> None:
    """The phase shown to users, derived from the stage (terminal phases are set on entry)."""
    stage, state = tick.stage, tick.state
    if stage in (Stage.BOOTSTRAP, Stage.START_CANARY, Stage.PRE_ROLLOUT):
        state.phase = Phase.INITIALIZING
    elif stage in (Stage.STEP_ENTER, Stage.STEP_RUN, Stage.CONFIRM):
        step = tick.current_step()
        indefinite = (stage is Stage.STEP_RUN and isinstance(step, PauseStep) and step.duration is None
                      and not tick.progress.skip_step)
        state.phase = Phase.PAUSED if tick.progress.hold_paused or indefinite else Phase.PROGRESSING
    elif stage is Stage.PROMOTE:
        state.phase = Phase.PROMOTING
    elif stage is Stage.WITHDRAW and state.phase is not Phase.INITIALIZING:
        state.phase = Phase.PROGRESSING  # traffic is moving back; the message says so


def _requeue(tick: Tick) -> None:
    if not tick.wakes:
        return
    seconds = (min(tick.wakes) - tick.now).total_seconds()
    tick.emit(RequeueAfter(round(max(seconds, 0.1), 3)))
