"""The CEL dialect of IntentPolicy rules, on cel-python (`celpy`).

Why a wrapper instead of calling celpy directly:
- celpy only finds unknown variables and functions when it evaluates, and then reports them
  with a dump of the whole activation (the intent and its rendered output). We check names
  statically at compile time, so a typo is a compile error with a position, and evaluation
  errors are rebuilt from types and the rule's own names before anyone sees them (celpy
  quotes values: "StringType('...') ... does not support field selection").
- `matches()` compiles its pattern with re2 without re2's error logging: re2 writes an
  invalid pattern (which a rule may build from the object) to the process's stderr.
- celpy's InterpretedRunner rebuilds its base activation (type annotations) on every call;
  for policies that are compiled once and evaluated for every admission request that is pure
  overhead, so `_Runner` builds it once. (The transpiling CompiledRunner is faster but keeps
  state in module globals and mis-evaluates `null || ...` short-circuits in 0.5.0, so it is
  not used.)
- Values are converted to CEL once per intent (`to_cel`), not once per rule.

The dialect is standard CEL with the variables `object`, `rendered`, `namespaceObject`,
`params`, `allowed` (paved.policy.allowances: policies allowing each allowance), the standard macros (`has`, `all`, `exists`, `exists_one`, `map`, `filter`), and one
Paved function, `deltas(list)`: the differences between consecutive elements, because CEL has
no way to look at neighbours in a list (`deltas([0] + weights).all(d, d <= 50)`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import celpy
import lark
import re2
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import Activation, CELEvalError, base_functions

VARIABLES = ("object", "rendered", "namespaceObject", "params", "allowed")
"""The names a rule can read; everything else is a compile error."""

_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_TYPE_NAMES = frozenset(
    {"bool", "bytes", "double", "duration", "int", "list", "map", "null_type", "string", "timestamp", "uint", "type"}
)
_MAX_DETAIL = 200


def _deltas(values: Any) -> celtypes.ListType:
    """deltas([a, b, c]) == [b - a, c - b]; a TypeError becomes CEL's `no such overload`."""
    if not isinstance(values, list):
        raise TypeError("deltas() expects a list")
    return celtypes.ListType([later - earlier for earlier, later in itertools.pairwise(values)])


_QUIET_RE2 = re2.Options()
_QUIET_RE2.log_errors = False


def _matches(text: Any, pattern: Any) -> Any:
    """celpy's `matches()`, but without re2 printing a bad pattern to stderr."""
    try:
        return celtypes.BoolType(re2.search(pattern, text, options=_QUIET_RE2) is not None)
    except re2.error as error:
        return CELEvalError("match error", error.__class__, ())


FUNCTIONS: dict[str, Callable[..., Any]] = {"deltas": _deltas, "matches": _matches}
_KNOWN_FUNCTIONS = frozenset(base_functions) | frozenset(FUNCTIONS) | {"has", "dyn"}



class _Runner(celpy.InterpretedRunner):
    """InterpretedRunner that builds its base activation once; evaluation only clones it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._base_activation = super().new_activation()

    def new_activation(self) -> Activation:
        return self._base_activation


_ENVIRONMENT = celpy.Environment(runner_class=_Runner)


@dataclass(frozen=True)
class CelProblem:
    """A compile problem inside one expression, with its 1-based position when known."""

    message: str
    line: int | None = None
    column: int | None = None


class CelCompileError(ValueError):
    def __init__(self, problem: CelProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@dataclass(frozen=True)
class Program:
    """A compiled expression; `run` never raises."""

    source: str
    variables: frozenset[str]  # the VARIABLES the expression mentions; only these are converted
    _runner: celpy.Runner = field(repr=False, compare=False)

    def run(self, activation: Mapping[str, Any]) -> tuple[bool | None, str]:
        """(result, "") for a boolean result, (None, reason) for anything else.

        Every failure is caught: a celpy bug or a RecursionError must become an `error`
        verdict for this rule, never a crashed admission request.
        """
        try:
            value = self._runner.evaluate(dict(activation))
        except CELEvalError as error:
            return None, sanitize(error, self.source)
        except Exception as error:  # noqa: BLE001 - see docstring
            return None, f"internal evaluation error ({type(error).__name__})"
        if isinstance(value, CELEvalError):
            return None, sanitize(value, self.source)
        if isinstance(value, (bool, celtypes.BoolType)):
            return bool(value), ""
        return None, f"the expression must evaluate to a boolean, got {_cel_type_name(type(value))}"


def compile_expression(source: str, variables: tuple[str, ...] = VARIABLES) -> Program:
    """Parse and check `source` against the names it may read (policy rules: VARIABLES;
    rollout conditions pass their own); CelCompileError carries the message and position."""
    try:
        ast = _ENVIRONMENT.compile(source)
    except CELParseError as error:
        raise CelCompileError(
            CelProblem(_syntax_message(source, error.line, error.column), error.line, error.column)
        ) from None
    problem = _check_names(ast, frozenset(variables), variables)
    if problem is not None:
        raise CelCompileError(problem)
    mentioned = {str(node.children[0]) for node in ast.iter_subtrees() if node.data == "ident"}
    return Program(source, frozenset(mentioned) & frozenset(variables), _ENVIRONMENT.program(ast, functions=FUNCTIONS))


def to_cel(value: Any) -> Any:
    """Python/JSON (and any Mapping, e.g. a Kopf body) to CEL values; odd leaves become strings."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, Mapping):
        return celtypes.MapType({celtypes.StringType(str(k)): to_cel(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return celtypes.ListType([to_cel(item) for item in value])
    if isinstance(value, datetime):
        return celtypes.TimestampType(value)
    if isinstance(value, timedelta):
        return celtypes.DurationType(value)
    return celtypes.StringType(str(value))


_CEL_CLASS = re.compile(r"<class '(?:celpy\.celtypes\.)?(\w+?)(?:Type)?'>")
_RULE_TOKEN = re.compile(r"Token\('RULE', '(\w+)'\)")
# celpy's messages that hold nothing but fixed words, operators and type names.
_FIXED = re.compile(
    r"no such overload|no such key|(modulus or )?divide by zero|return error for overflow|invalid_argument"
    r"|invalid UTF-8|match error|evaluation error|found no matching overload for \w+ applied to '\([\w, ]*\)'"
)
_NO_MEMBER = re.compile(r"no such member in mapping: '(\w+)'")
_BY_CAUSE = {
    KeyError: "no such key",
    TypeError: "no such overload",
    ValueError: "invalid value",
    ZeroDivisionError: "divide by zero",
    OverflowError: "return error for overflow",
    IndexError: "invalid_argument",
}
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


def sanitize(error: CELEvalError, source: str = "") -> str:
    """A short description of an evaluation error, from fixed words, type names and names the
    rule `source` spells; anything else celpy said is replaced by the kind of error.

    celpy's messages can quote the values involved ("StringType('...') with type ... does not
    support field selection") or append the whole activation; the intent and its rendered
    output must not reach a verdict's message.
    """
    text = str(error.args[0]) if error.args else ""
    text = (text.split(" (in activation", 1)[0].splitlines() or [""])[0]
    text = _CEL_CLASS.sub(lambda m: m.group(1).lower(), text)
    text = _RULE_TOKEN.sub(lambda m: m.group(1), text)
    member = _NO_MEMBER.fullmatch(text)
    if _FIXED.fullmatch(text) or (member and member.group(1) in _IDENTIFIER.findall(source)):
        return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."
    cause = error.args[1] if len(error.args) > 1 else None
    if isinstance(cause, type) and issubclass(cause, Exception):
        return _BY_CAUSE.get(cause, "evaluation error")
    return "evaluation error"


def _syntax_message(source: str, line: int | None, column: int | None) -> str:
    """`syntax error near '<text at the position>'`; the position itself is reported separately."""
    lines = source.splitlines() or [""]
    if line is None or column is None or not 1 <= line <= len(lines):
        return "syntax error"
    near = lines[line - 1][column - 1 : column + 19].strip()
    return f"syntax error near {near!r}" if near else "syntax error: the expression ends too early"


def _cel_type_name(cls: type) -> str:
    name = cls.__name__
    return "null" if cls is type(None) else name.removesuffix("Type").lower()


def _check_names(tree: lark.Tree[Any], scope: frozenset[str], declared: tuple[str, ...]) -> CelProblem | None:
    """First unknown variable or function in `tree`, honouring macro-bound variables."""
    kind = tree.data
    if kind == "ident":
        return _unknown_variable(cast(lark.Token, tree.children[0]), scope, declared)
    if kind == "ident_arg":
        name = cast(lark.Token, tree.children[0])
        if str(name) not in _KNOWN_FUNCTIONS:
            return _unknown_function(name)
        return _check_children(tree.children[1:], scope, declared)
    if kind == "member_dot_arg":
        target, method, *rest = tree.children
        name = cast(lark.Token, method)
        problem = _check_names(target, scope, declared) if isinstance(target, lark.Tree) else None
        if problem is not None:
            return problem
        if str(name) in _MACROS:
            return _check_macro(name, rest, scope, declared)
        if str(name) not in _KNOWN_FUNCTIONS:
            return _unknown_function(name)
        return _check_children(rest, scope, declared)
    return _check_children(tree.children, scope, declared)


def _check_children(children: Iterable[Any], scope: frozenset[str], declared: tuple[str, ...]) -> CelProblem | None:
    for child in children:
        if isinstance(child, lark.Tree):
            problem = _check_names(child, scope, declared)
            if problem is not None:
                return problem
    return None


def _check_macro(name: lark.Token, rest: list[Any], scope: frozenset[str], declared: tuple[str, ...]) -> CelProblem | None:
    arguments = rest[0].children if rest else []
    variable = _bare_identifier(arguments[0]) if arguments else None
    if variable is None or len(arguments) < 2:
        return CelProblem(
            f"{name}() needs a variable name and an expression, e.g. list.{name}(x, x > 0)",
            name.line,
            name.column,
        )
    return _check_children(arguments[1:], scope | {variable}, declared)


def _bare_identifier(tree: Any) -> str | None:
    """The name if `tree` is nothing but a plain identifier (expr -> ... -> ident)."""
    while isinstance(tree, lark.Tree) and len(tree.children) == 1 and tree.data != "ident":
        tree = tree.children[0]
    if isinstance(tree, lark.Tree) and tree.data == "ident":
        return str(tree.children[0])
    return None


def _unknown_variable(token: lark.Token, scope: frozenset[str], declared: tuple[str, ...]) -> CelProblem | None:
    if str(token) in scope or str(token) in _TYPE_NAMES:
        return None
    known = ", ".join(declared)
    return CelProblem(f"undeclared reference to {str(token)!r}; the expression can read {known}", token.line, token.column)


def _unknown_function(token: lark.Token) -> CelProblem:
    return CelProblem(f"unknown function {str(token)!r}", token.line, token.column)
