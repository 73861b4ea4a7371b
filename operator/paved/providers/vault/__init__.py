"""Vault / OpenBao providers (hvac). `store` is the KV v2 secret store provider (`vault`)."""

from __future__ import annotations

import hvac.exceptions

from paved.errors import unquoted


def error_text(error: hvac.exceptions.VaultError) -> str:
    """Vault's error strings, without the quoted spans in which it may echo what it was sent."""
    return unquoted(", ".join(str(e) for e in (error.errors or []))) or type(error).__name__
