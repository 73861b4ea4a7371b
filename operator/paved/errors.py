"""Describing errors: a problem in a spec by its field, and any error without its message.

An exception's message can quote whatever the failing code held, a secret value included
(a provider's answer, a Secret's body, a rendered template) or a transformation of one (a
template's `password | upper` used as a dict key, a list.index() of a value). Redacting
known strings cannot catch the transformed forms, so Paved never shows a message it did not
build itself from names, positions and types:

- `SafeError` marks the exception classes whose messages are built that way (Paved's own
  errors, and third-party errors rebuilt into them at the place they are caught: the API
  server's in paved.kube.client, AWS's and Vault's in paved.providers); `describe` shows
  their message and names every other exception by type and place only (`located`);
- `safe_traceback` is a traceback for the operator log with frames and type names only;
- `unquoted` drops the quoted spans from a third party's message text, where a service
  puts the values it echoes (AWS's "Value '...' at 'field' failed to satisfy constraint");
- `FieldError` is one problem of a spec, named by its field path.
"""

from __future__ import annotations

import os
import re
import traceback
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem in the spec: `path` is the field (e.g. `spec.steps[2].setWeight`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SafeError(Exception):
    """An exception whose message names fields, keys, places and types, never a value:
    it may go to logs, Events, status and API answers as it is."""


def located(error: BaseException) -> str:
    """`TypeName at file.py:line` of the innermost frame; never the message."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}{where}"


def describe(error: BaseException) -> str:
    """The message of a SafeError; any other error by type and place (`located`)."""
    return str(error) if isinstance(error, SafeError) else located(error)


def safe_traceback(error: BaseException) -> str:
    """`error`'s traceback, and those of the errors it was raised from, for the operator log:
    the frames (file, line, function, source line) and `describe` of each error, never the
    message of an error that is not a SafeError, and never local variables."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    parts = []
    for position, link in enumerate(reversed(chain)):
        if position:
            parts.append("\nThe above error led to the one below:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_list(traceback.extract_tb(link.__traceback__)))
        parts.append(f"{type(link).__name__}: {describe(link)}\n" if isinstance(link, SafeError) else f"{describe(link)}\n")
    return "".join(parts).rstrip("\n")


# A quoted span: opened by a quote that does not follow a letter or digit (so "can't" is no
# quote) and closed by the same quote that is not followed by one.
_QUOTED = re.compile(r"""(?<![\w\\])(['"`]).*?\1(?!\w)""", re.DOTALL)
ELLIPSIS = "…"


def unquoted(text: str, *, keep: frozenset[str] | set[str] = frozenset()) -> str:
    """`text` with every quoted span ('...', "...", `...`) replaced by an ellipsis in the same
    quotes, except the spans whose content is one of `keep` (names the caller sent itself)."""

    def shown(match: re.Match[str]) -> str:
        quote, content = match.group(1), match.group(0)[1:-1]
        return match.group(0) if content in keep else f"{quote}{ELLIPSIS}{quote}"

    return _QUOTED.sub(shown, text)
