"""How `paved run` starts Kopf: settings, metrics server, health endpoint.

Settings, and why:
- Progress and diff-base live in annotations with the `paved.dev` prefix
  (AnnotationsProgressStorage / AnnotationsDiffBaseStorage, v2 keys only). Not in status:
  status is generated from our pydantic models into a structural CRD schema, and the API
  server prunes unknown status fields, so Kopf's `status.kopf` would silently vanish and
  handlers would re-run forever. Annotations are schema-free. A handler that succeeds on
  the first try leaves no progress annotation behind (stored and purged in one patch).
- The finalizer is `paved.dev/cleanup` (DESIGN.md: finalizers are `paved.dev/<purpose>`);
  Kopf adds it only for kinds with a mandatory delete handler.
- Posting level WARNING: Kopf's per-handler "succeeded" Events would be a write per
  reconcile; Paved posts its own Events only on transitions (paved.kube.events).
- Watch server_timeout 270 s < client_timeout 300 s: the server closes each watch cleanly
  before the client gives up, so reconnects are routine, not errors; connect_timeout
  bounds a dead API server. Kopf resumes from the last resourceVersion and does not re-run
  resume handlers after a reconnect.
- Server-side label selector `app.kubernetes.io/managed-by=paved` on the child kinds
  (paved.kube.apply.MANAGED_KINDS): Kopf watches only Paved's own Secrets, Roles, ...
  instead of every object of those kinds in the cluster; of Secrets, not the targets of
  ExternalSecretRefs (paved.secretsync.target.TARGET_LABEL), which paved.handlers.secrets
  watches itself, like the refs (paved.kube.watch: Kopf's per-event work was most of the
  operator's CPU at a cold start of thousands of refs).
- Namespaces: only the operator's own (`kubernetes.io/metadata.name`), whose event tells
  the policy audit that Kopf has loaded its indexes (paved.handlers.policy.start_audit).
- max_workers 20: the bound on concurrent synchronous handlers (and on threads blocking
  on the API server); the Kubernetes client's connection pool is sized above it. The
  admission webhook's handlers do not queue in this pool (paved.handlers.admission).
- Peering standalone, scanning disabled: one operator replica, no KopfPeering CRD and no
  permission to watch CRDs; the served resources are discovered once at start-up (the CRDs
  are installed before the operator, by deploy/ or the test fixture).
- Admission: `settings.admission.server` is Paved's webhook server (Kopf's aiohttp server
  over TLS; paved.handlers.admission), which also writes the ValidatingWebhookConfiguration
  `paved.dev` itself (failurePolicy and timeout chosen by Paved, see docs/guardrails.md);
  Kopf's `admission.managed` stays unset. Without certificate files a CA and serving
  certificate are generated at start-up (the caBundle is written with the configuration).
- No diff base for the kinds Kopf only watches (WATCH_ONLY_KINDS: Secrets, thousands):
  Kopf builds one (a deep copy of the body) on every event of
  every kind, for create/update detection that only create/update/resume/delete handlers
  and daemons use, and those kinds have none (tests/unit/test_runtime.py keeps it so).
- The initial listing comes in pages of LIST_CHUNK objects: events of the first page are
  handled while the next is fetched, and a response of thousands of objects is never
  decoded at once.
- Time-based event batching no longer exists in Kopf 1.45 (`queueing.batch_window` is a
  deprecated no-op); per-object queues are consumed as events arrive.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import kopf
from prometheus_client import start_http_server

from paved import logsafety, operator_namespace
from paved.kube import apply as kube
from paved.kube import client as kube_client
from paved.secretsync import target

PREFIX = "paved.dev"
FINALIZER = f"{PREFIX}/cleanup"
MAX_WORKERS = 20
CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 60.0
LIST_CHUNK = 500  # objects per page of Kopf's initial listing
# (apiVersion, kind) of kinds with watch handlers only (see _WatchOnlyDiffBase).
WATCH_ONLY_KINDS = frozenset({("v1", "Secret")})


@dataclass(frozen=True)
class RunOptions:
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    metrics_port: int = 8080
    health_port: int = 8081
    bind_address: str = "0.0.0.0"  # noqa: S104 - in a pod, probes and scrapes come from outside
    verbose: bool = False
    webhook: Any = None  # paved.handlers.admission.WebhookOptions; None: defaults
    exception_namespaces: tuple[str, ...] = ()  # namespaces allowed to hold PolicyExceptions
    audit_interval: float = 600.0  # seconds between full policy audits (jittered)

    @property
    def liveness_endpoint(self) -> str:
        return f"http://{self.bind_address}:{self.health_port}/healthz"


class _WatchOnlyDiffBase(kopf.AnnotationsDiffBaseStorage):
    """Kopf's annotation diff base, skipped for WATCH_ONLY_KINDS (none of their handlers
    reads a diff; building it deep-copies every event's body in Kopf's event loop)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None if _watch_only(body) else super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> Any:
        return None if _watch_only(body) else super().fetch(body=body)


def _watch_only(body: kopf.Body) -> bool:
    return (body.get("apiVersion"), body.get("kind")) in WATCH_ONLY_KINDS


def build_settings(options: RunOptions) -> kopf.OperatorSettings:
    """Kopf settings for Paved (pure: no I/O; see the module docstring for the reasons)."""
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX, v1=False)
    settings.persistence.diffbase_storage = _WatchOnlyDiffBase(prefix=PREFIX, key="last-handled-configuration", v1=False)
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "paved"
    settings.posting.reporting_instance = socket.gethostname()
    settings.posting.event_name_prefix = "paved-event-"
    settings.watching.server_timeout = kube_client.WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = kube_client.WATCH_READ_TIMEOUT
    settings.watching.connect_timeout = CONNECT_TIMEOUT
    settings.watching.chunk_size = LIST_CHUNK
    for kind, api_version in kube.MANAGED_KINDS.items():
        settings.watching.label_selectors[api_version, kind] = f"{kube.MANAGED_BY_LABEL}={kube.MANAGED_BY}"
    settings.watching.label_selectors["v1", "Secret"] += f",!{target.TARGET_LABEL}"
    settings.watching.label_selectors["v1", "Namespace"] = f"kubernetes.io/metadata.name={operator_namespace()}"
    settings.networking.request_timeout = REQUEST_TIMEOUT
    settings.networking.connect_timeout = CONNECT_TIMEOUT
    settings.execution.max_workers = MAX_WORKERS
    settings.peering.standalone = True
    settings.scanning.disabled = True
    if options.webhook is not None:
        from paved.handlers.admission import PavedWebhookServer

        settings.admission.server = PavedWebhookServer(options.webhook)
    return settings


class _QuietWatchSuccess(logging.Filter):
    """Drop Kopf's "Handler '<id>' succeeded." lines of the watch handlers that see every event
    of many objects (children drift, the audit, stores): one line per object at start-up and
    per own write. What those handlers do is logged by Paved."""

    QUIET = re.compile(r"Handler '(drift-.*|audit-.*|.*-cache)' succeeded\.")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.QUIET.fullmatch(record.getMessage())


def main(options: RunOptions) -> None:
    """Run the operator until SIGINT/SIGTERM: metrics server first, then Kopf (blocking)."""
    kopf.configure(verbose=options.verbose, log_format=kopf.LogFormat.PLAIN)
    logsafety.secure()  # wire loggers pinned, tracebacks without messages, whatever the level
    if not options.verbose:
        logging.getLogger("kopf.objects").addFilter(_QuietWatchSuccess())
    kube_client.configure()  # fail fast on bad credentials, before any handler runs
    import paved.handlers  # noqa: F401 - registers every handler with Kopf's default registry
    from paved.handlers import _guard, admission

    _guard.guard_handlers(kopf.get_default_registry())  # Kopf never sees an unexpected error's message

    webhook = admission.self_signed(options.webhook or admission.WebhookOptions(address=options.bind_address))
    options = dataclasses.replace(options, webhook=webhook)

    start_http_server(options.metrics_port, addr=options.bind_address)
    kopf.run(
        settings=build_settings(options),
        standalone=True,
        clusterwide=not options.namespaces,
        namespaces=list(options.namespaces),
        liveness_endpoint=options.liveness_endpoint,
        memo=kopf.Memo(  # namespaces: read by _compose.in_scope; the rest by handlers.policy
            namespaces=frozenset(options.namespaces),
            exception_namespaces=frozenset(options.exception_namespaces),
            audit_interval=options.audit_interval,
        ),
    )


def namespaces_option(values: Sequence[str]) -> tuple[str, ...]:
    """Normalise repeated/comma-separated --namespace values."""
    return tuple(ns.strip() for value in values for ns in value.split(",") if ns.strip())
