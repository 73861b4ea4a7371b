"""The ExternalSecretRef sync engine: one thread, cycles batched by store (see .engine)."""

from paved.engines.secretsync.engine import (
    FAILED_STORE_CHECK_INTERVAL,
    STORE_CHECK_INTERVAL,
    STORE_PLURALS,
    STORE_STATUS,
    CycleReport,
    SyncEngine,
    engine_status,
)
from paved.engines.secretsync.kube import REF_CONDITIONS, REF_KIND, REF_STATUS, STATUS_FIELD_MANAGER, KubeApi

__all__ = [
    "FAILED_STORE_CHECK_INTERVAL", "REF_CONDITIONS", "REF_KIND", "REF_STATUS", "STATUS_FIELD_MANAGER", "STORE_CHECK_INTERVAL", "STORE_PLURALS",
    "STORE_STATUS", "CycleReport",
    "KubeApi", "SyncEngine", "engine_status",
]
