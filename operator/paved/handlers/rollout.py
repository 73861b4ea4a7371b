"""ProgressiveRollout: the thin loop around the pure state machine (paved.rollout).

One *tick* of one rollout (`RolloutRunner.tick`, synchronous, in a worker thread):

    read the rollout (fresh: status is the machine's memory, a cached copy could be stale)
    refuse bad input with a condition naming the field, moving nothing:
        spec (schema, CEL, weights)          -> InvalidSpec
        a query Prometheus rejects           -> QueryRejected
        the target Deployment is missing     -> TargetNotFound
        the route/Service cannot be steered  -> RoutingInvalid
    observe: target revision/replicas, stable and canary workloads, route weights, command
      (in parallel; Deployments come from a cache fed by the Deployment watch and by
      Paved's own writes, never older than Paved's last write, see DeploymentCache)
    decide -> write status (first: it is the intent) -> execute the actions in order,
    stopping at the first failure; a Measure or RunWebhook is answered at once and
    `decide` called again with the answers (bounded); else sleep until RequeueAfter.

Scheduling: one async Kopf daemon per rollout (`rollout_daemon`) runs ticks in a small
thread pool (never on the event loop, never in Kopf's handler pool, which a daemon per
rollout would exhaust) and sleeps until the machine's RequeueAfter, or until a watch event
wakes it: the rollout itself changed (spec, command annotation), its target's spec changed
(a new pod template), or a copy changed while the machine waits for it to be ready. Steps
therefore start within milliseconds of their due time when the API server is not
saturated, and readiness is noticed as it happens. Idle rollouts re-check every
IDLE_RESYNC seconds (route drift, a fixed route). The two event handlers are `async` and
only touch memory (a flag, the cache): no I/O, nothing blocking. Measurement-only
decisions are written together with their answers (one status write, not two), and
Events are posted off the critical path.

Commands: `paved rollout promote|abort|retry` sets annotations `paved.dev/command` and
`paved.dev/command-id` (any unique string); each id acts once (the machine records the last
one in status.progress), so a lingering annotation is harmless.

Deletion: the Deployments and Services go with the rollout (ownerReferences); the delete
handler first hands the HTTPRoute's rules back to the user's Service (router.finalize), so
deleting a rollout never leaves a route pointing at deleted Services.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import kopf

from paved import API_VERSION, GROUP, VERSION
from paved import metrics as paved_metrics
from paved.api.common import PROGRESSING, READY
from paved.errors import describe, safe_traceback
from paved.kube import apply as kube_apply
from paved.kube import events as kube_events
from paved.kube import status as kube_status
from paved.kube.client import ApiError
from paved.providers import metrics as metric_providers
from paved.providers.base import Owner, ProviderError
from paved.providers.routing import (
    CANARY, COMMAND_ANNOTATION, COMMAND_ID_ANNOTATION, ROLLOUT_LABEL, STABLE, RolloutContext, Router, RouterError,
    router_for,
)
from paved.providers.routing.workloads import DeploymentCache, Workloads, target_state
from paved.providers.webhooks import RolloutRef, WebhookCaller
from paved.rollout import (
    Command, CommandKind, Decision, EnsureCanary, Event, FieldError, Measure, MetricMeasurement, Observation,
    PromoteStableTemplate, RequeueAfter, RunWebhook, ScaleCanary, ScaleStable, SetWeights, Stage, WebhookResult,
    Weights, conditions_for, decide, validate_spec,
)

log = logging.getLogger(__name__)


class _QuietWakers(logging.Filter):
    """Drop Kopf's "Handler '...' succeeded." for the two wakers: they run on every event of
    every Deployment in the cluster and have nothing to report."""

    NOISE = frozenset({"Handler 'rollout_changed' succeeded.", "Handler 'deployment_changed' succeeded."})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.NOISE


logging.getLogger("kopf.objects").addFilter(_QuietWakers())

KIND = "ProgressiveRollout"
PLURAL = "progressiverollouts"

IDLE_RESYNC = 30.0        # seconds between ticks when the machine asks for none (drift checks)
REFUSED_RESYNC = 10.0     # seconds between re-checks of refused input (a route fixed in place)
RECONCILE_EVERY = 300.0   # seconds between re-applies of the Paved Services (and route checks)
MAX_DECIDE_ROUNDS = 6     # decide calls per tick (the first, plus answers to Measure/RunWebhook)
ERROR_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
TICK_WORKERS = 24         # rollouts ticking at the same moment (a tick may wait on a webhook)
READ_WORKERS = 8          # parallel reads inside ticks
WAKE_DEBOUNCE = 0.05      # seconds to gather a burst of watch events into one tick

REASON_INVALID_SPEC = "InvalidSpec"
REASON_QUERY_REJECTED = "QueryRejected"
REASON_TARGET_NOT_FOUND = "TargetNotFound"
REASON_ROUTING_INVALID = "RoutingInvalid"

_REFUSALS = {
    REASON_INVALID_SPEC: "spec is invalid",
    REASON_QUERY_REJECTED: "Prometheus rejects a query",
    REASON_TARGET_NOT_FOUND: "the target Deployment is missing",
    REASON_ROUTING_INVALID: "traffic cannot be steered",
}


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- pure helpers -------------------------------------------------------------------------------


def command_of(metadata: Mapping[str, Any]) -> Command | None:
    """The command annotation as a Command (unknown kinds are ignored). Without a
    command-id annotation the command's own text is the id, so it acts once."""
    annotations = metadata.get("annotations") or {}
    text = str(annotations.get(COMMAND_ANNOTATION) or "").strip().lower()
    try:
        kind = CommandKind(text)
    except ValueError:
        return None
    return Command(kind, str(annotations.get(COMMAND_ID_ANNOTATION) or text))


def refusal_status(status: Mapping[str, Any], reason: str, problems: list[FieldError],
                   generation: int | None) -> dict[str, Any]:
    """Status for input that cannot run: progress untouched, a message and conditions naming
    the field. Pure."""
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    message = f"{_REFUSALS[reason]}, no traffic moved: {first}{more}"
    new = {**dict(status), "message": message, "observedGeneration": generation}
    detail = "; ".join(str(p) for p in problems)
    return kube_status.with_conditions(new, [(READY, False, reason, detail), (PROGRESSING, False, reason, detail)],
                                       generation)


def _canonical(value: Any) -> Any:
    """A value as the API server stores it: merge patches drop null map entries, and the
    CRD schema prunes nulls of non-nullable fields inside list items."""
    if isinstance(value, Mapping):
        return {k: _canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch from `old` (as read) to `new` (as decided): top-level keys whose stored
    form would change. Nulls in maps are kept (they delete), nulls in list items are dropped.
    Empty when nothing changes, so an idle tick writes nothing."""
    patch: dict[str, Any] = {}
    for key in set(old) | set(new):
        before, after = old.get(key), new.get(key)
        if _canonical(before) == _canonical(after) or (before is None and after in (None, {}, [])):
            continue
        patch[key] = _drop_list_nulls(after) if after is not None else None
    return patch


def _drop_list_nulls(value: Any, in_list: bool = False) -> Any:
    if isinstance(value, Mapping):
        return {k: _drop_list_nulls(v, in_list) for k, v in value.items() if not (in_list and v is None)}
    if isinstance(value, list):
        return [_drop_list_nulls(v, True) for v in value]
    return value


_WORKLOAD_STAGES = {None, *(stage.value for stage in (
    Stage.BOOTSTRAP, Stage.START_CANARY, Stage.STEP_ENTER, Stage.PROMOTE, Stage.WITHDRAW))}


def _only_measures(decision: Decision) -> bool:
    """A decision that only asks for measurements (pure reads): its status can be written
    together with the answer's, one write instead of two, without weakening restarts (a
    measurement lost in a crash is simply asked for again)."""
    return any(isinstance(a, Measure) for a in decision.actions) and all(
        isinstance(a, (Measure, RequeueAfter)) for a in decision.actions)


# --- one rollout ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TickResult:
    requeue_after: float | None
    gone: bool = False


class _Refused(Exception):
    def __init__(self, reason: str, problems: list[FieldError]) -> None:
        super().__init__(f"{reason}: {'; '.join(str(p) for p in problems)}")
        self.reason = reason
        self.problems = problems


_validated_queries: dict[tuple[str, str], str | None] = {}
_validated_lock = threading.Lock()


def query_problems(spec: Mapping[str, Any]) -> list[FieldError]:
    """Each metric query (and samples query) that Prometheus refuses as invalid, once per
    distinct (server, query): a rejected query never becomes a measurement that holds a
    canary with traffic on it. A server that cannot be reached is not a spec problem."""
    analysis = spec.get("analysis") or {}
    if not analysis.get("metrics"):
        return []
    provider = metric_providers.for_analysis(analysis)
    problems = []
    for index, metric in enumerate(analysis.get("metrics") or []):
        for key in ("query", "samplesQuery"):
            text = metric.get(key)
            if not text:
                continue
            cache_key = (repr(provider), text)
            with _validated_lock:
                known = cache_key in _validated_queries
                problem = _validated_queries.get(cache_key)
            if not known:
                result = provider.query(text)
                if result.error and not result.rejected:
                    continue  # unreachable or transient: the measurement will say so
                problem = f"Prometheus rejected it: {result.error}" if result.rejected else None
                with _validated_lock:
                    _validated_queries[cache_key] = problem
            if problem:
                problems.append(FieldError(f"spec.analysis.metrics[{index}].{key}", problem))
    return problems


class RolloutRunner:
    """Ticks of one rollout. Holds only caches; all progress is in the object's status."""

    def __init__(self, namespace: str, name: str, uid: str, *, webhooks: WebhookCaller | None = None) -> None:
        self.namespace, self.name, self.uid = namespace, name, uid
        self.webhooks = webhooks or WebhookCaller()
        self.lock = threading.Lock()
        self.finalized = False
        self.failures = 0
        self.reconciled: tuple[int | None, float] | None = None  # (generation, monotonic time)
        self.own_versions: deque[str] = deque(maxlen=8)  # resourceVersions of our own status writes
        self.stage: str | None = None  # status.progress.stage after the last tick
        self.last_refusal: str | None = None

    # -- I/O seams (unit tests replace these) ------------------------------------------------

    def read(self) -> dict[str, Any] | None:
        return kube_apply.get(API_VERSION, KIND, self.name, self.namespace)

    def write_status(self, patch: Mapping[str, Any]) -> None:
        live = kube_status.patch_status(API_VERSION, KIND, self.namespace, self.name, patch)
        version = ((live or {}).get("metadata") or {}).get("resourceVersion")
        if version:
            self.own_versions.append(str(version))

    def post(self, owner: Owner, event: Event) -> None:
        kube_events.post_event(owner, event.reason, event.message, "Warning" if event.warning else "Normal")

    def emit(self, owner: Owner, event: Event) -> None:
        """Post an Event without waiting for it: best effort, off the step's critical path."""
        _read_pool.submit(self.post, owner, event)

    def owner(self, metadata: Mapping[str, Any]) -> Owner:
        return Owner(API_VERSION, KIND, self.name, self.namespace, metadata.get("uid", ""), metadata.get("generation"))

    def router(self, spec: Mapping[str, Any], context: RolloutContext) -> Router:
        return router_for(spec, context, Workloads(context, deployments=_deployments))

    # -- the tick ------------------------------------------------------------------------------

    def tick(self) -> TickResult:
        with self.lock:
            if self.finalized:
                return TickResult(None, gone=True)
            body = self.read()
            if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                return TickResult(None, gone=True)
            try:
                result = self._tick(body)
            except _Refused as refused:
                self._refuse(body, refused.reason, refused.problems)
                return TickResult(REFUSED_RESYNC)
            self.failures = 0
            return result

    def _tick(self, body: dict[str, Any]) -> TickResult:
        metadata, spec = body["metadata"], body.get("spec") or {}
        status: dict[str, Any] = dict(body.get("status") or {})
        generation = metadata.get("generation")
        owner = self.owner(metadata)
        errors = validate_spec(spec)
        if errors:
            raise _Refused(REASON_INVALID_SPEC, errors)
        problems = query_problems(spec)
        if problems:
            raise _Refused(REASON_QUERY_REJECTED, problems)
        context = RolloutContext.from_body(body, owner)
        router = self.router(spec, context)
        workloads: Workloads = getattr(router, "workloads", None) or Workloads(context)
        observed_at = _now()
        # The four reads are independent: in parallel, so a tick costs two round trips (the
        # rollout, then these), not five, however busy the API server is.
        reads: dict[str, Future[Any]] = {
            "target": _read_pool.submit(workloads.target),
            STABLE: _read_pool.submit(workloads.copy, STABLE),
            CANARY: _read_pool.submit(workloads.copy, CANARY),
            "weights": _read_pool.submit(router.get_weights),
        }
        for future in reads.values():
            future.exception()  # wait for all of them, whatever the outcome
        target = reads["target"].result()
        if target is None:
            raise _Refused(REASON_TARGET_NOT_FOUND, [FieldError(
                "spec.targetRef.name", f"Deployment {self.namespace}/{context.target} not found")])
        try:
            self._reconcile(router, generation)
            weights = reads["weights"].result()
        except RouterError as error:
            if error.retryable:
                raise
            raise _Refused(REASON_ROUTING_INVALID, [FieldError(error.field or "spec.trafficRouting", str(error))]) from None
        self.last_refusal = None
        observation = Observation(
            target=target_state(target), stable=workloads.observe(STABLE), canary=workloads.observe(CANARY),
            weights=weights, command=command_of(metadata), observed_at=observed_at,
        )
        decision: Decision | None = None
        stored = status  # what the API server holds
        for _ in range(MAX_DECIDE_ROUNDS):
            decision = decide(spec, status, observation, _now())
            status = kube_status.with_conditions({**decision.status, "observedGeneration": generation},
                                                 conditions_for(decision.status), generation)
            if not _only_measures(decision):  # status first: it is the intent the actions carry out
                stored = self._store(stored, status)
            update_metrics(self.namespace, self.name, status)
            answers = self._execute(decision, owner, spec, router, workloads)
            if answers is None:
                break
            observation = replace(observation, measurements={**observation.measurements, **answers[0]},
                                  webhook_results={**observation.webhook_results, **answers[1]})
        self._store(stored, status)
        self.stage = (status.get("progress") or {}).get("stage")
        assert decision is not None
        return TickResult(decision.requeue_after)

    def _store(self, stored: Mapping[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        patch = status_patch(stored, status)
        if patch:
            self.write_status(patch)
        return status

    def _reconcile(self, router: Router, generation: int | None) -> None:
        """Re-apply the Paved Services and re-check the route when the spec changed, and now
        and then (cheap reads happen every tick anyway)."""
        if self.reconciled and self.reconciled[0] == generation and time.monotonic() - self.reconciled[1] < RECONCILE_EVERY:
            return
        router.reconcile()
        self.reconciled = (generation, time.monotonic())

    def _execute(self, decision: Decision, owner: Owner, spec: Mapping[str, Any], router: Router,
                 workloads: Workloads) -> tuple[dict[str, MetricMeasurement], dict[str, WebhookResult]] | None:
        """Run the actions in order; stop at the first failure (raised). Returns the answers to
        Measure/RunWebhook when there were any (decide must see them now), else None."""
        measurements: dict[str, MetricMeasurement] = {}
        results: dict[str, WebhookResult] = {}
        asked = False
        for action in decision.actions:
            if isinstance(action, Event):
                self.emit(owner, action)
            elif isinstance(action, SetWeights):
                router.set_weights(Weights(action.stable, action.canary))
            elif isinstance(action, EnsureCanary):
                workloads.ensure_canary(action.revision, action.replicas)
            elif isinstance(action, ScaleCanary):
                workloads.scale(CANARY, action.replicas)
            elif isinstance(action, ScaleStable):
                workloads.scale(STABLE, action.replicas)
            elif isinstance(action, PromoteStableTemplate):
                workloads.promote_stable(action.revision, action.replicas)
            elif isinstance(action, Measure):
                asked = True
                provider = metric_providers.for_analysis(spec.get("analysis") or {})
                for query in action.metrics:
                    measurements[query.name] = metric_providers.measure(provider, action.request_id, query,
                                                                        executor=_read_pool)
                record_measurements(self.namespace, self.name, measurements)
            elif isinstance(action, RunWebhook):
                asked = True
                results[action.key] = self.webhooks.call(RolloutRef(self.namespace, self.name), action)
        return (measurements, results) if asked else None

    def _refuse(self, body: Mapping[str, Any], reason: str, problems: list[FieldError]) -> None:
        metadata = body.get("metadata") or {}
        status = dict(body.get("status") or {})
        new_status = refusal_status(status, reason, problems, metadata.get("generation"))
        patch = status_patch(status, new_status)
        if patch:
            self.write_status(patch)
        if new_status["message"] != self.last_refusal and new_status["message"] != status.get("message"):
            self.post(self.owner(metadata), Event(reason, new_status["message"], warning=True))
        self.last_refusal = new_status["message"]

    def finalize(self, body: Mapping[str, Any]) -> None:
        """Hand traffic back before the garbage collector removes the Paved Services."""
        with self.lock:
            owner = self.owner(body.get("metadata") or {})
            self.router(body.get("spec") or {}, RolloutContext.from_body(body, owner)).finalize()
            self.finalized = True

    @property
    def waits_for_workloads(self) -> bool:
        """Whether the machine is waiting for a copy to become ready (or has not run yet):
        only then is a change of a copy worth a tick before the one already scheduled."""
        return self.stage in _WORKLOAD_STAGES

    def backoff(self) -> float:
        delay = ERROR_BACKOFF[min(self.failures, len(ERROR_BACKOFF) - 1)]
        self.failures += 1
        return delay


# --- /metrics ---------------------------------------------------------------------------------


def update_metrics(namespace: str, name: str, status: Mapping[str, Any]) -> None:
    paved_metrics.set_rollout_state(namespace, name, status.get("phase"), status.get("canaryWeight"))
    latest: dict[str, Mapping[str, Any]] = {}
    for entry in status.get("analysisHistory") or []:
        latest[str(entry.get("metric"))] = entry
    for metric, entry in latest.items():
        paved_metrics.set_rollout_verdict(namespace, name, metric, entry.get("verdict"))


def record_measurements(namespace: str, name: str, measurements: Mapping[str, MetricMeasurement]) -> None:
    for metric, measurement in measurements.items():
        paved_metrics.set_rollout_metric_value(namespace, name, metric, measurement.value)


# --- Kopf wiring ------------------------------------------------------------------------------


@dataclass
class _Slot:
    runner: RolloutRunner
    loop: asyncio.AbstractEventLoop
    wake: asyncio.Event
    target: tuple[str, str]
    target_generation: int | None = None


_deployments = DeploymentCache()  # targets and copies, fed by the Deployment watch below
_pool = ThreadPoolExecutor(max_workers=TICK_WORKERS, thread_name_prefix="rollout")
_read_pool = ThreadPoolExecutor(max_workers=READ_WORKERS, thread_name_prefix="rollout-read")
_slots: dict[str, _Slot] = {}                     # rollout uid -> its daemon's slot
_by_name: dict[tuple[str, str], str] = {}         # (namespace, rollout name) -> uid
_by_target: dict[tuple[str, str], set[str]] = {}  # (namespace, target Deployment) -> uids


def _retarget(uid: str, slot: _Slot, target: tuple[str, str]) -> None:
    if slot.target == target:
        return
    _by_target.get(slot.target, set()).discard(uid)
    _deployments.forget(*slot.target)
    slot.target = target
    _by_target.setdefault(target, set()).add(uid)


def _timed_tick(runner: RolloutRunner, due: float | None) -> TickResult:
    """One tick in a worker thread; a scheduled tick records how late it started (including
    the wait for a free worker), every tick how long it took."""
    if due is not None:
        paved_metrics.ROLLOUT_TICK_LATENESS.observe(max(0.0, time.monotonic() - due))
    with paved_metrics.ROLLOUT_TICK_DURATION.time():
        return runner.tick()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5.0)
async def rollout_daemon(namespace: str | None, name: str, uid: str, spec: kopf.Spec,
                         stopped: kopf.DaemonStopped, logger: kopf.Logger, **_: Any) -> None:
    """Tick whenever the machine asked to (RequeueAfter) or a watch event arrived."""
    namespace = namespace or "default"
    loop = asyncio.get_running_loop()
    runner = RolloutRunner(namespace, name, uid)
    slot = _Slot(runner, loop, asyncio.Event(), ("", ""))
    _slots[uid] = slot
    _by_name[(namespace, name)] = uid
    due: float | None = None  # when a scheduled tick was asked for; None for a woken one
    try:
        while not stopped:
            _retarget(uid, slot, (namespace, str((spec.get("targetRef") or {}).get("name") or "")))
            slot.wake.clear()
            try:
                result = await loop.run_in_executor(_pool, _timed_tick, runner, due)
            except (ApiError, ProviderError, OSError) as error:
                result = TickResult(runner.backoff())
                logger.warning(f"rollout tick failed, retrying in {result.requeue_after:g}s: {describe(error)}")
            except Exception as error:  # noqa: BLE001 - a daemon must survive any bug in one tick
                result = TickResult(runner.backoff())
                # Kopf's per-object logger posts an Event: the error by type and place only there,
                # the frames in the operator's log.
                logger.error(f"rollout tick crashed, retrying in {result.requeue_after:g}s: {describe(error)}")
                log.error("rollout %s/%s: tick crashed:\n%s", namespace, name, safe_traceback(error))
            if result.gone or stopped:
                return
            delay = result.requeue_after if result.requeue_after is not None else IDLE_RESYNC
            due = time.monotonic() + delay
            try:
                await asyncio.wait_for(slot.wake.wait(), timeout=delay)
                await asyncio.sleep(WAKE_DEBOUNCE)
                due = None
            except asyncio.TimeoutError:
                pass
    finally:
        _slots.pop(uid, None)
        if _by_name.get((namespace, name)) == uid:
            del _by_name[(namespace, name)]
        _by_target.get(slot.target, set()).discard(uid)
        for deployment in (slot.target[1], *(f"{slot.target[1]}-{role}" for role in (STABLE, CANARY))):
            _deployments.forget(namespace, deployment)  # no longer watched for: never serve it stale


@kopf.on.event(GROUP, VERSION, PLURAL)
async def rollout_changed(uid: str, meta: kopf.Meta, **_: Any) -> None:
    """Wake the daemon on a spec or annotation change; not on our own status writes."""
    slot = _slots.get(uid)
    if slot is not None and meta.get("resourceVersion") not in slot.runner.own_versions:
        slot.wake.set()


@kopf.on.event("apps", "v1", "deployments")
async def deployment_changed(type: str | None, event: kopf.RawEvent, namespace: str | None, name: str,
                             labels: kopf.Labels, meta: kopf.Meta, **_: Any) -> None:
    """Keep the Deployment cache of targets and copies current (ticks then read no
    Deployment from the API server), and wake the rollouts whose target's spec changed (a new
    pod template starts a rollout), or whose stable/canary copy changed while the machine
    waits for it to become ready. Other events (the target's own pods, a copy's status
    during a pause) wait for the tick already scheduled: with hundreds of rollouts they
    would otherwise multiply the reads."""
    namespace = namespace or ""
    targeted = _by_target.get((namespace, name), set())
    owner = labels.get(ROLLOUT_LABEL)
    owner_uid = _by_name.get((namespace, owner)) if owner else None
    if not targeted and owner_uid is None:
        return
    if type == "DELETED":
        _deployments.absent(namespace, name)
    elif isinstance(event.get("object"), dict):
        _deployments.offer(event["object"])
    generation = meta.get("generation")
    for uid in list(targeted):
        slot = _slots.get(uid)
        if slot is not None and slot.target_generation != generation:
            slot.target_generation = generation
            slot.wake.set()
    slot = _slots.get(owner_uid) if owner_uid else None
    if slot is not None and slot.runner.waits_for_workloads:
        slot.wake.set()


@kopf.on.delete(GROUP, VERSION, PLURAL, retries=10, backoff=5)
def finalize_rollout(body: kopf.Body, uid: str, namespace: str | None, name: str, **_: Any) -> None:
    """Hand the route back to the user's Service; the cluster deletes the rest."""
    namespace = namespace or "default"
    slot = _slots.get(uid)
    runner = slot.runner if slot else RolloutRunner(namespace, name, uid)
    try:
        runner.finalize(dict(body))
    except RouterError as error:
        if error.retryable:
            raise kopf.TemporaryError(str(error), delay=5) from None
        log.warning("rollout %s/%s: route not handed back: %s", namespace, name, error)
    paved_metrics.forget_rollout(namespace, name)
