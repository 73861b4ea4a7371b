"""Shapes shared by every kind: conditions, references, durations, the status base.

Pure: no I/O, no Kubernetes client. Conditions follow the Kubernetes convention
(metav1.Condition), so `kubectl wait --for=condition=Ready` and kstatus work.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

READY = "Ready"
SYNCED = "Synced"
STALE = "Stale"
POLICY_COMPLIANT = "PolicyCompliant"
EXPIRED = "Expired"
PROGRESSING = "Progressing"


class Model(BaseModel):
    """Base for every API shape: camelCase on the wire, unknown fields refused.

    Field names are written in camelCase directly (they are the API), so no alias layer is
    needed and `model_dump()` produces exactly what the API server stores.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class ConditionStatus(str, Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """One observation about the object, in the metav1.Condition shape."""

    type: str = Field(description="Condition type, e.g. Ready, Synced, Stale.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase machine-readable reason for the last transition.")
    message: str = Field(default="", description="Human-readable detail; names the field and the fix on errors.")
    lastTransitionTime: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observedGeneration: int | None = Field(default=None, description="metadata.generation this condition was computed from.")


class LocalObjectReference(Model):
    name: str = Field(description="Name of the object in the same namespace.", min_length=1, max_length=253)


class IntentStatus(Model):
    """Status fields common to every intent kind."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, use_enum_values=True)

    observedGeneration: int | None = Field(default=None, description="metadata.generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready plus kind-specific conditions.",
        # A list-map keyed by type lets server-side apply merge conditions one by one.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


def now_rfc3339(now: datetime | None = None) -> str:
    moment = now or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


ConditionSpec = tuple[str, bool | str, str, str]
"""(type, status, reason, message): a condition to set, before set_condition stamps it."""


def parse_rfc3339(value: Any) -> datetime | None:
    """RFC 3339 text (or a datetime) -> an aware UTC datetime; None when absent or unparseable.

    The one timestamp parser of the code base. Naive values are read as UTC, as Kubernetes
    writes every timestamp in UTC.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def set_condition(
    conditions: list[dict[str, Any]] | None,
    type: str,
    status: bool | str,
    reason: str,
    message: str = "",
    generation: int | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Return a new condition list with `type` set; lastTransitionTime moves only on a status change.

    The one condition helper of the code base: handlers never build condition dicts by hand.
    """
    if isinstance(status, bool):
        status = "True" if status else "False"
    result = [dict(c) for c in (conditions or [])]
    existing = next((c for c in result if c.get("type") == type), None)
    transition = now_rfc3339(now)
    if existing is not None and existing.get("status") == status:
        transition = existing.get("lastTransitionTime") or transition
    updated: dict[str, Any] = {
        "type": type,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        updated["observedGeneration"] = generation
    if existing is None:
        result.append(updated)
    else:
        result[result.index(existing)] = updated
    return result


def get_condition(conditions: list[dict[str, Any]] | None, type: str) -> dict[str, Any] | None:
    return next((c for c in (conditions or []) if c.get("type") == type), None)


def is_true(conditions: list[dict[str, Any]] | None, type: str) -> bool:
    condition = get_condition(conditions, type)
    return condition is not None and condition.get("status") == "True"


DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d))+$|^0$"
NOT_A_DURATION = "not a duration; use forms like 30s, 10m, 1h30m or 7d"
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, field: str = "duration") -> timedelta:
    """Parse Go-style durations such as `90s`, `10m`, `1h30m`, `7d`; `0` is zero.

    Raises ValueError naming `field` so the caller can surface the exact path to the user.
    """
    text = str(text).strip()
    if text == "0":
        return timedelta(0)
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{field}: {NOT_A_DURATION}")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)
