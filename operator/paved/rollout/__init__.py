"""The ProgressiveRollout core: a pure canary state machine.

`decide(spec, status, observation, now)` returns the status to write and the actions to
execute; `validate_spec(spec)` lists every field that stops a spec from running, and
`refuse(status, reason, problems)` is the status for any input that cannot run. No kopf, no
Kubernetes client, no clock. A handler tick is:

    observation = <read target, stable, canary, route weights, command, pending answers>
    decision = decide(spec, status, observation, now)
    write decision.status                      # first: status is the intent
    for action in decision.actions: execute    # in order; stop at the first failure
                                               # (Notify: queued, sent once, a failure only reported)
    if Measure/RunWebhook were among them: answer them and call decide again now
    else: come back after RequeueAfter (or on the next watch event)

See `paved.rollout.actions` for what each action means and `paved.rollout.simulate` for a
handler that plays this loop on synthetic time.
"""

from paved.rollout.actions import (
    Action, EnsureCanary, Event, Measure, MetricQuery, Notify, PromoteStableTemplate, RequeueAfter, RunWebhook,
    RemoveAutoscalers, ScaleCanary, ScaleOriginal, ScaleStable, SetAutoscaler, SetWeights,
)
from paved.rollout.machine import Decision, decide
from paved.rollout.measurements import HISTORY_LIMIT
from paved.rollout.original import restore_on_delete
from paved.rollout.observation import (
    AutoscalerState, Command, CommandKind, MetricMeasurement, Observation, TargetState, WebhookResult, Weights, WorkloadState,
)
from paved.errors import FieldError
from paved.rollout.plan import RolloutPlan, SpecError, read_plan, validate_spec
from paved.rollout.refusal import (
    REASON_AUTOSCALER_INVALID, REASON_CREDENTIALS_MISSING, REASON_ENDPOINT_REFUSED, REASON_INVALID_SPEC,
    REASON_QUERY_REJECTED, REASON_ROUTING_INVALID,
    REASON_TARGET_NOT_FOUND, REASON_TEMPLATE_INVALID, Refusal, refuse,
)
from paved.rollout.state import Phase, Stage, conditions_for

__all__ = [
    "Action", "AutoscalerState", "Command", "CommandKind", "Decision", "EnsureCanary", "Event", "FieldError", "HISTORY_LIMIT",
    "Measure", "MetricMeasurement", "MetricQuery", "Notify", "Observation", "Phase", "PromoteStableTemplate",
    "REASON_AUTOSCALER_INVALID", "REASON_CREDENTIALS_MISSING", "REASON_ENDPOINT_REFUSED", "REASON_INVALID_SPEC",
    "REASON_QUERY_REJECTED", "REASON_ROUTING_INVALID",
    "REASON_TARGET_NOT_FOUND", "REASON_TEMPLATE_INVALID", "Refusal", "RemoveAutoscalers", "RequeueAfter", "RolloutPlan", "RunWebhook", "ScaleCanary", "ScaleOriginal", "ScaleStable", "SetAutoscaler",
    "SetWeights", "SpecError", "Stage", "TargetState", "conditions_for", "WebhookResult", "Weights", "WorkloadState",
    "decide", "read_plan", "refuse", "restore_on_delete", "validate_spec",
]
