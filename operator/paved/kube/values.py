"""The value of one key of a Secret or ConfigMap, as Paved reads the objects a spec names.

One reading for every caller (the credentials of a secret store, the Prometheus credentials
and CA of a rollout): a Secret's value is base64 decoded strictly and must be UTF-8 text, and
each problem says which part of the reference is at fault, by names only, never by the value.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Literal

from paved.errors import SafeError


class KeyProblem(SafeError):
    """The object is not there (`part` "name") or its key is missing or not text (`part` "key")."""

    def __init__(self, part: Literal["name", "key"], message: str) -> None:
        super().__init__(message)
        self.part = part


def key_value(kind: Literal["Secret", "ConfigMap"], obj: Mapping[str, Any] | None, namespace: str, name: str,
              key: str) -> str:
    """The text under `key` of `obj` (the Secret or ConfigMap `namespace`/`name`, None when
    absent); raises KeyProblem."""
    if obj is None:
        raise KeyProblem("name", f"{kind} {namespace}/{name} not found")
    value = (obj.get("data") or {}).get(key)
    if value is None:
        raise KeyProblem("key", f"{kind} {namespace}/{name} has no key {key!r}")
    if kind == "ConfigMap":
        return str(value)
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise KeyProblem("key", f"the value of key {key!r} of {kind} {namespace}/{name} is not UTF-8 text") from None
