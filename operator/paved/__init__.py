"""Paved: an intent-driven platform operator for Kubernetes."""

import os

GROUP = "paved.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "paved"
# Kopf's own finalizer (paved.runtime.settings): on an object, it makes Kopf run delete handlers.
KOPF_FINALIZER = f"{GROUP}/cleanup"
MANAGED_BY_LABEL = ("app.kubernetes.io/managed-by", "paved")

OPERATOR_NAMESPACE_ENV = "PAVED_OPERATOR_NAMESPACE"
DEFAULT_OPERATOR_NAMESPACE = "paved-system"  # deploy/'s namespace

__version__ = "0.1.0"


def operator_namespace() -> str:
    """The namespace the operator runs in (its own Secrets live there)."""
    return os.environ.get(OPERATOR_NAMESPACE_ENV) or DEFAULT_OPERATOR_NAMESPACE
