"""Measurements during a rollout: when to ask for them, what their verdicts count, and when
they hold a step back.

While a canary runs (StepEnter, StepRun, ConfirmPromotion) every metric is measured after
its warmup and then every interval, and at once when an analysis step names it. The machine
asks with one `Measure` (its id in `status.progress.pendingMeasure`) and folds the answers
into per-metric counters and `status.analysisHistory`; the verdict of one measurement comes
from `paved.rollout.analysis.judge`. A breach, or failures reaching `failureLimit`, roll
back; an inconclusive verdict extends the step, and `maxHolds` of them in a row pause it.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from paved.api.rollout import ANALYSIS_HISTORY_LIMIT
from paved.rollout.actions import Event, Measure, MetricQuery
from paved.rollout.analysis import VerdictKind, judge
from paved.rollout.observation import MetricMeasurement
from paved.rollout.notifications import announce
from paved.rollout.plan import AnalysisStep, NotificationEvent
from paved.rollout.state import MetricChecks, PendingMeasure, Stage, format_time
from paved.rollout.tick import Tick

HISTORY_LIMIT = ANALYSIS_HISTORY_LIMIT
"""analysisHistory keeps the last N measurements (all metrics together), as the API says."""

RESULT_POLL = timedelta(seconds=1)
"""Re-check this soon while a measurement is outstanding (handlers usually answer at once)."""

MIN_MEASURE_WAIT = timedelta(seconds=10)
"""An unanswered Measure is dropped and re-asked after max(interval, this)."""

ANALYSING_STAGES = frozenset({Stage.STEP_ENTER, Stage.STEP_RUN, Stage.CONFIRM})
"""The stages in which the canary serves traffic under analysis."""

_FAILED_LABEL = "Failed"  # Verdict.label of a missed success condition (or a breach)


def consume_measurements(tick: Tick) -> str | None:
    """Turn the answers to our last Measure into verdicts; returns why to roll back now, if so."""
    pending = tick.progress.pending_measure
    if pending is None or tick.stage not in ANALYSING_STAGES:
        return None
    answers = {name: m for name in pending.metrics
               if (m := tick.obs.measurements.get(name)) is not None and m.request_id == pending.id}
    if not answers:
        return None
    tick.progress.pending_measure = None
    rollback: str | None = None
    for name in pending.metrics:
        if name in answers and tick.plan.has_metric(name):
            tick.progress.last_measured_at[name] = pending.at
            verdict_reason = _record(tick, name, answers[name], pending.at)
            rollback = rollback or verdict_reason
    return rollback


def schedule_measurements(tick: Tick) -> None:
    """Ask for every metric that is due; remember when the next one will be."""
    if tick.stage not in ANALYSING_STAGES or not tick.plan.metrics or tick.state.step_started_at is None:
        return
    progress = tick.progress
    pending = progress.pending_measure
    if pending is not None:
        expires = pending.at + max(tick.plan.interval, MIN_MEASURE_WAIT)
        if tick.now < expires:
            tick.wake_at(min(expires, tick.now + RESULT_POLL))
            return
        tick.emit(Event("AnalysisTimeout", f"no answer to measurement {pending.id}; asking again", warning=True))
        progress.pending_measure = None
    due = _due_metrics(tick)
    if due:
        progress.measure_seq += 1  # unique even for two requests at the same instant
        request_id = f"{tick.state.canary_revision}/{progress.run}/{progress.measure_seq}"
        progress.pending_measure = PendingMeasure(request_id, tick.now, due)
        tick.emit(Measure(request_id, tuple(
            MetricQuery(m.name, m.query, m.samples_query) for m in tick.plan.metrics if m.name in due)))
        tick.wake_at(tick.now + RESULT_POLL)
    later = [at for at in (_due_at(tick, m.name) for m in tick.plan.metrics) if at > tick.now]
    if later:
        tick.wake_at(min(later))


def analysis_blocking(tick: Tick) -> str | None:
    """Why the analysis keeps the current step (or the promotion) waiting, or None.

    A step never ends on an unanswered or inconclusive measurement: it is extended."""
    if tick.progress.pending_measure is not None or _due_metrics(tick):
        return "waiting for analysis results"
    plan, state, last_reason = tick.plan, tick.state, tick.progress.last_reason
    held = [name for name, c in state.checks.items() if c.holds > 0 and plan.has_metric(name)]
    if held:
        return "extended, inconclusive: " + "; ".join(
            f"{name} {last_reason.get(name) or ''} (hold {state.checks[name].holds} of "
            f"{plan.metric(name).max_holds})" for name in held)
    # A failure below failureLimit does not roll back yet, but it must not promote either
    # (Flagger's rule): the step waits until the metric's latest verdict passes again.
    failing = [name for name, label in _latest_verdicts(tick).items() if label == _FAILED_LABEL]
    if failing:
        return "extended, failing: " + "; ".join(
            f"{name} {last_reason.get(name) or ''} (failure {state.checks[name].failures} of "
            f"{plan.metric(name).failure_limit})" for name in failing if name in state.checks)
    return None


def _record(tick: Tick, name: str, measurement: MetricMeasurement, at: datetime) -> str | None:
    """Count one verdict; returns the rollback reason when this verdict demands one."""
    metric = tick.plan.metric(name)
    verdict = judge(metric, measurement)
    state, progress = tick.state, tick.progress
    checks = state.checks.setdefault(name, MetricChecks())
    state.history.append({
        "metric": name, "value": _json_number(measurement.value), "samples": measurement.samples,
        "verdict": verdict.label, "at": format_time(at),
    })
    progress.last_reason[name] = verdict.reason
    del state.history[:-HISTORY_LIMIT]
    samples = f"; {measurement.samples} samples" if measurement.samples is not None else ""
    if tick.stage is Stage.STEP_RUN and name not in progress.step_measured:
        progress.step_measured.append(name)
    if verdict.kind is VerdictKind.HOLD:
        checks.holds += 1
        _on_hold(tick, name, verdict.reason, checks.holds, metric.max_holds)
        return None
    checks.holds = 0
    if verdict.kind is VerdictKind.PASS:
        checks.successes += 1
        step = tick.current_step()
        if tick.stage is Stage.STEP_RUN and isinstance(step, AnalysisStep) and name in tick.plan.step_metrics(step):
            if name not in progress.step_passed:
                progress.step_passed.append(name)
        return None
    if verdict.kind is VerdictKind.BREACH:
        return f"{name} {verdict.reason}, failure condition met{samples}"
    checks.failures += 1
    if checks.failures >= metric.failure_limit:
        return f"{name} {verdict.reason}, failure limit {metric.failure_limit} reached{samples}"
    tick.emit(Event("AnalysisFailed", f"{tick.where()}: {name} {verdict.reason} "
                                      f"(failure {checks.failures} of {metric.failure_limit}){samples}", warning=True))
    return None


def _on_hold(tick: Tick, name: str, reason: str, holds: int, max_holds: int) -> None:
    progress = tick.progress
    if progress.hold_paused:
        return  # already paused and said why; keep measuring (a breach still rolls back)
    tick.emit(Event("AnalysisInconclusive", f"{tick.where()}: {name} {reason} (hold {holds} of {max_holds})",
                    warning=True))
    if holds >= max_holds:
        progress.hold_paused = True
        progress.paused_reason = (f"paused: {name} {reason} {holds} times in a row (maxHolds {max_holds}); "
                                  f"`paved rollout promote` continues, `abort` rolls back")
        # One such pause per stage and step of a run at most: only `promote` lifts it, and moves on.
        announce(tick, Event("Paused", f"{tick.where()}: {progress.paused_reason}", warning=True),
                 NotificationEvent.PAUSED, f"held/{tick.stage.value}{tick.state.current_step_index}")


def _due_metrics(tick: Tick) -> list[str]:
    """Metrics to measure now; a step never ends while one is due (its last look counts)."""
    if tick.stage not in ANALYSING_STAGES or tick.state.step_started_at is None:
        return []
    return [m.name for m in tick.plan.metrics if _due_at(tick, m.name) <= tick.now]


def _due_at(tick: Tick, name: str) -> datetime:
    """When `name` should next be measured.

    Never inside the metric's warmup after the step started; then every interval. In an
    analysis step that names the metric, its first measurement of the step is due at once.
    """
    metric = tick.plan.metric(name)
    assert tick.state.step_started_at is not None  # noqa: S101
    earliest = tick.state.step_started_at + metric.warmup
    last = tick.progress.last_measured_at.get(name)
    step = tick.current_step()
    runs_now = (tick.stage is Stage.STEP_RUN and isinstance(step, AnalysisStep)
                and name in tick.plan.step_metrics(step) and name not in tick.progress.step_measured)
    if last is None or runs_now:
        return earliest
    return max(earliest, last + metric.interval)


def _latest_verdicts(tick: Tick) -> dict[str, str]:
    """Each planned metric's most recent verdict label, from the (status-held) history."""
    latest: dict[str, str] = {}
    for entry in tick.state.history:
        name = entry.get("metric")
        if isinstance(name, str) and tick.plan.has_metric(name):
            latest[name] = str(entry.get("verdict"))
    return latest


def _json_number(value: float | None) -> float | None:
    """NaN and infinities are not JSON: status keeps None (the reason has the text)."""
    return value if value is not None and math.isfinite(value) else None
