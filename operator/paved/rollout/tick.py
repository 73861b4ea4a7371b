"""One call of `decide`: the scratch state every part of the machine works on.

A `Tick` carries the plan, the state read from status, the observation and `now`; it collects
the actions and the wake-up times of the call and is discarded afterwards (all that lasts is
in `state`, which becomes the status). It also holds the few primitives that change the world:
every workload change and weight change goes through them, so status always records what was
asked and when, which is what the drift repair compares the cluster with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Mapping

from paved.api.rollout import WEIGHT_HISTORY_LIMIT
from paved.rollout.actions import Action, EnsureCanary, PromoteStableTemplate, ScaleCanary, ScaleStable, SetWeights
from paved.rollout.observation import ABSENT, Observation, TargetState, WorkloadState
from paved.rollout.plan import RolloutPlan, Step
from paved.rollout.state import Progress, RolloutState, Stage, as_utc, format_time

POLL = timedelta(seconds=2)
"""Re-check this soon while waiting for the cluster (readiness, a route read-back)."""


@dataclass(frozen=True)
class StageHandler:
    """What one stage does. `enter` runs once, at the transition into the stage (what it
    starts); `run` runs on every tick spent in it and either waits for the world or moves on."""

    run: Callable[["Tick"], None]
    enter: Callable[["Tick"], None] | None = None


@dataclass
class Tick:
    """One call of `decide`: mutable scratch state, discarded after the call."""

    plan: RolloutPlan
    state: RolloutState
    obs: Observation
    now: datetime
    stages: Mapping[Stage, StageHandler]  # machine.STAGES, passed in: the stages import this module
    actions: list[Action] = field(default_factory=list)
    wakes: list[datetime] = field(default_factory=list)
    transitions: int = 0

    # -- reading -------------------------------------------------------------------------

    @property
    def progress(self) -> Progress:
        return self.state.progress

    @property
    def stage(self) -> Stage:
        return self.state.progress.stage

    @property
    def target(self) -> TargetState:
        assert self.obs.target is not None  # noqa: S101 - the tick stops early without a target
        return self.obs.target

    @property
    def full(self) -> int:
        return max(self.target.user_replicas, 0)

    @property
    def rollout_revision(self) -> str:
        """The revision being rolled out (set whenever a canary stage runs)."""
        assert self.state.canary_revision is not None  # noqa: S101
        return self.state.canary_revision

    @property
    def stable_revision(self) -> str:
        assert self.state.stable_revision is not None  # noqa: S101
        return self.state.stable_revision

    @property
    def revision(self) -> str:
        """The canary's revision while there is one, else the stable's ('' before the first)."""
        return self.state.canary_revision or self.state.stable_revision or ""

    @property
    def stable(self) -> WorkloadState:
        return self.obs.stable or ABSENT

    @property
    def canary(self) -> WorkloadState:
        return self.obs.canary or ABSENT

    @property
    def observed_at(self) -> datetime:
        return as_utc(self.obs.observed_at) if self.obs.observed_at else self.now

    def current_step(self) -> Step | None:
        index = self.state.current_step_index
        return self.plan.steps[index] if 0 <= index < len(self.plan.steps) else None

    def where(self) -> str:
        """'step 3/5 (20%)' — the position used in messages."""
        return f"step {self.state.current_step_index + 1}/{len(self.plan.steps)} ({self.state.canary_weight}%)"

    # -- output --------------------------------------------------------------------------

    def emit(self, *actions: Action) -> None:
        self.actions.extend(actions)

    def wake_at(self, moment: datetime) -> None:
        self.wakes.append(moment)

    def poll(self, interval: timedelta = POLL) -> None:
        self.wakes.append(self.now + interval)

    def goto(self, stage: Stage) -> None:
        """Move to `stage` and do what entering it does, now (its actions come in order)."""
        self.transitions += 1
        self.progress.stage = stage
        self.progress.stage_entered_at = self.now
        enter = self.stages[stage].enter
        if enter is not None:
            enter(self)

    # -- traffic and workloads -----------------------------------------------------------

    def set_weights(self, canary: int) -> None:
        self.state.canary_weight = canary
        self.progress.weights_set_at = self.now
        self.note_weight()
        self.emit(SetWeights(100 - canary, canary))

    def note_weight(self) -> None:
        """Add the canary weight to status.weightHistory when it differs from the last entry
        (`paved rollout report` draws it); a drift repair re-sends the same weight, noted once."""
        history = self.state.weight_history
        if not history or history[-1].get("weight") != self.state.canary_weight:
            history.append({"weight": self.state.canary_weight, "at": format_time(self.now)})
            del history[:-WEIGHT_HISTORY_LIMIT]

    def ensure_canary(self, replicas: int, force: bool = False) -> None:
        if force or replicas != self.progress.canary_replicas:
            self.progress.canary_replicas = replicas
            self.progress.workloads_set_at = self.now
            self.emit(EnsureCanary(self.rollout_revision, replicas))

    def scale_stable(self, replicas: int, force: bool = False) -> None:
        if force or replicas != self.progress.stable_replicas:
            self.progress.stable_replicas = replicas
            self.progress.workloads_set_at = self.now
            self.emit(ScaleStable(replicas))

    def scale_canary_to_zero(self, force: bool = False) -> None:
        if force or self.progress.canary_replicas != 0:
            self.progress.canary_replicas = 0
            self.progress.workloads_set_at = self.now
            self.emit(ScaleCanary(0))

    def promote_stable_template(self, revision: str, replicas: int) -> None:
        self.progress.stable_template = revision
        self.progress.stable_replicas = replicas
        self.progress.workloads_set_at = self.now
        self.emit(PromoteStableTemplate(revision, replicas))

    def autoscaled_count(self, name: str) -> int | None:
        """The stable or canary copy's count as its HPA may have chosen it, or None when only
        the machine's count serves: without an HPA, in a read taken before the machine's last
        workload change (in the tick that scales a copy up the read still shows the old count),
        or outside the bounds last asked of the copy's HPA (a count it cannot have chosen)."""
        bounds = self.progress.autoscalers.get(name)
        set_at = self.progress.workloads_set_at
        if not self.plan.autoscaled or bounds is None or (set_at is not None and self.observed_at <= set_at):
            return None
        desired = (self.stable if name == "stable" else self.canary).desired
        return desired if bounds.min_replicas <= desired <= bounds.max_replicas else None

    def waiting_for(self, name: str, replicas: int, revision: str, prefix: str, suffix: str) -> bool:
        """True while the stable or canary workload is not ready at `replicas` on `revision`;
        then the message says so ('...waiting for stable 2/4 ready...') and a poll is due."""
        workload = self.stable if name == "stable" else self.canary
        chosen = self.autoscaled_count(name) if replicas > 0 else None
        if chosen:
            replicas = chosen  # its HPA moved the count the machine set: any count it chose serves
        if workload.is_ready(replicas, revision):
            return False
        ready = min(workload.ready, replicas) if workload.revision == revision else 0
        self.state.message = f"{prefix}waiting for {name} {ready}/{replicas} ready{suffix}"
        self.poll()
        return True
