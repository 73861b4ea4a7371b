"""The one error the composition engine raises.

A RenderError ends up in an intent's status condition and on the stderr of `paved render`,
so it carries everything a user (or a composition author) needs to act: which composition,
which resource, which template line, and either the missing variable or the intent field
that was refused. It never carries rendered text, because rendered text may hold secrets.
"""

from __future__ import annotations

from paved.errors import SafeError


class RenderError(SafeError):
    """An intent could not be rendered through a composition.

    A SafeError as it leaves paved.render.render: a render with generated values reports an
    error computed without them (see paved.render.engine). Inside a template, `fail()`'s
    message is the template's own and is treated as any other exception's.

    `field` is set when the *intent* is at fault (a `fail()` call in a template, a bad
    `spec.compositionRef.name`): that is the path to show the user. `variable` is set when a
    *template* read something that does not exist (StrictUndefined): that is usually a
    composition bug, or an intent field the composition requires.
    """

    def __init__(
        self,
        message: str,
        *,
        composition: str | None = None,
        resource: str | None = None,
        line: int | None = None,
        variable: str | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.composition = composition
        self.resource = resource
        self.line = line
        self.variable = variable
        self.field = field
        super().__init__(str(self))

    @property
    def location(self) -> str:
        """`composition X, resource "Y", line N` (the parts that are known)."""
        parts = []
        if self.composition:
            parts.append(f"composition {self.composition}")
        if self.resource:
            parts.append(f"resource {self.resource!r}".replace("'", '"'))
        if self.line is not None:
            parts.append(f"line {self.line}")
        return ", ".join(parts)

    @property
    def user_message(self) -> str:
        """The part meant for an intent's condition: `spec.version: ...` without template noise."""
        return f"{self.field}: {self.message}" if self.field else self.message

    def __str__(self) -> str:
        location = self.location
        return f"{location}: {self.user_message}" if location else self.user_message

    def at(self, *, composition: str | None = None, resource: str | None = None) -> RenderError:
        """Fill in location parts that the raiser did not know (e.g. a helper deep in a template)."""
        if composition and not self.composition:
            self.composition = composition
        if resource and not self.resource:
            self.resource = resource
        self.args = (str(self),)
        return self
