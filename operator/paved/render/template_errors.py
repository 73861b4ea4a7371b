"""What went wrong in a sandboxed Jinja2 template, said without any value the template held.

Both sandboxes of Paved (Composition templates, paved.render.engine; ExternalSecretRef
templates, paved.secretsync.values) render secret values: generated passwords, fetched
secrets. An exception raised inside a template quotes whatever it was given: a missing
dict key (`{{ {}[password | upper] }}`), an absent list item (`[1].index(password)`), an
unknown encoding (`password.encode(password)`), a format field, an unsafe attribute, and
every filter's own complaints. So an error of a render with secret values is never shown by
its message; `describe_template_error` rebuilds it from what the template author wrote
(and `template_line` finds the template line: Jinja rewrites tracebacks to template lines):

- the filter, test or function it was raised in (found by the code objects of the
  environment's own callables, so a filter registered later is covered without a change here);
- the exception type;
- for a missing variable, key or attribute: its name when that name is spelled in the
  template text (`spec.sizee`), else only the container's type: a key computed by the
  template may be a value;
- for an unsafe attribute: likewise its name only when the template spells it;
- the message of a `TemplateValueError`, the one exception type whose message is fixed text
  (Paved's own filters raise it).
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

from jinja2 import Environment, StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.utils import missing, object_type_repr

from paved.errors import SafeError


class TemplateValueError(SafeError, ValueError):
    """Raised by Paved's filters for input they refuse; the message is fixed text, never input."""


class MissingVariable(UndefinedError):
    """An UndefinedError that remembers what was looked up on what, to name it for the user."""

    def __init__(self, message: str | None = None, *, obj: Any = missing, name: Any = None) -> None:
        super().__init__(message)
        self.obj = obj
        self.name = name


class NamedUndefined(StrictUndefined):
    """StrictUndefined whose error carries the container and the key that were missing."""

    __slots__ = ()

    def __init__(self, hint: str | None = None, obj: Any = missing, name: str | None = None, exc: Any = UndefinedError) -> None:
        # Keep other exception types (the sandbox's SecurityError for unsafe attributes) as they are.
        if exc is UndefinedError and hint is None:
            exc = partial(MissingVariable, obj=obj, name=name)
        super().__init__(hint, obj, name, exc)


def template_line(error: BaseException, filename: str) -> int | None:
    """The template line of the innermost frame of `filename` (Jinja rewrites tracebacks to it)."""
    line = None
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_filename == filename:
            line = lineno
    return line


@lru_cache(maxsize=1024)
def _spelled(environment: Environment, source: str) -> frozenset[Any]:
    """Every variable, attribute and constant the template text spells."""
    try:
        tree = environment.parse(source)
    except TemplateSyntaxError:
        return frozenset()
    found: set[Any] = set()
    for node in tree.find_all((nodes.Name, nodes.Getattr, nodes.Const)):
        if isinstance(node, nodes.Name):
            found.add(node.name)
        elif isinstance(node, nodes.Getattr):
            found.add(node.attr)
        elif isinstance(node, nodes.Const) and isinstance(node.value, (str, int)) and not isinstance(node.value, bool):
            found.add(node.value)
    return frozenset(found)


def _callables(environment: Environment) -> dict[Any, str]:
    """Code object -> how to name it, for every filter, test and global function of `environment`."""
    named: dict[Any, set[str]] = {}
    groups: tuple[tuple[dict[str, Any], Callable[[str], str]], ...] = (
        (environment.filters, lambda name: f"filter {name!r}"),
        (environment.tests, lambda name: f"test {name!r}"),
        (environment.globals, lambda name: f"{name}()"),
    )
    for table, label in groups:
        for name, function in table.items():
            while function is not None:
                code = getattr(function, "__code__", None)
                if code is not None:
                    named.setdefault(code, set()).add(label(name))
                function = getattr(function, "__wrapped__", None)
    # A wrapper shared by several callables (Jinja's async variants) names none of them.
    return {code: next(iter(labels)) for code, labels in named.items() if len(labels) == 1}


def _raised_in(error: BaseException, environment: Environment) -> str | None:
    table = _callables(environment)
    tb = error.__traceback__
    innermost = None
    while tb is not None:
        label = table.get(tb.tb_frame.f_code)
        if label is not None:
            innermost = label
        tb = tb.tb_next
    return innermost


_UNSAFE = re.compile(r"access to attribute '(.+)' of '(\w+)' object is unsafe\.", re.DOTALL)


def describe_template_error(error: BaseException, *, environment: Environment, source: str) -> str:
    """`<what> (in filter 'x')`, built from the template's names and types only; the line is
    `template_line`'s to tell."""
    spelled = _spelled(environment, source)
    if isinstance(error, TemplateValueError):
        what = str(error)
    elif isinstance(error, MissingVariable):
        what = _missing(error, spelled)
    elif isinstance(error, SecurityError):
        unsafe = _UNSAFE.fullmatch(str(error))
        if unsafe and unsafe.group(1) in spelled:
            what = f"the sandbox does not allow attribute {unsafe.group(1)!r} of a {unsafe.group(2)} object"
        else:
            what = "the sandbox does not allow this operation"
    elif isinstance(error, UndefinedError):
        what = "an undefined value was used"
    else:
        what = f"{type(error).__name__} (its message is not shown: it may quote a value)"
    raised_in = _raised_in(error, environment)
    return what + (f" (in {raised_in})" if raised_in else "")


def _missing(error: MissingVariable, spelled: frozenset[Any]) -> str:
    shown = isinstance(error.name, (str, int)) and error.name in spelled
    if error.obj is missing:
        return f"{error.name!r} is undefined" if shown else "a variable is undefined"
    container = object_type_repr(error.obj)
    if shown:
        return f"{container} has no attribute or key {error.name!r}"
    return f"{container} has no such key (a key computed by the template is not shown)"
