"""The process: one `Runtime` owns settings, leadership, the engines' start and stop, the
webhook server, the probes and the metrics (paved.runtime.process). Handlers receive its
engines as Kopf's `memo`; nothing else keeps process-wide state."""

from paved.runtime.leadership import LeaseTimings
from paved.runtime.process import LOST_LEASE_EXIT_CODE, RunOptions, Runtime, main
from paved.runtime.webhook import WebhookOptions, parse_service


def namespaces_option(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Normalise repeated/comma-separated --namespace values."""
    return tuple(ns.strip() for value in values for ns in value.split(",") if ns.strip())


__all__ = ["LOST_LEASE_EXIT_CODE", "LeaseTimings", "RunOptions", "Runtime", "WebhookOptions", "main", "namespaces_option",
           "parse_service"]
