"""A Jinja2 sandbox that bounds what one render may cost, not only what it may reach.

Jinja's ImmutableSandboxedEnvironment keeps a template away from Python's internals
(`''.__class__`, `cycler.__init__.__globals__`), but not from exhausting the process that
renders it: `{{ 'a' * 10**10 }}` is folded into a 10 GB constant while the template is being
*compiled*, nested `range(100000)` loops spin for hours, `'x'|center(10**9)` or
`[1]|batch(10**9, 0)` allocate gigabytes in one call. Paved renders two kinds of templates on
the operator's own threads: Compositions (platform-written, rendered for every intent, in the
admission webhook too) and ExternalSecretRef templates (tenant-written). A template that is
too expensive must fail its own render, quickly, with a message; never hang, crash or starve
the operator.

`BoundedSandbox` therefore adds, on top of the immutable sandbox:
- a budget of steps per render (`budget()`; MAX_STEPS): every loop iteration, call, filter,
  intercepted operator and piece of output costs at least one step (attribute lookups are
  free: without a loop or a call, a template can only make as many as its text spells), and a
  value the template builds costs one step per SIZE_PER_STEP units of its size (characters of
  strings, items of containers, counted through nested containers). Steps are counted, not
  timed: the same template fails the same way on any machine, and the pure core reads no clock;
- a cap on the size of every value a template builds (MAX_VALUE_SIZE: a million characters, an
  item of a list or map counting ITEM_SIZE), checked *before*
  the operations whose result size is known in advance (`*`, `**`, `+`, `~`, `%` and
  `str.format` widths, padding methods, every integer argument of a filter, the `join` and
  `replace` filters and the str/bytes methods that grow text: `join`, `replace`, `translate`,
  `expandtabs`) and after every other call, and a cap on each render's output (MAX_OUTPUT_SIZE characters);
- `*`, `**`, `%` and `+` intercepted, so nothing is folded at compile time;
- no `lipsum` (random text has no place in a manifest, and `lipsum(n=10**6)` takes minutes).

A caller with a deadline of its own (the admission webhook must answer before the API server
gives up) adds `stop_when(check)`: renders, and CEL evaluations (paved.policy.cel), inside it
stop once `check()` is true, checked every STOP_CHECK_STEPS steps. The check is the caller's:
this core reads no clock.

Exceeding a limit raises RenderLimitError, a SecurityError whose message is fixed text (no
value), so both callers turn it into their usual "not allowed in a template" error naming the
resource (or the Secret key) and the line. Recursion is bounded by Python's own limit
(a RecursionError fails the render like any other error).
"""

from __future__ import annotations

import functools
import math
import operator
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from jinja2 import Template, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from paved.render.template_errors import TemplateValueError

MAX_STEPS = 500_000
"""Steps one render may take (about a second of a busy core): the default compositions need a
few hundred for usual intents and under half of it for the largest AgentIdentity the API admits
(32 capabilities in 8 more namespaces each: 257 Roles and their bindings; bench/bench_hostile.py
prints the figures)."""
MAX_VALUE_SIZE = 1_000_000
"""Largest value a template may build, in size units (see size_of)."""
ITEM_SIZE = 8
"""An item of a list or map weighs as much as this many characters (building one costs more)."""
MAX_OUTPUT_SIZE = 4_000_000
"""Largest text one template may produce, in characters."""
STOP_CHECK_STEPS = 256
"""How often (in steps) a render or a CEL evaluation asks the caller's `stop_when` check."""
SIZE_PER_STEP = 64
"""A value the template builds costs one step per this many units of its size."""
MAX_INT_BITS = 4096
"""Largest integer `**` may produce (Python caps int-to-text conversions at 4,300 digits anyway)."""


class RenderLimitError(SecurityError, TemplateValueError):
    """A render went over one of the sandbox's limits; the message is fixed text, never a value."""


_STOP: ContextVar[Callable[[], bool] | None] = ContextVar("paved_stop_when", default=None)


@contextmanager
def stop_when(check: Callable[[], bool]) -> Iterator[None]:
    """Renders and CEL evaluations inside this block stop once `check()` returns True."""
    token = _STOP.set(check)
    try:
        yield
    finally:
        _STOP.reset(token)


def stop_requested() -> bool:
    """Whether the caller's `stop_when` check (if any) says to stop now."""
    check = _STOP.get()
    return check is not None and check()


STOPPED = "stopped before it finished: its caller's time ran out (the admission webhook answers within seconds)"


class Budget:
    """The steps left to one render (and to the renders nested in it)."""

    __slots__ = ("left", "limit", "_next_check")

    def __init__(self, limit: int = MAX_STEPS) -> None:
        self.limit = limit
        self.left = limit
        self._next_check = limit - STOP_CHECK_STEPS

    def spend(self, steps: int = 1) -> None:
        self.left -= steps
        if self.left < 0:
            raise RenderLimitError(
                f"the template takes more than {self.limit:,} steps (loop iterations, calls, and values it builds); "
                "it must stay far smaller"
            )
        if self.left <= self._next_check:
            self._next_check = self.left - STOP_CHECK_STEPS
            if stop_requested():
                raise RenderLimitError(f"the render was {STOPPED}")


_CURRENT: ContextVar[Budget | None] = ContextVar("paved_render_budget", default=None)


@contextmanager
def budget(limit: int = MAX_STEPS) -> Iterator[Budget]:
    """Renders inside share one budget; a render outside any `budget()` gets its own."""
    current = _CURRENT.get()
    if current is not None:
        yield current
        return
    fresh = Budget(limit)
    token = _CURRENT.set(fresh)
    try:
        yield fresh
    finally:
        _CURRENT.reset(token)


_P = ParamSpec("_P")
_R = TypeVar("_R")
_V = TypeVar("_V")


def in_budget(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """`function` running inside `budget()`: every render it makes shares one budget."""

    @functools.wraps(function)
    def budgeted(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with budget():
            return function(*args, **kwargs)

    return budgeted


def spend(steps: int = 1) -> None:
    """Charge the current render's budget (outside any budget(): compile-time folding only)."""
    current = _CURRENT.get()
    if current is not None:
        current.spend(steps)


def _too_large(what: str) -> RenderLimitError:
    return RenderLimitError(f"{what} would be larger than {MAX_VALUE_SIZE:,} characters "
                            f"(or {MAX_VALUE_SIZE // ITEM_SIZE:,} items)")


def size_of(value: Any, limit: int = MAX_VALUE_SIZE) -> int:
    """Characters of strings plus ITEM_SIZE per item of containers in `value`, nested ones
    included; stops counting once over `limit` (so measuring costs at most about `limit` units of work)."""
    total = 0
    stack = [value]
    seen: set[int] = set()
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, Mapping):
            if id(item) in seen:
                continue
            seen.add(id(item))
            total += ITEM_SIZE * len(item)
            for key, child in item.items():
                stack.append(key)
                stack.append(child)
        elif isinstance(item, (list, tuple, set, frozenset)):
            if id(item) in seen:
                continue
            seen.add(id(item))
            total += ITEM_SIZE * len(item)
            stack.extend(item)
    return total


def _charge(value: _V, what: str = "a value") -> _V:
    """Spend steps for a value the template built and refuse it if it is too large."""
    if isinstance(value, (int, float, bool)) or value is None:
        spend()
        return value
    size = size_of(value)
    if size > MAX_VALUE_SIZE:
        raise _too_large(what)
    spend(1 + size // SIZE_PER_STEP)
    return value


def _counted(items: Iterable[Any]) -> Iterator[Any]:
    """Iterate `items`, one step per item (for-loops, lazy results of filters and calls)."""
    for item in items:
        spend()
        yield item


# --- operators ------------------------------------------------------------------------------

_FORMAT_WIDTH = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d+|\*)?(?:\.(\d+|\*))?")


def _check_percent_format(text: str) -> None:
    for match in _FORMAT_WIDTH.finditer(text):
        for number in match.groups():
            if number == "*" or (number and int(number) > MAX_VALUE_SIZE):
                raise _too_large("a %-formatted text")


def _check_format_string(text: str) -> None:
    """str.format: refuse a width or precision that alone would exceed the cap (nested fields too)."""
    for _literal, _field, spec, _conversion in string.Formatter().parse(text):
        if spec:
            if "{" in spec:
                raise RenderLimitError("nested format fields are not allowed in a template")
            for number in re.findall(r"\d+", spec):
                if int(number) > MAX_VALUE_SIZE:
                    raise _too_large("a formatted text")


def _sized(value: Any) -> int | None:
    """Size of a str/bytes/list/tuple operand (None for other types)."""
    if isinstance(value, (str, bytes, list, tuple)):
        return size_of(value)
    return None


def _multiply(left: Any, right: Any) -> Any:
    for sequence, times in ((left, right), (right, left)):
        size = _sized(sequence)
        if size is not None and isinstance(times, int) and size * max(times, 0) > MAX_VALUE_SIZE:
            raise _too_large("the product")
    return _charge(operator.mul(left, right), "the product")


def _power(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        if right * math.log2(abs(left)) > MAX_INT_BITS:
            raise RenderLimitError(f"the power would have more than {MAX_INT_BITS} bits")
    return _charge(operator.pow(left, right))


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        _check_percent_format(left)
    return _charge(operator.mod(left, right), "the formatted text")


def _add(left: Any, right: Any) -> Any:
    sizes = (_sized(left), _sized(right))
    if None not in sizes and sum(s for s in sizes if s is not None) > MAX_VALUE_SIZE:
        raise _too_large("the sum")
    return _charge(operator.add(left, right), "the sum")


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {"*": _multiply, "**": _power, "%": _modulo, "+": _add}


def bounded_join(pieces: Iterable[Any]) -> str:
    """`a ~ b ~ c`: the pieces' size is checked before they are joined."""
    texts = [str(piece) for piece in pieces]
    if sum(len(text) for text in texts) > MAX_VALUE_SIZE:
        raise _too_large("the joined text")
    return _charge("".join(texts), "the joined text")


def _bounded_concat(pieces: Iterable[str]) -> str:
    """Environment.concat: the output of a render, a macro or a `{% set %}` block, capped."""
    out: list[str] = []
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > MAX_OUTPUT_SIZE:
            raise RenderLimitError(f"the template would produce more than {MAX_OUTPUT_SIZE:,} characters")
        spend(1 + len(piece) // SIZE_PER_STEP)
        out.append(piece)
    return "".join(out)


# --- filters and methods --------------------------------------------------------------------

_PADDING_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs"})


def _check_int_arguments(values: Iterable[Any], what: str) -> None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_VALUE_SIZE:
            raise RenderLimitError(f"{what}: an argument larger than {MAX_VALUE_SIZE:,} is not allowed in a template")


def _check_joined_size(separator: Any, items: list[Any]) -> None:
    if size_of(separator) * len(items) + sum(size_of(item) for item in items) > MAX_VALUE_SIZE:
        raise _too_large("the joined text")


def _check_replaced_size(text: Any, old: Any, new: Any, count: Any) -> None:
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    if len(text) + found * max(len(new) - len(old), 0) > MAX_VALUE_SIZE:
        raise _too_large("the replaced text")


def _bounded_join_filter(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
        items = list(_counted(value))
        _check_joined_size(str(d), [str(item) for item in items])
        return original(eval_ctx, items, d, attribute)

    return join


def _bounded_replace_filter(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def replace(eval_ctx: Any, s: str, old: str, new: str, count: int | None = None) -> str:
        _check_replaced_size(str(s), str(old), str(new), count)
        return original(eval_ctx, s, old, new, count)

    return replace


def _growing_method_call(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse, before it runs, a str/bytes method whose result would be over MAX_VALUE_SIZE
    (checking only after would let one call allocate gigabytes: `sep.join(many)`, a translate
    table mapping each character to a long text, expandtabs with a wide tab). Returns the
    arguments to call with (join's iterable, consumed here, as a list)."""
    receiver, name = getattr(method, "__self__", None), getattr(method, "__name__", None)
    if not isinstance(receiver, (str, bytes)):
        return args
    if name in _PADDING_METHODS:
        _check_int_arguments((*args, *kwargs.values()), f"{name}()")
    if name == "join" and args:
        items = list(_counted(args[0]))
        _check_joined_size(receiver, items)
        return (items, *args[1:])
    if name == "replace" and len(args) >= 2:
        _check_replaced_size(receiver, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1))
    elif name == "expandtabs":
        tab_size = args[0] if args else kwargs.get("tabsize", 8)
        tabs = receiver.count("\t") if isinstance(receiver, str) else receiver.count(b"\t")
        if isinstance(tab_size, int) and len(receiver) + tabs * max(tab_size, 0) > MAX_VALUE_SIZE:
            raise _too_large("the expanded text")
    elif name == "translate" and isinstance(receiver, str):
        table = args[0] if args else None
        if not isinstance(table, Mapping):
            raise RenderLimitError("translate(): only a mapping table is allowed in a template")
        longest = max((size_of(value) for value in table.values()), default=1)
        if len(receiver) * max(longest, 1) > MAX_VALUE_SIZE:
            raise _too_large("the translated text")
    return args


def _bounded_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """`original` with a step per call, its size arguments capped and its result charged."""

    value_at = 1 if hasattr(original, "jinja_pass_arg") else 0  # Jinja passes the context/environment first

    @functools.wraps(original)  # keeps jinja_pass_arg: Jinja calls it as before
    def bounded(*args: Any, **kwargs: Any) -> Any:
        spend()
        if name == "format":  # its arguments are values to format; the widths are in the value
            if len(args) > value_at and isinstance(args[value_at], str):
                _check_percent_format(args[value_at])
        else:
            _check_int_arguments((*args[value_at + 1:], *kwargs.values()), f"filter {name}")
        result = original(*args, **kwargs)
        if isinstance(result, Iterator):
            return _counted(result)
        if any(result is arg for arg in args):
            return result  # the input itself (default, first, ...): nothing was built
        return _charge(result, f"the result of filter {name}")

    return bounded


class _Generator(CodeGenerator):
    """`~` joins through `environment.bounded_join`, so the pieces are measured first."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            super().visit_Concat(node, frame)  # Markup joins (autoescape is off in Paved's sandboxes)
            return
        self.write("environment.bounded_join((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


COUNTED_FILTER = "paved_counted"


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment whose renders are bounded (see the module docstring)."""

    code_generator_class = _Generator
    intercepted_binops = frozenset(_BINOPS)
    concat = staticmethod(_bounded_concat)
    bounded_join = staticmethod(bounded_join)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.globals.pop("lipsum", None)  # range stays the sandbox's (100,000 items at most): loops count
        self.filters = _BoundedFilters(self.filters)
        self.filters[COUNTED_FILTER] = _counted

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False) -> str:
        """Every for-loop iterates through `paved_counted`: one step per iteration."""
        for loop in source.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, COUNTED_FILTER, [], [], None, None, lineno=loop.iter.lineno)
        return super()._generate(source, name, filename, defer_init)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        spend()
        return _BINOPS[operator](left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        template = value.__self__

        @functools.wraps(wrapped)
        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format_string(template)
            return _charge(wrapped(*args, **kwargs), "the formatted text")

        return checked

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        spend()
        args = _growing_method_call(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, Iterator):
            return _counted(result)
        if any(result is arg for arg in args):
            return result
        return _charge(result, "the result of a call")


class BoundedTemplate(Template):
    """A template whose `render` runs in a budget (its caller's, when one is open)."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        with budget():
            return super().render(*args, **kwargs)


BoundedSandbox.template_class = BoundedTemplate


class _BoundedFilters(dict[str, Callable[..., Any]]):
    """The environment's filters, each wrapped by `_bounded_filter` as it is registered."""

    _SPECIAL: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
        "join": _bounded_join_filter, "replace": _bounded_replace_filter,
    }

    def __init__(self, filters: Mapping[str, Callable[..., Any]]) -> None:
        super().__init__()
        self.update(filters)

    def __setitem__(self, name: str, function: Callable[..., Any]) -> None:
        if name == COUNTED_FILTER:
            super().__setitem__(name, function)
            return
        special = self._SPECIAL.get(name)
        super().__setitem__(name, _bounded_filter(name, special(function) if special else function))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for name, function in dict(*args, **kwargs).items():
            self[name] = function
