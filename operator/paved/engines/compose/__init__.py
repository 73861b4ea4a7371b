"""The compose engine: intent -> Composition -> rendered resources -> providers -> status."""

from paved.engines.compose.engine import (
    AllowanceSource,
    ComposeEngine,
    build_status,
    generated_secret_name,
    namespace_labels,
    render_for_deletion,
)
from paved.engines.compose.model import (
    BACKOFF_CAP,
    HANDLER_RETRIES,
    KUBERNETES,
    REASON_INVALID_SPEC,
    REASON_NO_COMPOSITION,
    REASON_PROVIDER_ERROR,
    REASON_READY,
    REASON_RENDER_FAILED,
    ComposeError,
    ComposeResult,
    IntentKind,
    Outcome,
    ResourceState,
    backoff,
    compositions_from,
    in_scope,
    owner_of,
)

__all__ = [
    "BACKOFF_CAP", "HANDLER_RETRIES", "KUBERNETES", "REASON_INVALID_SPEC", "REASON_NO_COMPOSITION",
    "REASON_PROVIDER_ERROR", "REASON_READY", "REASON_RENDER_FAILED", "AllowanceSource", "ComposeEngine",
    "ComposeError", "ComposeResult", "IntentKind", "Outcome", "ResourceState", "backoff", "build_status",
    "compositions_from", "generated_secret_name", "in_scope", "namespace_labels", "owner_of",
    "render_for_deletion",
]
