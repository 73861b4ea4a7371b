"""Paved: an intent-driven platform operator for Kubernetes."""

GROUP = "paved.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "paved"
MANAGED_BY_LABEL = ("app.kubernetes.io/managed-by", "paved")

__version__ = "0.1.0"
