"""Values a composition asks Paved to generate once (`spec.generatedSecrets`), e.g. a master password.

Generation is here, next to the engine that declares what it needs; storing the values (only
ever in Kubernetes Secrets) is the caller's job. Values are alphanumeric so compositions can
put them in URIs and YAML without escaping.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from typing import Any

from paved.api.platform import GENERATED_SECRET_LENGTH, GENERATED_SECRET_MAX_LENGTH, GENERATED_SECRET_MIN_LENGTH
from paved.render.errors import RenderError

_ALPHABET = string.ascii_letters + string.digits


def declared_secrets(composition: Mapping[str, Any]) -> dict[str, int]:
    """{name: length} of the composition's generatedSecrets."""
    name = (composition.get("metadata") or {}).get("name")
    declared: dict[str, int] = {}
    for index, entry in enumerate((composition.get("spec") or {}).get("generatedSecrets") or []):
        secret, length = entry.get("name"), entry.get("length", GENERATED_SECRET_LENGTH)
        if not isinstance(secret, str) or not secret.isidentifier():
            raise RenderError(f"spec.generatedSecrets[{index}].name must be an identifier", composition=name)
        if not isinstance(length, int) or not GENERATED_SECRET_MIN_LENGTH <= length <= GENERATED_SECRET_MAX_LENGTH:
            raise RenderError(
                f"spec.generatedSecrets[{index}].length must be"
                f" {GENERATED_SECRET_MIN_LENGTH}..{GENERATED_SECRET_MAX_LENGTH}",
                composition=name,
            )
        declared[secret] = length
    return declared


def generate_missing(composition: Mapping[str, Any], existing: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every declared secret: the existing value when there is one, a fresh random one otherwise.

    Existing values win even if the declared length changed: a password is generated once.
    """
    existing = existing or {}
    return {
        name: existing[name] if existing.get(name) else "".join(secrets.choice(_ALPHABET) for _ in range(length))
        for name, length in declared_secrets(composition).items()
    }
