"""Values that templates see but that are not known yet, or must not be shown.

Composed resources read outputs of earlier ones (an RDS endpoint, an IAM role ARN). During
the first pass, and always in `paved render`, those outputs do not exist. Instead of
failing, a template gets a `Pending` placeholder that renders as `<pending:RESOURCE.KEY>`;
the engine records the read so the resource is marked pending and is applied in a later pass.
Generated secrets behave the same way offline (`<generated:NAME>`), so a real secret never
appears in `paved render` output or in the render hash.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class Pending:
    """An output that is not known yet; renders as `<pending:PATH>`.

    Attribute and item access yield deeper placeholders, so `outputs.instance.endpoint.address`
    works the same before and after the output exists.
    """

    __slots__ = ("_path",)

    def __init__(self, path: str) -> None:
        self._path = path

    def __str__(self) -> str:
        return f"<pending:{self._path}>"

    __repr__ = __str__

    def __getattr__(self, name: str) -> Pending:
        if name.startswith("_"):  # keep copy/pickle/introspection protocols out of the placeholder
            raise AttributeError(name)
        return Pending(f"{self._path}.{name}")

    def __getitem__(self, key: object) -> Pending:
        return Pending(f"{self._path}.{key}")

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pending) and other._path == self._path

    def __hash__(self) -> int:
        return hash(self._path)


class DependencyTracker:
    """Which earlier resources one resource's template read outputs of, and whether any was unknown."""

    __slots__ = ("depends_on", "pending")

    def __init__(self) -> None:
        self.depends_on: list[str] = []
        self.pending = False

    def depend(self, resource: str) -> None:
        if resource not in self.depends_on:
            self.depends_on.append(resource)


class UnavailableOutputs(LookupError):
    """A template read outputs of a resource it cannot depend on (later, unknown or omitted)."""


class _ItemsAsAttributes:
    """`view.key` means `view[key]` in templates; private names stay out (copy, pickle, introspection)."""

    __slots__ = ()

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        return self[key]  # type: ignore[index]


class ResourceOutputs(_ItemsAsAttributes):
    """The outputs of one earlier resource; missing keys are Pending."""

    __slots__ = ("_resource", "_tracker", "_values")

    def __init__(self, resource: str, values: Mapping[str, Any] | None, tracker: DependencyTracker) -> None:
        self._resource = resource
        self._values = values
        self._tracker = tracker

    def __getitem__(self, key: str) -> Any:
        if self._values is not None and key in self._values:
            return self._values[key]
        self._tracker.pending = True
        return Pending(f"{self._resource}.{key}")

    def __contains__(self, key: object) -> bool:
        return self._values is not None and key in self._values


class OutputsView(_ItemsAsAttributes):
    """`outputs` in a template: earlier resources' outputs by resource name.

    Only resources rendered *before* the current one (and not omitted by `when`) may be read;
    anything else is a composition bug that would leave the resource pending forever.
    """

    __slots__ = ("_earlier", "_omitted", "_outputs", "_tracker")

    def __init__(
        self,
        outputs: Mapping[str, Mapping[str, Any]] | None,
        earlier: frozenset[str] | set[str],
        omitted: frozenset[str] | set[str],
        tracker: DependencyTracker,
    ) -> None:
        self._outputs = outputs or {}
        self._earlier = earlier
        self._omitted = omitted
        self._tracker = tracker

    def __getitem__(self, resource: str) -> ResourceOutputs:
        if resource in self._omitted:
            raise UnavailableOutputs(
                f"reads outputs.{resource}, but resource {resource!r} is omitted (its `when` is false); "
                "guard the read with the same condition"
            )
        if resource not in self._earlier:
            raise UnavailableOutputs(
                f"reads outputs.{resource}, but no earlier resource is named {resource!r}; "
                "a resource may only read outputs of resources listed before it"
            )
        self._tracker.depend(resource)
        return ResourceOutputs(resource, self._outputs.get(resource), self._tracker)


class GeneratedView(_ItemsAsAttributes):
    """`generated` in a template: generated secret values, or `<generated:NAME>` placeholders.

    `values=None` means offline (or hashing): every declared name renders as its placeholder.
    A name the composition did not declare in `spec.generatedSecrets` is an error, so a typo
    cannot silently produce an empty password.
    """

    __slots__ = ("_declared", "_values")

    def __init__(self, declared: frozenset[str], values: Mapping[str, str] | None) -> None:
        self._declared = declared
        self._values = values

    def __getitem__(self, name: str) -> str:
        if name not in self._declared:
            declared = ", ".join(sorted(self._declared)) or "none"
            raise UnavailableOutputs(f"reads generated.{name}, but spec.generatedSecrets declares only: {declared}")
        if self._values is None:
            return placeholder(name)
        try:
            return self._values[name]
        except KeyError:
            raise UnavailableOutputs(f"generated secret {name!r} was not supplied to the renderer") from None


def holds_values(view: GeneratedView) -> bool:
    """Whether real generated values are in scope of a render (not only placeholders).

    A function, not an attribute: templates read `generated.<name>` as attributes."""
    return bool(view._values)


def placeholder(name: str) -> str:
    """What a generated secret looks like when its value must not (or cannot) be shown."""
    return f"<generated:{name}>"
