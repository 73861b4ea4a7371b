"""Kopf handlers, one module per kind; importing this package registers all of them.

It also imports the providers the handlers render through (the `kubernetes` provider here;
cloud providers are imported by the handler modules of the kinds that use them), so the
provider registry is complete before the first reconcile.

`paved run` imports it once; Kopf's default registry then holds every handler.
"""

from __future__ import annotations

import paved.providers.kubernetes  # noqa: F401 - registers the `kubernetes` provider
from paved.handlers import admission, children, database, identity, platform, policy, rollout, secrets

__all__ = ["admission", "children", "database", "identity", "platform", "policy", "rollout", "secrets"]
