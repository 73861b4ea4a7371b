"""Rollout progress as it lives in `status`, read into typed objects and written back.

All progress lives in status so an operator restart continues exactly where it was. The
user-facing fields (phase, message, currentStepIndex, canaryWeight, revisions, checks,
analysisHistory, pauseUntil) follow the ProgressiveRollout status schema; the machine's own
bookkeeping lives under `status.progress` (not an API contract; shown for debugging).

Written status is complete: every key the machine owns is present (None where cleared: the
rollout's status writer leaves it out, and server-side apply removes it), collections are
lists (replaced whole) or maps keyed by the spec's metric names with every metric present.
Keys the machine does not own (conditions, observedGeneration) are passed through untouched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Iterable, Mapping

from paved.api.common import PROGRESSING, READY, ConditionSpec, parse_rfc3339


class Phase(str, Enum):
    INITIALIZING = "Initializing"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


class Stage(str, Enum):
    """Where the machine is inside a phase; each stage waits for one thing."""

    IDLE = "Idle"                        # nothing in flight; phase is Succeeded/RolledBack/Failed
    BOOTSTRAP = "Bootstrap"              # first sight: stable takes the target template, 100% stable
    START_CANARY = "StartCanary"         # canary workload created at the new revision
    PRE_ROLLOUT = "PreRollout"           # waiting for pre-rollout webhooks
    STEP_ENTER = "StepEnter"             # scaling the canary for the step, then setting its weight
    STEP_RUN = "StepRun"                 # step running: pause / analysis / webhooks
    CONFIRM = "ConfirmPromotion"         # all steps done at 100%: waiting for confirm-promotion
    PROMOTE = "Promote"                  # stable takes the new template; waiting until ready
    POST_ROLLOUT = "PostRollout"         # promoted; waiting for post-rollout webhook results
    WITHDRAW = "Withdraw"                # rolling back / restarting: stable to full, then traffic
    ROLLBACK_NOTIFY = "RollbackNotify"   # traffic is back; waiting for rollback webhook results


class CallState(str, Enum):
    REQUESTED = "requested"
    PASSED = "passed"
    FAILED = "failed"


@dataclass
class MetricChecks:
    """Counters for one metric in this rollout. `holds` counts consecutive inconclusive
    measurements (reset by any verdict); `failures` counts all missed success conditions."""

    failures: int = 0
    holds: int = 0
    successes: int = 0


@dataclass
class WebhookCall:
    key: str
    type: str
    name: str
    state: CallState
    at: datetime
    detail: str = ""


@dataclass
class PendingMeasure:
    id: str
    at: datetime
    metrics: list[str]


@dataclass
class Withdrawal:
    """Why traffic is being taken off the canary, and what happens once it is.

    `outcome` None means a restart: the next rollout (of `next_revision`) starts right after.
    `step`/`weight` record where the canary was, for the one-sentence explanation.
    """

    reason: str
    outcome: Phase | None
    step: int
    weight: int
    next_revision: str | None = None


@dataclass(frozen=True)
class OriginalScale:
    """spec.replicas asked of the user's Deployment, and the user's count noted next to it
    (None: handed back to the user)."""

    replicas: int
    remember: int | None


@dataclass(frozen=True)
class AutoscalerBounds:
    """What a copy's HorizontalPodAutoscaler was last asked to be."""

    min_replicas: int
    max_replicas: int
    revision: str


@dataclass
class Progress:
    stage: Stage = Stage.IDLE
    run: int = 0
    stage_entered_at: datetime | None = None
    weights_set_at: datetime | None = None
    workloads_set_at: datetime | None = None
    canary_replicas: int | None = None
    stable_replicas: int | None = None
    stable_template: str | None = None
    last_measured_at: dict[str, datetime | None] = field(default_factory=dict)
    pending_measure: PendingMeasure | None = None
    measure_seq: int = 0
    webhooks: list[WebhookCall] = field(default_factory=list)
    confirm_attempt: int = 0
    retry_gate_at: datetime | None = None
    step_passed: list[str] = field(default_factory=list)
    step_measured: list[str] = field(default_factory=list)
    hold_paused: bool = False
    paused_reason: str | None = None
    skip_step: bool = False
    last_command: str | None = None
    withdrawal: Withdrawal | None = None
    last_reason: dict[str, str | None] = field(default_factory=dict)
    original_asked: OriginalScale | None = None  # the last scale asked of the user's Deployment
    original_set_at: datetime | None = None
    autoscalers: dict[str, AutoscalerBounds] = field(default_factory=dict)  # role -> the bounds asked
    autoscalers_set_at: datetime | None = None


@dataclass
class RolloutState:
    phase: Phase | None = None
    message: str = ""
    current_step_index: int = 0
    canary_weight: int = 0
    stable_revision: str | None = None
    canary_revision: str | None = None
    original_replicas: int | None = None
    step_started_at: datetime | None = None
    pause_until: datetime | None = None
    checks: dict[str, MetricChecks] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    weight_history: list[dict[str, Any]] = field(default_factory=list)  # {"weight", "at"} of this run
    progress: Progress = field(default_factory=Progress)

    # -- reading -------------------------------------------------------------------------

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> "RolloutState":
        raw = dict(status or {})
        progress = dict(raw.get("progress") or {})
        return cls(
            phase=_enum(Phase, raw.get("phase")),
            message=raw.get("message") or "",
            current_step_index=int(raw.get("currentStepIndex") or 0),
            canary_weight=int(raw.get("canaryWeight") or 0),
            stable_revision=raw.get("stableRevision"),
            canary_revision=raw.get("canaryRevision"),
            original_replicas=raw.get("originalReplicas"),
            step_started_at=parse_rfc3339(raw.get("stepStartedAt")),
            pause_until=parse_rfc3339(raw.get("pauseUntil")),
            checks={name: MetricChecks(int(c.get("failures") or 0), int(c.get("holds") or 0),
                                       int(c.get("successes") or 0))
                    for name, c in (raw.get("checks") or {}).items() if isinstance(c, Mapping)},
            history=[dict(h) for h in raw.get("analysisHistory") or []],
            weight_history=[dict(h) for h in raw.get("weightHistory") or []],
            progress=_read_progress(progress),
        )

    # -- writing -------------------------------------------------------------------------

    def to_status(self, base: Mapping[str, Any] | None, metric_names: Iterable[str]) -> dict[str, Any]:
        """The complete status: `base` (conditions etc.) with every machine-owned key set."""
        names = list(metric_names)
        status = {key: copy.deepcopy(value) for key, value in (base or {}).items() if key not in _OWNED}
        status.update({
            "phase": self.phase.value if self.phase else None,
            "message": self.message,
            "currentStepIndex": self.current_step_index,
            "canaryWeight": self.canary_weight,
            "stableRevision": self.stable_revision,
            "canaryRevision": self.canary_revision,
            "originalReplicas": self.original_replicas,
            "stepStartedAt": format_time(self.step_started_at),
            "pauseUntil": format_time(self.pause_until),
            "checks": {name: _checks_dict(self.checks.get(name, MetricChecks())) for name in names},
            "analysisHistory": [dict(h) for h in self.history],
            "weightHistory": [dict(h) for h in self.weight_history],
            "progress": _progress_dict(self.progress, names),
        })
        return status


_OWNED = frozenset({"phase", "message", "currentStepIndex", "canaryWeight", "stableRevision", "canaryRevision",
                    "originalReplicas",
                    "stepStartedAt", "pauseUntil", "checks", "analysisHistory", "weightHistory", "progress"})


def _checks_dict(checks: MetricChecks) -> dict[str, int]:
    return {"failures": checks.failures, "holds": checks.holds, "successes": checks.successes}


def _read_progress(raw: Mapping[str, Any]) -> Progress:
    pending = raw.get("pendingMeasure")
    withdrawal = raw.get("withdrawal")
    asked = raw.get("originalAsked")
    return Progress(
        stage=_enum(Stage, raw.get("stage")) or Stage.IDLE,
        run=int(raw.get("run") or 0),
        stage_entered_at=parse_rfc3339(raw.get("stageEnteredAt")),
        weights_set_at=parse_rfc3339(raw.get("weightsSetAt")),
        workloads_set_at=parse_rfc3339(raw.get("workloadsSetAt")),
        canary_replicas=raw.get("canaryReplicas"),
        stable_replicas=raw.get("stableReplicas"),
        stable_template=raw.get("stableTemplate"),
        last_measured_at={k: parse_rfc3339(v) for k, v in (raw.get("lastMeasuredAt") or {}).items()},
        pending_measure=PendingMeasure(pending["id"], _time(pending["at"]), list(pending.get("metrics") or []))
        if pending else None,
        measure_seq=int(raw.get("measureSeq") or 0),
        webhooks=[WebhookCall(w["key"], w["type"], w["name"], CallState(w["state"]), _time(w["at"]),
                              w.get("detail") or "") for w in raw.get("webhooks") or []],
        confirm_attempt=int(raw.get("confirmAttempt") or 0),
        retry_gate_at=parse_rfc3339(raw.get("retryGateAt")),
        step_passed=list(raw.get("stepPassed") or []),
        step_measured=list(raw.get("stepMeasured") or []),
        hold_paused=bool(raw.get("holdPaused")),
        paused_reason=raw.get("pausedReason"),
        skip_step=bool(raw.get("skipStep")),
        last_command=raw.get("lastCommand"),
        withdrawal=Withdrawal(withdrawal["reason"], _enum(Phase, withdrawal.get("outcome")),
                              int(withdrawal.get("step") or 0), int(withdrawal.get("weight") or 0),
                              withdrawal.get("nextRevision")) if withdrawal else None,
        last_reason=dict(raw.get("lastReason") or {}),
        original_asked=OriginalScale(int(asked["replicas"]), asked.get("remember")) if asked else None,
        original_set_at=parse_rfc3339(raw.get("originalSetAt")),
        autoscalers={role: AutoscalerBounds(int(b["min"]), int(b["max"]), str(b["revision"]))
                     for role, b in (raw.get("autoscalers") or {}).items() if isinstance(b, Mapping)},
        autoscalers_set_at=parse_rfc3339(raw.get("autoscalersSetAt")),
    )


def _progress_dict(progress: Progress, metric_names: list[str]) -> dict[str, Any]:
    pending = progress.pending_measure
    withdrawal = progress.withdrawal
    return {
        "stage": progress.stage.value,
        "run": progress.run,
        "stageEnteredAt": format_time(progress.stage_entered_at),
        "weightsSetAt": format_time(progress.weights_set_at),
        "workloadsSetAt": format_time(progress.workloads_set_at),
        "canaryReplicas": progress.canary_replicas,
        "stableReplicas": progress.stable_replicas,
        "stableTemplate": progress.stable_template,
        "lastMeasuredAt": {name: format_time(progress.last_measured_at.get(name)) for name in metric_names},
        "pendingMeasure": {"id": pending.id, "at": format_time(pending.at), "metrics": list(pending.metrics)}
        if pending else None,
        "measureSeq": progress.measure_seq,
        "webhooks": [{"key": w.key, "type": w.type, "name": w.name, "state": w.state.value,
                      "at": format_time(w.at), "detail": w.detail} for w in progress.webhooks],
        "confirmAttempt": progress.confirm_attempt,
        "retryGateAt": format_time(progress.retry_gate_at),
        "stepPassed": list(progress.step_passed),
        "stepMeasured": list(progress.step_measured),
        "holdPaused": progress.hold_paused,
        "pausedReason": progress.paused_reason,
        "skipStep": progress.skip_step,
        "lastCommand": progress.last_command,
        "withdrawal": {"reason": withdrawal.reason,
                       "outcome": withdrawal.outcome.value if withdrawal.outcome else None,
                       "step": withdrawal.step, "weight": withdrawal.weight,
                       "nextRevision": withdrawal.next_revision} if withdrawal else None,
        "lastReason": {name: progress.last_reason.get(name) for name in metric_names},
        "originalAsked": {"replicas": progress.original_asked.replicas, "remember": progress.original_asked.remember}
        if progress.original_asked else None,
        "originalSetAt": format_time(progress.original_set_at),
        "autoscalers": {role: {"min": b.min_replicas, "max": b.max_replicas, "revision": b.revision}
                        for role, b in progress.autoscalers.items()},
        "autoscalersSetAt": format_time(progress.autoscalers_set_at),
    }


def _enum(kind: type[Enum], value: Any) -> Any:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        return None


def as_utc(moment: datetime) -> datetime:
    """Timezone-aware UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def format_time(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC, keeping sub-second precision (schedules aim for 1 s accuracy)."""
    if moment is None:
        return None
    text = as_utc(moment).isoformat()
    return text.replace("+00:00", "Z")


def _time(text: Any) -> datetime:
    moment = parse_rfc3339(text)
    if moment is None:
        raise ValueError("missing timestamp in status.progress")
    return moment


def conditions_for(status: Mapping[str, Any]) -> list[ConditionSpec]:
    """Ready and Progressing from the phase: Ready only when the declared revision serves
    100% at full scale (Succeeded); Progressing while a rollout is under way."""
    phase = status.get("phase") or "Initializing"
    message = status.get("message") or ""
    moving = phase in ("Initializing", "Progressing", "Paused", "Promoting")
    return [(READY, phase == "Succeeded", phase, message), (PROGRESSING, moving, phase, message)]
