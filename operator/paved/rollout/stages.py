"""What each stage does: `enter_<stage>` once on arrival, `run_<stage>` on every tick in it.

Each stage waits for one thing (a workload ready, a gate settled, a step's time or analysis)
and then moves to the next with `tick.goto`. The table that maps each `Stage` to its two
functions is `paved.rollout.machine.STAGES`; the flow is in that module's docstring. The two
ways into a rollout from outside the table, `start_rollout` and `withdraw`, are here too,
because stages use them as well as the tick loop.
"""

from __future__ import annotations

from paved.rollout.actions import Event
from paved.rollout.gates import Gate, check_gate, open_gate, webhook_failure
from paved.rollout.measurements import analysis_blocking
from paved.rollout.notifications import announce
from paved.rollout.plan import (
    AnalysisStep, NotificationEvent, PauseStep, RouterKind, SetWeightStep, WebhookType, canary_replicas, stable_replicas,
)
from paved.rollout.state import MetricChecks, Phase, Progress, Stage, WebhookCall, Withdrawal, format_time
from paved.rollout.tick import Tick

# -- ways in -------------------------------------------------------------------------------


def start_rollout(tick: Tick, revision: str) -> None:
    """Begin (or retry) a rollout of `revision` from step 0 with fresh counters."""
    state = tick.state
    state.canary_revision = revision
    state.current_step_index = 0
    state.step_started_at = None
    state.pause_until = None
    state.checks = {m.name: MetricChecks() for m in tick.plan.metrics}
    state.history = []
    state.weight_history = []
    tick.note_weight()  # the run starts at the weight it has now (0 after a promotion or rollback)
    old = tick.progress
    state.progress = Progress(  # keeps only what describes the cluster and the last command
        run=old.run + 1, weights_set_at=old.weights_set_at, workloads_set_at=old.workloads_set_at,
        canary_replicas=old.canary_replicas, stable_replicas=old.stable_replicas,
        stable_template=old.stable_template, last_command=old.last_command,
        original_asked=old.original_asked, original_set_at=old.original_set_at, autoscalers=old.autoscalers,
        autoscalers_set_at=old.autoscalers_set_at,
    )
    announce(tick, Event("RolloutStarted", f"rolling out revision {revision} (stable is {state.stable_revision})"),
             NotificationEvent.STARTED, "started")
    tick.goto(Stage.START_CANARY)


def withdraw(tick: Tick, reason: str, outcome: Phase | None, next_revision: str | None = None) -> None:
    """Take traffic off the canary safely; `outcome` None restarts with `next_revision`."""
    progress = tick.progress
    progress.withdrawal = Withdrawal(reason, outcome, tick.state.current_step_index, tick.state.canary_weight,
                                     next_revision)
    progress.pending_measure = None
    progress.webhooks = []
    progress.hold_paused = False
    tick.goto(Stage.WITHDRAW)


# -- Idle, Bootstrap -----------------------------------------------------------------------


def run_idle(tick: Tick) -> None:
    return  # a new target revision or a command starts the next thing, from the tick loop


def enter_bootstrap(tick: Tick) -> None:
    tick.promote_stable_template(tick.stable_revision, tick.full)


def run_bootstrap(tick: Tick) -> None:
    revision = tick.stable_revision
    if tick.waiting_for("stable", tick.full, revision, "initializing: ", f" at revision {revision}"):
        return
    tick.set_weights(0)
    tick.state.phase = Phase.SUCCEEDED
    tick.state.message = f"stable at revision {revision}; a new target revision starts a rollout"
    tick.emit(Event("Initialized", tick.state.message))
    tick.goto(Stage.IDLE)


# -- StartCanary, PreRollout ---------------------------------------------------------------


def enter_start_canary(tick: Tick) -> None:
    tick.ensure_canary(canary_replicas(tick.plan.router, tick.full, 0), force=True)


def run_start_canary(tick: Tick) -> None:
    revision = tick.rollout_revision
    if tick.waiting_for("canary", tick.progress.canary_replicas or 0, revision, "initializing: ",
                        f" at revision {revision}"):
        return
    tick.goto(Stage.PRE_ROLLOUT)


def enter_pre_rollout(tick: Tick) -> None:
    open_gate(tick, WebhookType.PRE_ROLLOUT, "pre")


def run_pre_rollout(tick: Tick) -> None:
    gate = check_gate(tick, WebhookType.PRE_ROLLOUT)
    if gate.failed:
        withdraw(tick, webhook_failure(gate.failed[0]), Phase.FAILED)
    elif gate.passed:
        tick.state.current_step_index = 0
        tick.goto(Stage.STEP_ENTER)
    else:
        tick.state.message = "initializing: waiting for pre-rollout webhooks"


# -- StepEnter, StepRun --------------------------------------------------------------------


def enter_step_enter(tick: Tick) -> None:
    tick.progress.step_passed = []
    tick.progress.step_measured = []
    tick.progress.skip_step = False
    tick.ensure_canary(canary_replicas(tick.plan.router, tick.full, step_weight(tick)))


def run_step_enter(tick: Tick) -> None:
    if tick.current_step() is None:
        tick.goto(Stage.CONFIRM)  # the spec lost steps mid-rollout: all done
        return
    weight = step_weight(tick)
    if tick.waiting_for("canary", tick.progress.canary_replicas or 0, tick.rollout_revision,
                        f"{tick.where()}: ", f" before sending it {weight}%"):
        return
    if weight != tick.state.canary_weight:
        if tick.plan.router is RouterKind.REPLICA_RATIO:
            tick.scale_stable(stable_replicas(tick.plan.router, tick.full, weight))
        tick.set_weights(weight)
    step = tick.current_step()
    assert step is not None  # noqa: S101
    tick.state.step_started_at = tick.now
    tick.state.pause_until = tick.now + step.duration if isinstance(step, PauseStep) and step.duration else None
    index = tick.state.current_step_index
    announce(tick, Event("StepStarted", f"{tick.where()}: {step.describe()}"), NotificationEvent.STEP_STARTED,
             f"step{index}")
    open_gate(tick, WebhookType.ROLLOUT, f"step{index}")
    tick.goto(Stage.STEP_RUN)
    if isinstance(step, PauseStep) and step.duration is None:
        announce(tick, Event("Paused", f"paused at {tick.where()} until `paved rollout promote`"),
                 NotificationEvent.PAUSED, f"pause{index}")


def run_step_run(tick: Tick) -> None:
    gate = check_gate(tick, WebhookType.ROLLOUT)
    if gate.failed:
        withdraw(tick, webhook_failure(gate.failed[0]), Phase.ROLLED_BACK)
        return
    if not tick.progress.skip_step:
        waiting = _step_waiting_for(tick, gate)
        if waiting:
            tick.state.message = f"{tick.where()}: {waiting}"
            return
    if tick.state.current_step_index + 1 < len(tick.plan.steps):
        tick.state.current_step_index += 1
        tick.goto(Stage.STEP_ENTER)
    else:
        tick.goto(Stage.CONFIRM)


def step_weight(tick: Tick) -> int:
    """The step's weight; never below the current weight (weights only move forward)."""
    step = tick.current_step()
    weight = step.weight if isinstance(step, SetWeightStep) else tick.state.canary_weight
    return max(weight, tick.state.canary_weight)


def _step_waiting_for(tick: Tick, gate: Gate) -> str | None:
    """Why the current step cannot end yet, or None when it is done."""
    step = tick.current_step()
    if tick.progress.hold_paused:
        return tick.progress.paused_reason or "paused"
    if not gate.passed:
        return "waiting for rollout webhooks"
    blocking = analysis_blocking(tick)
    if blocking:
        return blocking
    if isinstance(step, PauseStep):
        if step.duration is None:
            return "paused until `paved rollout promote`"
        if tick.state.pause_until and tick.now < tick.state.pause_until:
            tick.wake_at(tick.state.pause_until)
            return f"pausing until {format_time(tick.state.pause_until)}"
    if isinstance(step, AnalysisStep):
        missing = [n for n in tick.plan.step_metrics(step) if n not in tick.progress.step_passed]
        if missing:
            return f"analysing {', '.join(missing)}"
    return None


# -- ConfirmPromotion, Promote, PostRollout ------------------------------------------------


def enter_confirm(tick: Tick) -> None:
    tick.progress.skip_step = False
    tick.progress.confirm_attempt += 1
    tick.progress.retry_gate_at = None
    open_gate(tick, WebhookType.CONFIRM_PROMOTION, f"confirm{tick.progress.confirm_attempt}")


def run_confirm(tick: Tick) -> None:
    if not tick.progress.skip_step:
        waiting = analysis_blocking(tick) or (tick.progress.paused_reason if tick.progress.hold_paused else None)
        if waiting:
            tick.state.message = f"all steps done, before promotion: {waiting}"
            return
        gate = check_gate(tick, WebhookType.CONFIRM_PROMOTION)
        if gate.failed:
            _retry_confirmation(tick, gate.failed[0])
            return
        if not gate.passed:
            tick.state.message = "all steps done: waiting for confirm-promotion webhooks"
            return
    tick.goto(Stage.PROMOTE)


def _retry_confirmation(tick: Tick, refusal: WebhookCall) -> None:
    """A refused confirm-promotion is a gate, not a verdict: ask again every interval
    while background analysis keeps guarding the canary at 100%."""
    progress, interval = tick.progress, tick.plan.interval
    if progress.retry_gate_at is None:
        progress.retry_gate_at = tick.now + interval
        tick.emit(Event("PromotionNotConfirmed", f"{webhook_failure(refusal)}; asking again in "
                                                 f"{interval.total_seconds():g}s", warning=True))
    if tick.now >= progress.retry_gate_at:
        tick.goto(Stage.CONFIRM)
        return
    tick.wake_at(progress.retry_gate_at)
    tick.state.message = (f"all steps done: {webhook_failure(refusal)}; "
                          f"asking again at {format_time(progress.retry_gate_at)}")


def enter_promote(tick: Tick) -> None:
    revision = tick.rollout_revision
    tick.progress.pending_measure = None
    tick.emit(Event("Promoting", f"promoting revision {revision}: the stable workload takes its template"))
    tick.promote_stable_template(revision, tick.full)


def run_promote(tick: Tick) -> None:
    revision = tick.rollout_revision
    if tick.waiting_for("stable", tick.full, revision, "promoting: ", f" at revision {revision}"):
        return
    tick.state.stable_revision = revision
    tick.set_weights(0)
    tick.scale_canary_to_zero()
    tick.goto(Stage.POST_ROLLOUT)


def enter_post_rollout(tick: Tick) -> None:
    revision = tick.state.stable_revision
    tick.state.canary_revision = None
    tick.state.phase = Phase.SUCCEEDED
    tick.state.message = f"promoted revision {revision}: 100% on stable at full scale"
    announce(tick, Event("Promoted", tick.state.message), NotificationEvent.PROMOTED, "promoted")
    open_gate(tick, WebhookType.POST_ROLLOUT, "post")


def run_post_rollout(tick: Tick) -> None:
    if check_gate(tick, WebhookType.POST_ROLLOUT).settled:  # a failed notification changes nothing
        tick.goto(Stage.IDLE)


# -- Withdraw, RollbackNotify --------------------------------------------------------------


def enter_withdraw(tick: Tick) -> None:
    withdrawal = tick.progress.withdrawal
    assert withdrawal is not None  # noqa: S101
    tick.scale_stable(tick.full, force=True)
    if withdrawal.outcome is None:
        tick.emit(Event("RolloutRestarted", f"{withdrawal.reason}: taking traffic off the old canary, then "
                                            f"restarting from step 1", warning=True))
    else:
        tick.emit(Event("RollingBack", _rollback_sentence(tick, "rolling back"), warning=True))


def run_withdraw(tick: Tick) -> None:
    withdrawal = tick.progress.withdrawal
    assert withdrawal is not None  # noqa: S101
    verb = "rolling back" if withdrawal.outcome else "restarting"
    if tick.waiting_for("stable", tick.full, tick.stable_revision, f"{_rollback_sentence(tick, verb)}; ",
                        " before moving traffic"):
        return
    if tick.state.canary_weight != 0:
        tick.set_weights(0)
    if withdrawal.outcome is None:
        start_rollout(tick, withdrawal.next_revision or tick.target.revision)
        return
    tick.scale_canary_to_zero()
    tick.goto(Stage.ROLLBACK_NOTIFY)


def enter_rollback_notify(tick: Tick) -> None:
    withdrawal = tick.progress.withdrawal
    assert withdrawal is not None  # noqa: S101
    tick.state.phase = withdrawal.outcome
    tick.state.message = _rollback_sentence(tick, "rolled back")
    announce(tick, Event("RolledBack" if withdrawal.outcome is Phase.ROLLED_BACK else "Failed", tick.state.message,
                         warning=True), NotificationEvent.ROLLED_BACK, "rollback")
    open_gate(tick, WebhookType.ROLLBACK, "rollback")


def run_rollback_notify(tick: Tick) -> None:
    if check_gate(tick, WebhookType.ROLLBACK).settled:
        tick.goto(Stage.IDLE)


def _rollback_sentence(tick: Tick, verb: str) -> str:
    """One human sentence: 'rolled back at step 3 (20%): success-rate 0.81 < 0.95, ...'."""
    withdrawal = tick.progress.withdrawal
    assert withdrawal is not None  # noqa: S101
    if withdrawal.weight == 0 and withdrawal.outcome is Phase.FAILED:
        return f"failed before any traffic moved: {withdrawal.reason}"
    if withdrawal.weight == 0 and tick.state.step_started_at is None:
        return f"{verb} before any traffic moved: {withdrawal.reason}"
    return f"{verb} at step {withdrawal.step + 1} ({withdrawal.weight}%): {withdrawal.reason}"
