"""Kopf never sees an exception message that Paved did not build from names.

When a handler raises, Kopf logs `str(error)` (with the whole traceback, for an error that
is not its own), posts that line as a Warning Event on the object, and stores `str(error)`
in the object's progress annotation (`paved.dev/<handler id>`), which anyone who may `get`
the object reads. An unexpected error's message may quote a value (a KeyError's key, a
list.index() of a password), so `guard_handlers` wraps every Paved handler once, at start-up:

- Kopf's own errors (TemporaryError, PermanentError, AdmissionError) and SafeErrors
  (paved.errors) pass through: Paved builds their messages from names;
- anything else is logged here with a traceback by frames and type names
  (paved.errors.safe_traceback) and raised again as a TemporaryError named by type and
  place (paved.errors.located), delayed like Kopf delays an unexpected error (the handler's
  `backoff`, else Kopf's default), so retries behave as before.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import kopf

from paved.errors import SafeError, located, safe_traceback

log = logging.getLogger(__name__)

PASS_THROUGH = (kopf.TemporaryError, kopf.PermanentError, SafeError)


def guard_handlers(registry: kopf.OperatorRegistry) -> None:
    """Wrap every handler of Paved's (not Kopf's built-in logins) in `registry`, once."""
    default_delay = kopf.OperatorSettings().execution.default_backoff
    # One wrapper per function and delay: Kopf de-duplicates a function registered for several
    # causes (create, update, resume) by its identity.
    wrappers: dict[tuple[int, float], Callable[..., Any]] = {}
    for handlers in (registry._activities, registry._indexing, registry._watching,  # noqa: SLF001 - no public setter
                     registry._spawning, registry._changing, registry._webhooks):
        for index, handler in enumerate(handlers._handlers):  # noqa: SLF001
            fn = handler.fn
            if getattr(fn, "__paved_guarded__", False) or not getattr(fn, "__module__", "").startswith("paved."):
                continue
            delay = handler.backoff if handler.backoff is not None else default_delay
            if (id(fn), delay) not in wrappers:
                wrappers[id(fn), delay] = guarded(fn, delay=delay)
            # The same handler type it replaces (mypy sees the union of the six lists).
            handlers._handlers[index] = dataclasses.replace(handler, fn=wrappers[id(fn), delay])  # type: ignore[call-overload]  # noqa: SLF001


def guarded(fn: Callable[..., Any], *, delay: float) -> Callable[..., Any]:
    """`fn` whose unexpected errors reach Kopf by type and place only (see the module docstring)."""

    def replaced(error: Exception) -> kopf.TemporaryError:
        log.error("handler %s raised %s:\n%s", fn.__qualname__, located(error), safe_traceback(error))
        return kopf.TemporaryError(located(error), delay=delay)

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except PASS_THROUGH:
                raise
            except Exception as error:  # noqa: BLE001 - see the module docstring
                raise replaced(error) from None

        wrapper: Callable[..., Any] = guarded_async
    else:
        @functools.wraps(fn)
        def guarded_sync(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except PASS_THROUGH:
                raise
            except Exception as error:  # noqa: BLE001 - see the module docstring
                raise replaced(error) from None

        wrapper = guarded_sync
    wrapper.__paved_guarded__ = True  # type: ignore[attr-defined]
    return wrapper
