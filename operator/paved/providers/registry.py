"""The one registry shape every kind of provider uses: a name -> factory map.

Four kinds of provider are looked up by name: resource providers (a composition's
`provider:` field), secret stores (`spec.provider.<name>`), metrics providers
(`spec.analysis.<name>`) and traffic routers (`spec.trafficRouting.<name>`). Each has one
`Registry`. Built-in providers are named up front as "module:attribute" and imported on first
use, so importing a provider module has no side effect and a process loads only the
providers its objects use.

A second registration under a taken name (built in or registered) is refused: two modules
claiming one name is a mistake that would otherwise be settled silently by import order.
Tests that substitute a provider say so (`substituted`, or `force=True`).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Generic, TypeVar

F = TypeVar("F")


class DuplicateProvider(ValueError):
    """A name registered twice without force=True."""


class Registry(Generic[F]):
    """Factories by name, for one kind of provider (`what`, e.g. "metrics provider")."""

    def __init__(self, what: str, *, builtin: Mapping[str, str] | None = None,
                 unknown: Callable[[str, str], Exception] | None = None) -> None:
        self.what = what
        self._builtin = dict(builtin or {})  # name -> "module:attribute" of its factory
        self._unknown = unknown  # (name, the known names joined) -> the error to raise
        self._registered: dict[str, F] = {}  # registered at run time; shadows a built-in name only by force
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []

    def register(self, name: str, factory: F, *, force: bool = False) -> None:
        with self._lock:
            if not force and (name in self._registered or name in self._builtin):
                raise DuplicateProvider(f"{self.what} {name!r} is already registered; pass force=True to substitute it")
            self._registered[name] = factory
        self._changed(name)

    def unregister(self, name: str) -> None:
        """Forget what was registered under `name` (a built-in provider of that name resolves again)."""
        with self._lock:
            self._registered.pop(name, None)
        self._changed(name)

    @contextmanager
    def substituted(self, name: str, factory: F) -> Iterator[None]:
        """`factory` under `name` for the duration (tests); what was there before comes back."""
        with self._lock:
            previous = self._registered.get(name)
        self.register(name, factory, force=True)
        try:
            yield
        finally:
            if previous is None:
                self.unregister(name)
            else:
                self.register(name, previous, force=True)

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call `listener(name)` after `name` is registered or unregistered (to drop instances)."""
        self._listeners.append(listener)

    def names(self) -> list[str]:
        """Every name that resolves (sorted)."""
        with self._lock:
            return sorted(set(self._registered) | set(self._builtin))

    def factory(self, name: str) -> F:
        with self._lock:
            found = self._registered.get(name)
        if found is not None:
            return found
        if name in self._builtin:
            module, attribute = self._builtin[name].split(":")
            factory: F = getattr(importlib.import_module(module), attribute)
            return factory
        known = ", ".join(self.names()) or "none"
        raise self._unknown(name, known) if self._unknown else KeyError(f"unknown {self.what} {name!r}; known: {known}")

    def _changed(self, name: str) -> None:
        for listener in self._listeners:
            listener(name)
