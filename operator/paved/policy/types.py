"""The values the policy core hands out: modes, outcomes, verdicts and compile errors.

They are plain frozen dataclasses (and one exception) so the admission webhook, the continuous audit (conditions,
PolicyReports) and `paved validate` can all consume them without knowing about CEL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from paved.api.common import now_rfc3339


class Mode(str, Enum):
    """What a failing rule does: Enforce denies, Warn admits with a warning, Audit only reports."""

    ENFORCE = "Enforce"
    WARN = "Warn"
    AUDIT = "Audit"


class Outcome(str, Enum):
    """The result of one rule for one intent.

    `error` is deliberately distinct from `fail`: a rule that could not be evaluated is not a
    pass, but the user must be told that the *rule* broke, not that their intent is wrong.
    """

    PASS = "pass"  # noqa: S105 - a name, not a secret
    FAIL = "fail"
    ERROR = "error"
    EXCEPTED = "excepted"


@dataclass(frozen=True)
class Verdict:
    """One rule of one policy, evaluated against one intent.

    `message` is the rule's own (static) message, so it can never interpolate a secret.
    `detail` says why an `error` happened (sanitised CEL error, no data values).
    `exception`/`expires_at` name the PolicyException (`namespace/name`) that excused the
    intent; on a `fail`/`error` they name an exception that matched but has expired, so
    reports can say "your exception ran out" instead of leaving the user guessing.
    """

    policy: str
    rule: str
    mode: Mode
    outcome: Outcome
    message: str
    detail: str = ""
    exception: str | None = None
    expires_at: datetime | None = None

    @property
    def violation(self) -> bool:
        """True for outcomes someone must act on (fail or error)."""
        return self.outcome in (Outcome.FAIL, Outcome.ERROR)

    def describe(self) -> str:
        """`policy/rule (Mode): message` plus the error detail, for humans."""
        text = f"{self.policy}/{self.rule} ({self.mode.value}): {self.message}"
        if self.outcome is Outcome.ERROR:
            text += f" [rule could not be evaluated: {self.detail}]"
        elif self.outcome is Outcome.EXCEPTED:
            text += f" [excepted by PolicyException {self.exception} until {_rfc3339(self.expires_at)}]"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (CLI `--output json`, PolicyReport results)."""
        data: dict[str, Any] = {
            "policy": self.policy,
            "rule": self.rule,
            "mode": self.mode.value,
            "outcome": self.outcome.value,
            "message": self.message,
        }
        if self.detail:
            data["detail"] = self.detail
        if self.exception:
            data["exception"] = self.exception
            data["expiresAt"] = _rfc3339(self.expires_at)
        return data


@dataclass(frozen=True)
class RuleError:
    """Why one part of a policy is unusable: the field path, the rule, and where in the CEL.

    `line`/`column` are 1-based positions inside the rule's `expression`.
    """

    field: str
    message: str
    rule: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.field + (f" (rule {self.rule!r})" if self.rule else "")
        if self.line is not None:
            where += f" at line {self.line}, column {self.column}"
        return f"{where}: {self.message}"


class PolicyCompileError(ValueError):
    """An IntentPolicy cannot be used: every problem found, each with its field and position.

    Raised by compile_policy; the IntentPolicy handler turns it into `Ready=False`, the
    webhook into a refusal and `paved validate` into a non-zero exit.
    """

    def __init__(self, policy: str, errors: tuple[RuleError, ...]) -> None:
        self.policy = policy
        self.errors = errors
        super().__init__(str(self))

    def __str__(self) -> str:
        problems = "; ".join(str(error) for error in self.errors)
        return f"IntentPolicy {self.policy!r} does not compile: {problems}"


def _rfc3339(moment: datetime | None) -> str | None:
    return now_rfc3339(moment) if moment is not None else None
