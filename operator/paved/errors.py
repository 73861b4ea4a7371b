"""Describing an unexpected error without its message.

An exception's message can quote whatever the failing code held, a secret value included
(a provider's answer, a Secret's body). Where such an error is logged or put into status,
Paved names it by type and place only.
"""

from __future__ import annotations

import os
import traceback


def located(error: BaseException) -> str:
    """`TypeName at file.py:line` of the innermost frame; never the message."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}{where}"
