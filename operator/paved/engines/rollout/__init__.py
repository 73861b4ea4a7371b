"""The rollout engine: ProgressiveRollout runners, their pools and their wake-ups."""

from paved.engines.rollout.engine import IDLE_RESYNC, WAKE_DEBOUNCE, RolloutEngine, Slot
from paved.engines.rollout.runner import (
    KIND,
    REASON_ENDPOINT_REFUSED,
    REASON_INVALID_SPEC,
    REASON_QUERY_REJECTED,
    REASON_ROUTING_INVALID,
    REASON_TARGET_NOT_FOUND,
    ROLLOUT_STATUS,
    RolloutRunner,
    TickResult,
    command_of,
    endpoint_problems,
)

__all__ = [
    "IDLE_RESYNC", "KIND", "REASON_ENDPOINT_REFUSED", "REASON_INVALID_SPEC", "REASON_QUERY_REJECTED", "REASON_ROUTING_INVALID",
    "REASON_TARGET_NOT_FOUND", "ROLLOUT_STATUS", "WAKE_DEBOUNCE", "RolloutEngine", "RolloutRunner", "Slot", "TickResult", "command_of",
    "endpoint_problems",
]
