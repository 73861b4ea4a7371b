"""Describing errors: a problem in a spec by its field, an unexpected error without its message.

An exception's message can quote whatever the failing code held, a secret value included
(a provider's answer, a Secret's body). Where such an error is logged or put into status,
Paved names it by type and place only.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem in the spec: `path` is the field (e.g. `spec.steps[2].setWeight`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def located(error: BaseException) -> str:
    """`TypeName at file.py:line` of the innermost frame; never the message."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}{where}"
