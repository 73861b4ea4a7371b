"""ProgressiveRollout: canary releases of a native Deployment, decided by metrics.

All progress lives in status (step index, weight, check counters, capped history), so a
restarted operator continues exactly where it stopped, and `status.message` says in one
sentence why the rollout is where it is.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from paved.api.common import IntentStatus, Model
from paved.api.fields import (
    EXPRESSION_MAX,
    HTTP_URL_PATTERN,
    NAME_MAX,
    QUERY_MAX,
    TEXT_MAX,
    URL_MAX,
    CelRule,
    ConfigMapKeySelector,
    DNSLabel,
    Duration,
    FieldGroup,
    ObjectName,
    RuledModel,
    SecretKeySelector,
    Timestamp,
    UniqueBy,
)

ANALYSIS_HISTORY_LIMIT = 50
"""status.analysisHistory keeps at most this many measurements, newest last."""

MAX_STEPS = 100
MAX_METRICS = 32
"""Metrics of one rollout: its own, and with those of its templates."""

WEIGHT_HISTORY_LIMIT = 2 * MAX_STEPS + 4
"""status.weightHistory keeps at most this many weight changes: one per step of the most steps
allowed, and the way back, fits with room."""

Weight = Annotated[int, Field(ge=0, le=100)]
Phase = Literal["Initializing", "Progressing", "Paused", "Promoting", "Succeeded", "RolledBack", "Failed"]
Verdict = Literal["Successful", "Failed", "Inconclusive", "Error"]
WebhookType = Literal["pre-rollout", "rollout", "confirm-promotion", "post-rollout", "rollback"]
TemplateKind = Literal["AnalysisTemplate", "ClusterAnalysisTemplate"]
NotificationEvent = Literal["Started", "StepStarted", "Paused", "Promoted", "RolledBack"]
NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = ("Started", "StepStarted", "Paused", "Promoted", "RolledBack")


OriginalScaleDown = Literal["Never", "OnSuccess", "Progressively"]


class TargetRef(Model):
    """The workload to roll out (Kubernetes' `scaleTargetRef` shape); only a Deployment."""

    apiVersion: Literal["apps/v1"] = Field(default="apps/v1", description="API version of the target: apps/v1.")
    kind: Literal["Deployment"] = Field(default="Deployment", description="Kind of the target: Deployment.")
    name: ObjectName = Field(description="Name of the Deployment (same namespace).")


class AutoscalerRef(Model):
    """The user's HorizontalPodAutoscaler of the target (Flagger's `autoscalerRef`)."""

    apiVersion: Literal["autoscaling/v2"] = Field(
        default="autoscaling/v2", description="API version of the autoscaler: autoscaling/v2.")
    kind: Literal["HorizontalPodAutoscaler"] = Field(
        default="HorizontalPodAutoscaler", description="Kind of the autoscaler: HorizontalPodAutoscaler.")
    name: ObjectName = Field(description="Name of the HorizontalPodAutoscaler (same namespace).")


class ServicePort(Model):
    """The Service clients use; Paved derives the stable and canary Services from it."""

    name: DNSLabel = Field(description="Name of the Service in front of the Deployment.")
    port: int = Field(ge=1, le=65535, description="Service port receiving the traffic.")


class GatewayAPIRouting(Model):
    """Weights on a Gateway API HTTPRoute; Paved changes only the backendRefs it owns."""

    httpRoute: ObjectName = Field(description="Name of the HTTPRoute that references the Service.")
    namespace: DNSLabel | None = Field(
        default=None, description="Namespace of the HTTPRoute; absent means the rollout's."
    )


class ReplicaRatioRouting(Model):
    """No router: the weight is approximated by the ratio of canary to stable replicas."""


class TrafficRouting(RuledModel):
    """How traffic is split between stable and canary; exactly one router."""

    field_groups = (FieldGroup(("gatewayAPI", "replicaRatio")),)

    gatewayAPI: GatewayAPIRouting | None = Field(default=None, description="Gateway API HTTPRoute weights.")
    replicaRatio: ReplicaRatioRouting | None = Field(
        default=None, description="Replica-ratio approximation (no router)."
    )


class PauseStep(Model):
    """Wait before the next step."""

    duration: Duration | None = Field(default=None, description="How long; absent means until `paved rollout promote`.")


class TemplateName(Model):
    """An AnalysisTemplate of the rollout's namespace, or a ClusterAnalysisTemplate (Argo's reference)."""

    templateName: ObjectName = Field(description="Name of the template.")
    clusterScope: bool = Field(
        default=False, description="true: a ClusterAnalysisTemplate; false: an AnalysisTemplate of the rollout's namespace.")


class AnalysisStep(Model):
    """Run the analysis now and wait for a verdict."""

    metrics: list[DNSLabel] | None = Field(
        default=None, max_length=32,
        description="Names of spec.analysis.metrics (or of a referenced template's metrics) to run; absent (and no "
                    "templates) means all.")
    templates: list[TemplateName] | None = Field(
        default=None, max_length=8,
        description="Run the metrics of these templates (each listed in spec.analysis.templates, which gives its "
                    "arguments), with those named in metrics.")


class Step(RuledModel):
    """One step of the rollout; exactly one action."""

    field_groups = (FieldGroup(("setWeight", "pause", "analysis")),)

    setWeight: Weight | None = Field(default=None, description="Send this percentage of traffic to the canary.")
    pause: PauseStep | None = Field(default=None, description="Pause for a duration, or until promoted.")
    analysis: AnalysisStep | None = Field(default=None, description="Run metric analysis as a gate.")


class SecretKeyRef(Model):
    """A value kept in a Secret of the rollout's namespace."""

    secretKeyRef: SecretKeySelector = Field(description="The Secret and the key inside its data.")


class BasicAuth(Model):
    """HTTP basic authentication; both parts come from Secrets of the rollout's namespace."""

    username: SecretKeyRef = Field(description="The user name.")
    password: SecretKeyRef = Field(description="The password.")


class PrometheusAuth(RuledModel):
    """How Paved authenticates to Prometheus; exactly one way."""

    field_groups = (FieldGroup(("bearerToken", "basic")),)

    bearerToken: SecretKeyRef | None = Field(default=None, description="Sent as `Authorization: Bearer <token>`.")
    basic: BasicAuth | None = Field(default=None, description="Sent as HTTP basic authentication.")


class CertificateAuthority(RuledModel):
    """PEM certificates Paved trusts for the server's certificate; exactly one source."""

    field_groups = (FieldGroup(("secretKeyRef", "configMapKeyRef")),)

    secretKeyRef: SecretKeySelector | None = Field(default=None, description="A key of a Secret holding the PEM.")
    configMapKeyRef: ConfigMapKeySelector | None = Field(default=None, description="A key of a ConfigMap holding the PEM.")


class PrometheusTLS(Model):
    """TLS settings for an https address."""

    ca: CertificateAuthority | None = Field(
        default=None, description="Trust only these CAs (instead of the operator's system CAs) for the server's certificate.")


class HTTPHeader(Model):
    """One HTTP header sent with every query (not for credentials: use auth)."""

    name: str = Field(pattern=r"^[A-Za-z0-9-]+$", max_length=NAME_MAX, description="Header name, e.g. X-Scope-OrgID.")
    value: str = Field(max_length=TEXT_MAX, description="Header value.")


class PrometheusSource(Model):
    """The Prometheus server queried for metrics."""

    address: str | None = Field(
        default=None, pattern=HTTP_URL_PATTERN, max_length=URL_MAX,
        description="Base URL, e.g. http://prometheus.monitoring:9090. Default: the operator's "
                    "`paved run --prometheus-address` (PAVED_PROMETHEUS_ADDRESS).")
    auth: PrometheusAuth | None = Field(default=None, description="Credentials, from Secrets of the rollout's namespace.")
    tls: PrometheusTLS | None = Field(default=None, description="TLS settings for an https address.")
    headers: Annotated[list[HTTPHeader], UniqueBy("name")] = Field(
        default_factory=list, max_length=32, description="Extra headers sent with every query (e.g. a tenant header of a Prometheus proxy).")

    @model_validator(mode="after")
    def _credentials_go_in_auth(self) -> Self:
        if any(header.name.lower() in ("authorization", "host") for header in self.headers):
            raise ValueError("headers: Authorization and Host cannot be set here; use auth (its value then comes from a Secret)")
        return self


class Metric(RuledModel):
    """One health check of the canary: a PromQL instant query judged by CEL conditions."""

    cel_rules = (
        CelRule(
            "!has(self.minSamples) || self.minSamples == 0 || has(self.samplesQuery)", "minSamples needs samplesQuery"
        ),
    )

    name: DNSLabel = Field(description="Metric name, used in steps, status and messages.")
    query: str = Field(
        min_length=1, max_length=QUERY_MAX, description="PromQL instant query; the result is `result` in the conditions."
    )
    successCondition: str = Field(
        min_length=1, max_length=EXPRESSION_MAX,
        description="CEL over `result`; true means this measurement passed, e.g. result >= 0.95.",
    )
    failureCondition: str | None = Field(
        default=None, max_length=EXPRESSION_MAX,
        description="CEL over `result`; true means a severe breach that rolls back at once.",
    )
    failureLimit: int = Field(default=1, ge=1, description="Failed measurements that trigger a rollback.")
    minSamples: int = Field(
        default=0, ge=0, description="Samples (from samplesQuery) required before a measurement counts."
    )
    samplesQuery: str | None = Field(
        default=None, max_length=QUERY_MAX, description="PromQL giving the sample count, e.g. the request count."
    )
    noData: Literal["hold", "fail", "pass"] = Field(
        default="hold", description="When the query returns nothing: hold (extend the step), fail or pass."
    )
    maxHolds: int = Field(
        default=5, ge=1, description="Consecutive inconclusive results allowed before the rollout pauses with the reason."
    )
    warmup: Duration = Field(default="0s", description="Ignore measurements this long after a step starts.")
    interval: Duration | None = Field(default=None, description="Measurement interval; default spec.analysis.interval.")

    @model_validator(mode="after")
    def _samples_need_query(self) -> Self:
        if self.minSamples and not self.samplesQuery:
            raise ValueError("minSamples needs samplesQuery")
        return self


ARGUMENT_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
ARGUMENT_VALUE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
"""Argument values are single-line text: a control character has no business in a label value."""


class Argument(Model):
    """A value for one argument of an analysis template."""

    name: str = Field(pattern=ARGUMENT_NAME_PATTERN, max_length=63, description="Argument name, as the template declares it.")
    value: str = Field(
        pattern=ARGUMENT_VALUE_PATTERN, max_length=TEXT_MAX,
        description="The value; it replaces `{{args.NAME}}` inside a quoted string of the template's queries, "
                    "escaped so that it stays one string (regex-escaped too after =~ or !~).")


class TemplateReference(TemplateName):
    """A template whose metrics join this rollout's analysis, with values for its arguments."""

    args: Annotated[list[Argument], UniqueBy("name")] = Field(
        default_factory=list, max_length=32,
        description="Values for the template's arguments; each argument without a default needs one.")


class Analysis(Model):
    """Metrics measured during every step and at analysis steps."""

    prometheus: PrometheusSource | None = Field(
        default=None, description="Where the metrics come from (also those of templates). Default: the operator's "
                                  "default Prometheus.")
    interval: Duration = Field(default="30s", description="Time between measurements.")
    metrics: Annotated[list[Metric], UniqueBy("name")] = Field(
        default_factory=list, max_length=MAX_METRICS, description="The checks.")
    templates: list[TemplateReference] = Field(
        default_factory=list, max_length=8,
        description="AnalysisTemplates and ClusterAnalysisTemplates whose metrics are measured like those in metrics. "
                    "A canary run keeps the templates as they were when it started (status.analysisTemplates): "
                    "editing a template changes the next run, not this one.")

    @model_validator(mode="after")
    def _templates_once(self) -> Self:
        seen = [(t.clusterScope, t.templateName) for t in self.templates]
        for index, key in enumerate(seen):
            if key in seen[:index]:
                raise ValueError(f"templates[{index}]: template {key[1]!r} is referenced twice")
        return self


class Webhook(Model):
    """An HTTP call at a point of the rollout; a non-2xx answer or a timeout is a failed check."""

    name: DNSLabel = Field(description="Webhook name.")
    type: WebhookType = Field(description="When it is called.")
    url: str = Field(pattern=HTTP_URL_PATTERN, max_length=URL_MAX, description="URL receiving a POST with the rollout's state.")
    timeout: Duration = Field(default="10s", description="Time allowed for an answer.")


class Notification(Model):
    """A message POSTed at transitions of the rollout (Slack-compatible JSON: `text` plus fields).

    Sent once per transition, never retried: a failed notification is a Warning Event, and
    never holds up or fails the rollout. The same endpoint rules as spec.webhooks apply."""

    url: str = Field(pattern=HTTP_URL_PATTERN, max_length=URL_MAX,
                     description="URL receiving a POST with `text` (one sentence) and the rollout's state.")
    events: list[NotificationEvent] = Field(
        default_factory=lambda: list(NOTIFICATION_EVENTS), min_length=1, max_length=len(NOTIFICATION_EVENTS),
        description="Transitions that send a message: Started, StepStarted, Paused (an indefinite pause step, or "
                    "analysis inconclusive maxHolds times in a row), "
                    "Promoted, RolledBack (also when it ends Failed); absent means all of them. Each is sent once per "
                    "transition, whatever the list repeats.")
    timeout: Duration = Field(default="5s", description="Time allowed for an answer.")


class ProgressiveRolloutSpec(RuledModel):
    """Roll a Deployment's new pod template out as a canary, step by step, judged by metrics.

    Give either steps, or the shorthand maxWeight + stepWeight + stepInterval.
    """

    field_groups = (
        FieldGroup(("steps", "maxWeight"), text="set either steps or the maxWeight/stepWeight/stepInterval shorthand"),
        FieldGroup(("maxWeight", "stepWeight", "stepInterval"), "all-or-none"),
    )

    targetRef: TargetRef = Field(description="The Deployment (same namespace) to roll out.")
    originalScaleDown: OriginalScaleDown = Field(
        default="Never",
        description=(
            "What happens to the replicas of the user's Deployment once Paved's stable copy serves: Never (keep "
            "them), OnSuccess (scale it to 0 once the stable copy is ready at full scale), Progressively (scale it "
            "down pod by pod as the stable copy becomes ready). Paved owns only its spec.replicas (field manager "
            "paved-rollout-scale) and restores it when the rollout is deleted or this is set back to Never."
        ),
    )
    autoscalerRef: AutoscalerRef | None = Field(
        default=None,
        description=(
            "The user's HorizontalPodAutoscaler of the target: the stable and canary copies get HPAs derived "
            "from it (the canary's bounds follow its traffic weight); the user's HPA is left alone."
        ),
    )
    service: ServicePort = Field(description="The Service in front of the Deployment.")
    trafficRouting: TrafficRouting = Field(
        default_factory=lambda: TrafficRouting(replicaRatio=ReplicaRatioRouting()),
        description="How traffic is split; absent means replicaRatio.",
    )
    steps: Annotated[list[Step], Field(max_length=MAX_STEPS)] | None = Field(
        default=None, description="Explicit steps."
    )
    maxWeight: int | None = Field(
        default=None, ge=1, le=100, description="Shorthand: final canary weight before promotion."
    )
    stepWeight: int | None = Field(default=None, ge=1, le=100, description="Shorthand: weight added per step.")
    stepInterval: Duration | None = Field(default=None, description="Shorthand: time between steps.")
    analysis: Analysis | None = Field(default=None, description="Metric analysis; absent means steps only.")
    webhooks: Annotated[list[Webhook], UniqueBy("name")] = Field(default_factory=list, max_length=16, description="Webhooks.")
    notifications: list[Notification] = Field(
        default_factory=list, max_length=8, description="Messages sent at transitions (e.g. to a Slack incoming webhook).")

    @model_validator(mode="after")
    def _analysis_steps_name_metrics(self) -> Self:
        """Analysis steps may only name declared metrics and referenced templates (too costly
        to check in CEL). A template's metric names are known only once it is read: with
        templates, the operator checks those names when it resolves them."""
        declared = {metric.name for metric in (self.analysis.metrics if self.analysis else [])}
        referenced = {(t.clusterScope, t.templateName) for t in (self.analysis.templates if self.analysis else [])}
        for index, step in enumerate(self.steps or []):
            if step.analysis is None:
                continue
            if not declared and not referenced:
                raise ValueError(f"steps[{index}].analysis needs spec.analysis.metrics or spec.analysis.templates")
            for position, name in enumerate(step.analysis.templates or []):
                if (name.clusterScope, name.templateName) not in referenced:
                    raise ValueError(f"steps[{index}].analysis.templates[{position}]: template {name.templateName!r} "
                                     "is not listed in spec.analysis.templates (which gives its arguments)")
            unknown = sorted(set(step.analysis.metrics or []) - declared)
            if unknown and not referenced:
                raise ValueError(f"steps[{index}].analysis.metrics: unknown metric(s) {', '.join(unknown)}")
        return self

    def expanded_steps(self) -> list[Step]:
        """The explicit steps, or those the maxWeight/stepWeight/stepInterval shorthand means."""
        if self.steps is not None:
            return list(self.steps)
        assert self.maxWeight and self.stepWeight and self.stepInterval  # noqa: S101 - guaranteed by field_groups
        weights = list(range(self.stepWeight, self.maxWeight, self.stepWeight)) + [self.maxWeight]
        steps: list[Step] = []
        for weight in weights:
            steps += [Step(setWeight=weight), Step(pause=PauseStep(duration=self.stepInterval))]
        return steps


class CheckCounters(Model):
    """Verdict counts of one metric or webhook in the current step."""

    failures: int = Field(default=0, ge=0, description="Failed measurements.")
    holds: int = Field(default=0, ge=0, description="Measurements held for lack of data or samples.")
    successes: int = Field(default=0, ge=0, description="Successful measurements.")


class Measurement(Model):
    """One analysis measurement."""

    metric: str = Field(description="Metric (or webhook) name.")
    value: float | None = Field(default=None, description="Query result; absent when there was no data.")
    samples: float | None = Field(default=None, description="Sample count from samplesQuery, if any.")
    verdict: Verdict = Field(description="Successful, Failed, Inconclusive or Error.")
    at: Timestamp = Field(description="When it was measured.")


class WeightChange(Model):
    """The canary weight from a moment on."""

    weight: Weight = Field(description="Percentage of traffic sent to the canary.")
    at: Timestamp = Field(description="When the route was asked for it.")


class TemplateUse(Model):
    """One template as a canary run uses it."""

    kind: TemplateKind = Field(description="AnalysisTemplate or ClusterAnalysisTemplate.")
    name: str = Field(description="Name of the template.")
    generation: int | None = Field(default=None, description="The template's metadata.generation that was read.")
    metrics: list[str] = Field(default_factory=list, description="Names of the metrics it contributed.")


class AnalysisSnapshot(Model):
    """What a canary run measures from templates, fixed when the run starts."""

    revision: str = Field(description="The canary revision of the run.")
    run: int = Field(ge=0, description="The run (status.progress.run) it belongs to.")
    referencesDigest: str = Field(description="Digest of spec.analysis.templates it was resolved from; "
                                              "a changed reference resolves again.")
    templates: list[TemplateUse] = Field(default_factory=list, description="The templates read.")
    metrics: list[Metric] = Field(default_factory=list, description="Their metrics, arguments substituted.")


class ProgressiveRolloutStatus(IntentStatus):
    """Observed state of a rollout; enough to resume after an operator restart."""

    phase: Phase | None = Field(
        default=None, description="Initializing, Progressing, Paused, Promoting, Succeeded, RolledBack or Failed."
    )
    message: str | None = Field(default=None, description="One sentence saying why the rollout is in this phase.")
    originalReplicas: int | None = Field(
        default=None, ge=0,
        description="The user's spec.replicas of the target Deployment (what Paved restores after a scale-down).",
    )
    currentStepIndex: int | None = Field(default=None, ge=0, description="Index into the (expanded) steps.")
    canaryWeight: Weight | None = Field(default=None, description="Percentage of traffic on the canary now.")
    stableRevision: str | None = Field(default=None, description="Pod template hash of the stable version.")
    canaryRevision: str | None = Field(default=None, description="Pod template hash of the canary version.")
    stepStartedAt: Timestamp | None = Field(default=None, description="When the current step started.")
    pauseUntil: Timestamp | None = Field(default=None, description="End of the current timed pause.")
    checks: dict[str, CheckCounters] = Field(
        default_factory=dict,
        description=(
            "Metric or webhook name -> verdict counts: failures and successes over the whole rollout, "
            "holds as consecutive inconclusive results."
        ),
    )
    analysisHistory: list[Measurement] = Field(
        default_factory=list, max_length=ANALYSIS_HISTORY_LIMIT, description="Latest measurements, oldest first."
    )
    weightHistory: list[WeightChange] = Field(
        default_factory=list, max_length=WEIGHT_HISTORY_LIMIT,
        description="The canary weights of the current (or last) run and when each was set, oldest first.")
    analysisTemplates: AnalysisSnapshot | None = Field(
        default=None,
        description="The analysis templates as the current canary run resolved them when it started (arguments "
                    "substituted): the run measures these, whatever happens to the templates meanwhile.")
    progress: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "The state machine's own bookkeeping (stage, pending requests, used command ids). "
            "Kept in status so a restarted operator continues exactly where it stopped; not for humans."
        ),
    )


class TemplateArgument(Model):
    """An argument a template declares; `{{args.NAME}}` in its queries stands for its value."""

    name: str = Field(pattern=ARGUMENT_NAME_PATTERN, max_length=63, description="Argument name.")
    value: str | None = Field(
        default=None, pattern=ARGUMENT_VALUE_PATTERN, max_length=TEXT_MAX,
        description="Default value; absent means every rollout referencing the template must give one.")


class AnalysisTemplateSpec(Model):
    """Metrics shared by many rollouts (Argo Rollouts' AnalysisTemplate), with arguments.

    The rollout that references a template supplies the Prometheus server (and its
    credentials, from the rollout's own namespace) and the argument values. An argument may
    only stand inside a quoted string of a query, usually a label value:
    `{service="{{args.service}}"}`; its value is escaped to stay that one string."""

    args: Annotated[list[TemplateArgument], UniqueBy("name")] = Field(
        default_factory=list, max_length=32, description="Arguments, each used as `{{args.NAME}}` in the queries.")
    metrics: Annotated[list[Metric], UniqueBy("name")] = Field(
        min_length=1, max_length=MAX_METRICS, description="The checks, as in a rollout's spec.analysis.metrics.")


class AnalysisTemplateStatus(IntentStatus):
    """Nothing is written here: a template is checked when it is admitted and when a rollout uses it."""


EXAMPLE = """\
apiVersion: paved.dev/v1alpha1
kind: ProgressiveRollout
metadata:
  name: checkout
spec:
  targetRef: {name: checkout}
  service: {name: checkout, port: 80}
  trafficRouting:
    gatewayAPI: {httpRoute: checkout}
  steps:
    - setWeight: 5
    - pause: {duration: 1m}
    - setWeight: 20
    - pause: {duration: 1m}
    - setWeight: 50
    - analysis: {}
  analysis:
    prometheus: {address: http://prometheus.monitoring:9090}
    interval: 30s
    metrics:
      - name: success-rate
        query: |
          sum(rate(http_requests_total{version="canary",code!~"5.."}[1m]))
          / sum(rate(http_requests_total{version="canary"}[1m]))
        successCondition: result >= 0.95
        failureCondition: result < 0.8
        failureLimit: 2
        minSamples: 50
        samplesQuery: sum(increase(http_requests_total{version="canary"}[1m]))
"""

ANALYSIS_TEMPLATE_EXAMPLE = """\
apiVersion: paved.dev/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
spec:
  args:
    - name: service
    - name: version
      value: canary
  metrics:
    - name: success-rate
      query: |
        sum(rate(http_requests_total{service="{{args.service}}",version="{{args.version}}",code!~"5.."}[1m]))
        / sum(rate(http_requests_total{service="{{args.service}}",version="{{args.version}}"}[1m]))
      successCondition: result >= 0.95
      failureLimit: 2
"""

CLUSTER_ANALYSIS_TEMPLATE_EXAMPLE = """\
apiVersion: paved.dev/v1alpha1
kind: ClusterAnalysisTemplate
metadata:
  name: error-budget
spec:
  args:
    - name: job
  metrics:
    - name: error-ratio
      query: sum(rate(http_requests_total{job="{{args.job}}",code=~"5.."}[5m])) / sum(rate(http_requests_total{job="{{args.job}}"}[5m]))
      successCondition: result < 0.01
"""
