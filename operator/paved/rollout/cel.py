"""CEL success/failure conditions over one metric result.

Conditions are compiled once per distinct expression (an LRU cache shared by every rollout),
because the state machine evaluates them on every measurement of every rollout. The
expression sees two variables:

- `result`: the query's value, a CEL double (write `result >= 0.95`, or `result == 1.0`;
  CEL has no implicit int/double equality, `check` catches that before anything runs);
- `samples`: the companion sample count as an int (0 when there is no samples query).

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import celpy.celtypes as celtypes

from paved.policy.cel import CelCompileError, Program, compile_expression

VARIABLES = ("result", "samples")

# Values used to dry-run a condition at validation time: catches type errors such as
# `result == 1` and non-boolean expressions before the first measurement.
PROBE_RESULT, PROBE_SAMPLES = 1.0, 1


class ConditionError(Exception):
    """A condition could not be evaluated for this value (type error, bad expression)."""


@dataclass(frozen=True)
class _Compiled:
    program: Program | None
    problem: str | None


@lru_cache(maxsize=1024)
def _compile(expression: str) -> _Compiled:
    """The policy layer's CEL compiler (name checks with positions, one shared runtime),
    with this layer's two variables."""
    try:
        return _Compiled(compile_expression(expression, VARIABLES), None)
    except CelCompileError as error:
        where = f" at column {error.problem.column}" if error.problem.column else ""
        return _Compiled(None, f"invalid CEL{where}: {error.problem.message} in {expression!r}")


@lru_cache(maxsize=1024)
def check(expression: str) -> str | None:
    """None when `expression` is a usable condition; otherwise a message saying why.

    Compiles, then evaluates once with a probe value, so undeclared names, type mismatches
    and non-boolean results are reported at validation time with the expression itself.
    """
    compiled = _compile(expression)
    if compiled.problem:
        return compiled.problem
    try:
        evaluate(expression, PROBE_RESULT, PROBE_SAMPLES)
    except ConditionError as exc:
        return f"{exc} (checked with result={PROBE_RESULT}, samples={PROBE_SAMPLES})"
    return None


def evaluate(expression: str, result: float, samples: int | None = None) -> bool:
    """Whether the condition holds for this value; ConditionError when it cannot be decided."""
    compiled = _compile(expression)
    if compiled.program is None:
        raise ConditionError(compiled.problem or "invalid CEL")
    value, reason = compiled.program.run(
        {"result": celtypes.DoubleType(float(result)), "samples": celtypes.IntType(int(samples or 0))}
    )
    if value is None:
        if "overload" in reason:
            reason = "operand types do not match (write numbers as doubles, e.g. 1.0)"
        raise ConditionError(f"cannot evaluate {expression!r}: {reason}")
    return value


_SIMPLE = re.compile(r"^\s*result\s*(>=|<=|==|!=|>|<)\s*(-?[0-9]+(?:\.[0-9]+)?(?:[eE]-?[0-9]+)?)\s*$")
_NEGATION = {">=": "<", "<=": ">", ">": "<=", "<": ">=", "==": "!=", "!=": "=="}


def explain(expression: str, value: float, held: bool) -> str:
    """Short human clause for a verdict, e.g. `0.81 < 0.95` for a missed `result >= 0.95`.

    `held` is whether the condition evaluated true. Simple `result OP number` conditions
    are rendered as a comparison; anything else quotes the expression.
    """
    shown = format_value(value)
    match = _SIMPLE.match(expression)
    if match:
        operator, bound = match.groups()
        return f"{shown} {operator if held else _NEGATION[operator]} {bound}"
    return f"{shown} {'meets' if held else 'fails'} `{expression.strip()}`"


def format_value(value: float) -> str:
    return f"{value:.4g}"
