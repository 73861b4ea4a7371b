"""One ProgressiveRollout's ticks: the thin loop around the pure state machine (paved.rollout).

One *tick* (`RolloutRunner.tick`, synchronous, in a worker thread of the rollout engine):

    read the rollout (fresh: status is the machine's memory, a cached copy could be stale)
    refuse bad input with a condition naming the field, moving nothing (paved.rollout.refuse):
        spec (schema, CEL, weights), or no
          Prometheus address and no default  -> InvalidSpec
        an analysis template missing,
          invalid, or an argument without
          a value (not while a canary run
          measures its snapshot)             -> AnalysisTemplateInvalid
        a Prometheus address, webhook or
          notification URL
          at a link-local address or the
          Kubernetes API server (without an
          AnyEndpoint allowance)             -> EndpointRefused (paved.policy.endpoints)
        a Secret/ConfigMap key that
          spec.analysis.prometheus names
          is missing                         -> CredentialsMissing
        a query Prometheus rejects           -> QueryRejected
        the target Deployment is missing     -> TargetNotFound
        the route/Service cannot be steered  -> RoutingInvalid
        spec.autoscalerRef names no HPA of
          the target                         -> AutoscalerInvalid
    observe: target revision/replicas, stable and canary workloads, route weights, command
      (in parallel; Deployments come from a cache fed by the Deployment watch and by
      Paved's own writes, never older than Paved's last write, see DeploymentCache)
    decide -> write status (first: it is the intent) -> execute the actions in order,
    stopping at the first failure; a Measure or RunWebhook is answered at once and
    `decide` called again with the answers (bounded); else sleep until RequeueAfter.

Measurement-only decisions are written together with their answers (one status write, not
two), and Events and notifications are sent off the critical path (notifications once, in
order, through the rollout's Outbox; a failed one is only reported).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from paved import API_VERSION
from paved import metrics as paved_metrics
from paved.api.common import PROGRESSING, READY
from paved.api.platform import nothing_allowed
from paved.api.rollout import ProgressiveRolloutStatus
from paved.errors import describe
from paved.kube import apply as kube_apply
from paved.kube import events as kube_events
from paved.kube import status as kube_status
from paved.kube.status import StatusWriter
from paved.providers import egress as egresses
from paved.providers import metrics as metric_providers
from paved.providers.base import Owner
from paved.providers.egress import Egress
from paved.providers.routing import (
    CANARY, COMMAND_ANNOTATION, COMMAND_ID_ANNOTATION, STABLE, RolloutContext, Router, RouterError, router_for,
)
from paved.providers.routing.autoscalers import Autoscalers, autoscalers_for
from paved.providers.routing.workloads import DeploymentCache, Workloads, target_state
from paved.providers.webhooks import RolloutRef, WebhookCaller
from paved.engines.rollout import sources
from paved.engines.rollout.outbox import Outbox
from paved.rollout import templates
from paved.rollout import (
    REASON_AUTOSCALER_INVALID, REASON_ENDPOINT_REFUSED, REASON_INVALID_SPEC,
    REASON_QUERY_REJECTED, REASON_ROUTING_INVALID, REASON_TARGET_NOT_FOUND, REASON_TEMPLATE_INVALID,
    Command, CommandKind, Decision, EnsureCanary, Event, FieldError, Measure, MetricMeasurement, Notify, Observation,
    PromoteStableTemplate, RemoveAutoscalers, RequeueAfter, RunWebhook, ScaleCanary, ScaleOriginal, ScaleStable, SetAutoscaler, SetWeights, Stage,
    WebhookResult, Weights, conditions_for, decide, refuse, restore_on_delete, validate_spec,
)

KIND = "ProgressiveRollout"
log = logging.getLogger(__name__)
AllowanceSource = Callable[[str, str | None], Mapping[str, list[str]]]  # (kind, namespace) -> allowed

# Every tick writes the rollout's whole status (all of it but other writers' conditions).
ROLLOUT_STATUS = StatusWriter.of_model("paved-rollout", ProgressiveRolloutStatus, {READY, PROGRESSING})

REFUSED_RESYNC = 10.0     # seconds between re-checks of refused input (a route fixed in place)
RECONCILE_EVERY = 300.0   # seconds between re-applies of the Paved Services (and route checks)
MAX_DECIDE_ROUNDS = 6     # decide calls per tick (the first, plus answers to Measure/RunWebhook)
ERROR_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


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

def endpoint_problems(namespace: str, spec: Mapping[str, Any], egress: Egress) -> list[FieldError]:
    """Each URL of the spec that Paved must not call for this namespace (paved.policy.endpoints),
    judged by what its host resolves to now."""
    urls = [("spec.analysis.prometheus.address", ((spec.get("analysis") or {}).get("prometheus") or {}).get("address"))]
    urls += [(f"spec.webhooks[{index}].url", hook.get("url")) for index, hook in enumerate(spec.get("webhooks") or [])]
    urls += [(f"spec.notifications[{index}].url", note.get("url"))
             for index, note in enumerate(spec.get("notifications") or [])]
    problems = []
    for field, url in urls:
        problem = egress.refusal(url) if isinstance(url, str) else None
        if problem:
            problems.append(FieldError(field, (
                f"{problem}; Paved does not call it on behalf of a namespace: point it elsewhere, or ask the platform "
                f"team for an IntentPolicy that allows AnyEndpoint to ProgressiveRollouts in namespace {namespace}")))
    return problems


def query_problems(spec: Mapping[str, Any], egress: Egress = egresses.STRICT) -> list[FieldError]:
    """Each metric query (and samples query) that Prometheus refuses as invalid (asked once per
    distinct server and query: paved.providers.metrics.rejection)."""
    analysis = spec.get("analysis") or {}
    if not analysis.get("metrics"):
        return []
    provider = metric_providers.for_analysis(analysis, egress)
    problems = []
    for index, metric in enumerate(analysis.get("metrics") or []):
        for key in ("query", "samplesQuery"):
            text = metric.get(key)
            problem = metric_providers.rejection(provider, text) if text else None
            if problem:
                problems.append(FieldError(f"spec.analysis.metrics[{index}].{key}", problem))
    return problems


class RolloutRunner:
    """Ticks of one rollout. Holds only caches; all progress is in the object's status."""

    def __init__(self, namespace: str, name: str, uid: str, *, webhooks: WebhookCaller | None = None,
                 reads: Executor | None = None, notifications: Executor | None = None,
                 deployments: DeploymentCache | None = None,
                 allowances: AllowanceSource = lambda kind, namespace: nothing_allowed(),
                 default_prometheus: str | None = None) -> None:
        self.namespace, self.name, self.uid = namespace, name, uid
        self.default_prometheus = default_prometheus  # `paved run --prometheus-address`
        self.allowances = allowances
        self.webhooks = webhooks or WebhookCaller()
        # The engine's shared pool and cache; a runner of its own (unit tests) gets private ones.
        self.reads = reads or ThreadPoolExecutor(max_workers=4, thread_name_prefix="rollout-read")
        self.deployments = deployments or DeploymentCache()
        self.lock = threading.Lock()
        self.finalized = False
        self.failures = 0
        self.reconciled: tuple[int | None, float] | None = None  # (generation, monotonic time)
        self.own_versions: deque[str] = deque(maxlen=8)  # resourceVersions of our own status writes
        self.stage: str | None = None  # status.progress.stage after the last tick
        self.last_refusal: str | None = None
        self.notified: deque[str] = deque(maxlen=32)  # keys of notifications sent: never one twice
        # Notifications, in order, off the critical path, on a pool ticks never wait for.
        self.notifications = notifications or ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout-notify")
        self.outbox = Outbox(self.notifications)

    # -- I/O seams (unit tests replace these) ------------------------------------------------

    def read(self) -> dict[str, Any] | None:
        return kube_apply.get(API_VERSION, KIND, self.name, self.namespace)

    def write_status(self, shown: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any] | None:
        """Apply the rollout's status (ROLLOUT_STATUS) onto the object as last `shown`; the
        object written (None: it showed that status already, nothing was sent)."""
        live = ROLLOUT_STATUS.write(shown, status)
        version = ((live or {}).get("metadata") or {}).get("resourceVersion")
        if version:
            self.own_versions.append(str(version))
        return live

    def post(self, owner: Owner, event: Event) -> None:
        kube_events.post_event(owner, event.reason, event.message, "Warning" if event.warning else "Normal")

    def emit(self, owner: Owner, event: Event) -> None:
        """Post an Event without waiting for it: best effort, off the step's critical path."""
        self.reads.submit(self.post, owner, event)

    def notify(self, owner: Owner, action: Notify, egress: Egress) -> None:
        """Send one notification, once: a failure is logged by type and posted as a Warning
        Event naming the field (never the URL: a chat webhook's URL is its credential), and
        changes nothing else."""
        try:
            result = self.webhooks.notify(RolloutRef(self.namespace, self.name), action, egress)
        except Exception as error:  # noqa: BLE001 - a notification never fails the rollout
            log.warning("rollout %s/%s: %s notification %d not sent: %s", self.namespace, self.name, action.event,
                        action.index, describe(error))
            return
        if not result.ok:
            field = f"spec.notifications[{action.index}].url"
            log.warning("rollout %s/%s: %s notification to %s failed: %s", self.namespace, self.name, action.event,
                        field, result.detail)
            self.post(owner, Event("NotificationFailed", f"{field}: {action.event} notification not delivered: "
                                                         f"{result.detail}", warning=True))

    def owner(self, metadata: Mapping[str, Any]) -> Owner:
        return Owner(API_VERSION, KIND, self.name, self.namespace, metadata.get("uid", ""), metadata.get("generation"))

    def router(self, spec: Mapping[str, Any], context: RolloutContext) -> Router:
        return router_for(spec, context, Workloads(context, deployments=self.deployments))

    def read_source(self, kind: str, name: str) -> Mapping[str, Any] | None:
        return sources.kube_read(self.namespace)(kind, name)

    def read_template(self, kind: str, name: str) -> Mapping[str, Any] | None:
        return kube_apply.get(API_VERSION, kind, name, self.namespace if kind == templates.NAMESPACED else None)

    def with_templates(self, spec: Mapping[str, Any], status: Mapping[str, Any]
                       ) -> tuple[Mapping[str, Any], Any, templates.Resolution | None]:
        """The spec the machine runs (templates' metrics joined in), the templates used, and the
        fresh resolution when one was read: a canary run in flight measures its snapshot in
        status and reads nothing; otherwise the templates are read now (a missing one, an
        invalid one or an argument without a value refuses the rollout, naming the field)."""
        snapshot = templates.in_force(spec, status)
        if snapshot is not None:
            uses = snapshot.get("templates")
            return templates.effective_spec(spec, snapshot.get("metrics"), uses), uses, None
        keys = [ref.key for ref in templates.references(spec)]
        if not keys:
            return spec, (), None
        read = dict(zip(keys, self.reads.map(lambda key: self.read_template(*key), keys)))
        fresh = templates.resolve(spec, read, self.namespace)
        if fresh.problems:
            raise _Refused(REASON_TEMPLATE_INVALID, list(fresh.problems))
        return templates.effective_spec(spec, fresh.metrics, fresh.uses), fresh.uses, fresh

    def calling_spec(self, spec: Mapping[str, Any]) -> Mapping[str, Any]:
        """`spec` with analysis.prometheus as the provider calls it (the default address, the
        values of the Secrets it names): only for calls, never written anywhere."""
        analysis = spec.get("analysis")
        if not analysis or not analysis.get("metrics"):
            return spec
        try:
            source = sources.resolve_prometheus(analysis, self.namespace, self.default_prometheus, self.read_source)
        except sources.SourceProblems as missing:
            raise _Refused(missing.reason, missing.problems) from None
        return {**spec, "analysis": {**analysis, "prometheus": source}}

    def egress(self) -> Egress:
        """Where this rollout's URLs may point: anywhere only if an IntentPolicy allows AnyEndpoint."""
        return egresses.for_allowance(bool(self.allowances(KIND, self.namespace).get("anyEndpoint")))

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
        run_spec, uses, fresh = self.with_templates(spec, status)
        errors = templates.relocate(validate_spec(run_spec), spec, uses) if uses else []  # the joined spec, checked too
        if errors:
            raise _Refused(REASON_INVALID_SPEC, errors)
        egress = self.egress()
        calling = self.calling_spec(run_spec)
        refused = endpoint_problems(self.namespace, calling, egress)
        if refused:
            raise _Refused(REASON_ENDPOINT_REFUSED, refused)
        problems = templates.relocate(query_problems(calling, egress), spec, uses)
        if problems:
            raise _Refused(REASON_QUERY_REJECTED, problems)
        context = RolloutContext.from_body(body, owner)
        router = self.router(spec, context)
        workloads: Workloads = getattr(router, "workloads", None) or Workloads(context)
        autoscalers = autoscalers_for(spec, context)
        # The copies' HPAs are read while the spec asks for them, and after it stopped until
        # status no longer records any (the machine then has them removed).
        read_copies = autoscalers.name is not None or bool((status.get("progress") or {}).get("autoscalers"))
        observed_at = _now()
        # The reads are independent: in parallel, so a tick costs two round trips (the
        # rollout, then these), not one per read, however busy the API server is.
        reads: dict[str, Future[Any]] = {
            "target": self.reads.submit(workloads.target),
            STABLE: self.reads.submit(workloads.copy, STABLE),
            CANARY: self.reads.submit(workloads.copy, CANARY),
            "weights": self.reads.submit(router.get_weights),
            "autoscaler": self.reads.submit(autoscalers.user),
            "copy_autoscalers": self.reads.submit(autoscalers.copies if read_copies else lambda: None),
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
        autoscaler_problem = autoscalers.problem()
        if autoscaler_problem:
            raise _Refused(REASON_AUTOSCALER_INVALID, [FieldError("spec.autoscalerRef.name", autoscaler_problem)])
        self.last_refusal = None
        observation = Observation(
            autoscaler=autoscalers.observe(), copy_autoscalers=reads["copy_autoscalers"].result(),
            target=target_state(target), stable=workloads.observe(STABLE), canary=workloads.observe(CANARY),
            weights=weights, command=command_of(metadata), observed_at=observed_at,
        )
        decision: Decision | None = None
        shown: Mapping[str, Any] = body  # the rollout as the API server holds it
        for _ in range(MAX_DECIDE_ROUNDS):
            decision = decide(run_spec, status, observation, _now())
            decided = templates.record(spec, decision.status, fresh)  # a run that started keeps what it measures
            status = kube_status.with_conditions({**decided, "observedGeneration": generation},
                                                 conditions_for(decided), generation)
            if not _only_measures(decision):  # status first: it is the intent the actions carry out
                shown = self._store(shown, status)
            update_metrics(self.namespace, self.name, status)
            answers = self._execute(decision, owner, calling, router, workloads, egress, autoscalers)
            if answers is None:
                break
            observation = replace(observation, measurements={**observation.measurements, **answers[0]},
                                  webhook_results={**observation.webhook_results, **answers[1]})
        self._store(shown, status)
        self.stage = (status.get("progress") or {}).get("stage")
        assert decision is not None  # noqa: S101
        return TickResult(decision.requeue_after)

    def _store(self, shown: Mapping[str, Any], status: dict[str, Any]) -> Mapping[str, Any]:
        """Write `status` unless `shown` holds it already; the rollout as it is now."""
        return self.write_status(shown, status) or shown

    def _reconcile(self, router: Router, generation: int | None) -> None:
        """Re-apply the Paved Services and re-check the route when the spec changed, and now
        and then (cheap reads happen every tick anyway)."""
        if self.reconciled and self.reconciled[0] == generation and time.monotonic() - self.reconciled[1] < RECONCILE_EVERY:
            return
        router.reconcile()
        self.reconciled = (generation, time.monotonic())

    def _execute(self, decision: Decision, owner: Owner, spec: Mapping[str, Any], router: Router,
                 workloads: Workloads, egress: Egress,
                 autoscalers: Autoscalers | None = None) -> tuple[dict[str, MetricMeasurement], dict[str, WebhookResult]] | None:
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
            elif isinstance(action, ScaleOriginal):
                workloads.scale_original(action.replicas, action.remember)
            elif isinstance(action, SetAutoscaler) and autoscalers is not None:
                autoscalers.apply(action.role, action.min_replicas, action.max_replicas)
            elif isinstance(action, RemoveAutoscalers) and autoscalers is not None:
                autoscalers.remove()
            elif isinstance(action, Measure):
                asked = True
                provider = metric_providers.for_analysis(spec.get("analysis") or {}, egress)
                for query in action.metrics:
                    measurements[query.name] = metric_providers.measure(provider, action.request_id, query,
                                                                        executor=self.reads)
                record_measurements(self.namespace, self.name, measurements)
            elif isinstance(action, RunWebhook):
                asked = True
                results[action.key] = self.webhooks.call(RolloutRef(self.namespace, self.name), action, egress)
            elif isinstance(action, Notify) and action.key not in self.notified:
                self.notified.append(action.key)
                self.outbox.put(functools.partial(self.notify, owner, action, egress),
                                f"rollout {self.namespace}/{self.name}: {action.event} notification")
        return (measurements, results) if asked else None

    def _refuse(self, body: Mapping[str, Any], reason: str, problems: list[FieldError]) -> None:
        """Write the refusal the core decides (paved.rollout.refuse) and post its Event once."""
        metadata = body.get("metadata") or {}
        status = dict(body.get("status") or {})
        generation = metadata.get("generation")
        refusal = refuse(status, reason, problems)
        new_status = kube_status.with_conditions({**refusal.status, "observedGeneration": generation},
                                                 refusal.conditions, generation)
        self.write_status(body, new_status)
        if refusal.event is not None and refusal.message != self.last_refusal:
            self.post(self.owner(metadata), refusal.event)
        self.last_refusal = refusal.message

    def finalize(self, body: Mapping[str, Any]) -> None:
        """Hand traffic back before the garbage collector removes the Paved Services, and the
        user's replicas back to their Deployment if Paved scaled it down, before the copies go."""
        with self.lock:
            owner = self.owner(body.get("metadata") or {})
            context = RolloutContext.from_body(body, owner)
            router = self.router(body.get("spec") or {}, context)
            router.finalize()
            workloads: Workloads = getattr(router, "workloads", None) or Workloads(context)
            target = workloads.target()
            restore = restore_on_delete(target_state(target)) if target is not None else None
            if restore is not None:
                workloads.scale_original(restore.replicas, restore.remember)
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

