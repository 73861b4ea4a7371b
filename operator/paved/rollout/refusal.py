"""Input that cannot run: the status that says so and moves nothing. Pure.

A rollout is refused, before the machine runs, when its spec is invalid, when it names an
address Paved must not call, when Prometheus rejects one of its queries, when its target
Deployment is missing, when its traffic cannot be steered, when its autoscaler cannot be
used or when an analysis template it references is missing, invalid or lacks an argument. The refusal keeps every bit of
progress (the next valid tick continues where the rollout was), says in one line what is
wrong, and names every field at fault in the Ready and Progressing conditions, so that
`kubectl get pro` and `kubectl wait --for=condition=Ready` show what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from paved.api.common import PROGRESSING, READY, ConditionSpec
from paved.errors import FieldError
from paved.rollout.actions import Event

REASON_INVALID_SPEC = "InvalidSpec"
REASON_ENDPOINT_REFUSED = "EndpointRefused"
REASON_QUERY_REJECTED = "QueryRejected"
REASON_TARGET_NOT_FOUND = "TargetNotFound"
REASON_ROUTING_INVALID = "RoutingInvalid"
REASON_AUTOSCALER_INVALID = "AutoscalerInvalid"
REASON_CREDENTIALS_MISSING = "CredentialsMissing"
REASON_TEMPLATE_INVALID = "AnalysisTemplateInvalid"

_WHAT_IS_WRONG = {
    REASON_INVALID_SPEC: "spec is invalid",
    REASON_ENDPOINT_REFUSED: "Paved does not call an address it names",
    REASON_QUERY_REJECTED: "Prometheus rejects a query",
    REASON_TARGET_NOT_FOUND: "the target Deployment is missing",
    REASON_ROUTING_INVALID: "traffic cannot be steered",
    REASON_AUTOSCALER_INVALID: "the autoscaler cannot be used",
    REASON_CREDENTIALS_MISSING: "a Secret or ConfigMap it names for Prometheus is missing or unusable",
    REASON_TEMPLATE_INVALID: "an analysis template it references cannot be used",
}


@dataclass(frozen=True)
class Refusal:
    """What to write for refused input: `status` (the old one with the new message, progress
    untouched), the `conditions` naming every field, and an `event` only when the message is
    new (a refusal is announced once, not on every tick)."""

    status: dict[str, Any]
    conditions: list[ConditionSpec]
    event: Event | None

    @property
    def message(self) -> str:
        return str(self.status["message"])


def refuse(status: Mapping[str, Any] | None, reason: str, problems: Sequence[FieldError]) -> Refusal:
    """The refusal of input that cannot run for `reason` (a REASON_* constant), given every
    problem found (at least one)."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    message = f"{_WHAT_IS_WRONG[reason]}, no traffic moved: {problems[0]}{more}"
    new_status = {**dict(status or {}), "message": message}
    detail = "; ".join(str(p) for p in problems)
    conditions: list[ConditionSpec] = [(READY, False, reason, detail), (PROGRESSING, False, reason, detail)]
    event = Event(reason, message, warning=True) if (status or {}).get("message") != message else None
    return Refusal(new_status, conditions, event)
