"""Kopf handlers, one module per kind; importing this package registers all of them.

It also imports the providers the handlers render through (the `kubernetes` provider here;
cloud providers are imported by the handler modules of the kinds that use them), so the
provider registry is complete before the first reconcile.

`paved run` imports it once; Kopf's default registry then holds every handler. Modules of
kinds that are not implemented yet (ExternalSecretRef, ProgressiveRollout, SecretStore,
ClusterSecretStore, IntentPolicy) are imported when their module exists and skipped
otherwise: their CRDs are installed, so `kubectl get` works, but nothing reconciles them.
"""

from __future__ import annotations

import importlib
import importlib.util

import paved.providers.kubernetes  # noqa: F401 - registers the `kubernetes` provider
from paved.handlers import children, database, identity, platform

OPTIONAL_MODULES = ("secrets", "rollout", "policy")

for _name in OPTIONAL_MODULES:
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")

__all__ = ["children", "database", "identity", "platform"]
