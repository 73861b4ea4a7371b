"""How the runtime configures Kopf, for each of its two operators, and fences Kopf's writes.

Settings, and why:
- Progress and diff-base live in annotations with the `paved.dev` prefix
  (AnnotationsProgressStorage / AnnotationsDiffBaseStorage, v2 keys only). Not in status:
  status is generated from our pydantic models into a structural CRD schema, and the API
  server prunes unknown status fields, so Kopf's `status.kopf` would silently vanish and
  handlers would re-run forever. Annotations are schema-free. A handler that succeeds on
  the first try leaves no progress annotation behind (stored and purged in one patch).
- The finalizer is `paved.dev/cleanup` (DESIGN.md: finalizers are `paved.dev/<purpose>`);
  Kopf adds it only for kinds with a mandatory delete handler.
- Posting level WARNING on the leader: Kopf's per-handler "succeeded" Events would be a
  write per reconcile; Paved posts its own Events only on transitions (paved.kube.events).
  The serving operator posts nothing: a replica that does not lead writes nothing.
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
- Peering standalone, scanning disabled: Kopf's own peering (a KopfPeering object per
  operator) is not Paved's leader election (a Lease, paved.runtime.leadership); the served
  resources are discovered once at start-up (the CRDs are installed before the operator).
- No diff base for the kinds Kopf only watches (WATCH_ONLY_KINDS: Secrets, thousands):
  Kopf builds one (a deep copy of the body) on every event of every kind, for create/update
  detection that only create/update/resume/delete handlers and daemons use, and those kinds
  have none (tests/unit/test_runtime.py keeps it so).
- The initial listing comes in pages of LIST_CHUNK objects: events of the first page are
  handled while the next is fetched, and a response of thousands of objects is never
  decoded at once.
"""

from __future__ import annotations

import logging
import re
import socket
from typing import Any

import kopf
from kopf._cogs.clients import api as kopf_api  # the one function every Kopf request goes through

from paved import KOPF_FINALIZER, fence, operator_namespace
from paved.kube import apply as kube
from paved.kube import client as kube_client
from paved.secretsync import target

PREFIX = "paved.dev"
FINALIZER = KOPF_FINALIZER
MAX_WORKERS = 20
CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 60.0
LIST_CHUNK = 500  # objects per page of Kopf's initial listing
# (apiVersion, kind) of kinds with watch handlers only (see _WatchOnlyDiffBase).
WATCH_ONLY_KINDS = frozenset({("v1", "Secret")})


class _WatchOnlyDiffBase(kopf.AnnotationsDiffBaseStorage):
    """Kopf's annotation diff base, skipped for WATCH_ONLY_KINDS (none of their handlers
    reads a diff; building it deep-copies every event's body in Kopf's event loop)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None if _watch_only(body) else super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> Any:
        return None if _watch_only(body) else super().fetch(body=body)


def _watch_only(body: kopf.Body) -> bool:
    return (body.get("apiVersion"), body.get("kind")) in WATCH_ONLY_KINDS


def _common(settings: kopf.OperatorSettings) -> kopf.OperatorSettings:
    settings.watching.server_timeout = kube_client.WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = kube_client.WATCH_READ_TIMEOUT
    settings.watching.connect_timeout = CONNECT_TIMEOUT
    settings.watching.chunk_size = LIST_CHUNK
    settings.networking.request_timeout = REQUEST_TIMEOUT
    settings.networking.connect_timeout = CONNECT_TIMEOUT
    settings.peering.standalone = True
    settings.scanning.disabled = True
    return settings


def leading_settings() -> kopf.OperatorSettings:
    """The leader's Kopf: every reconciler, daemon and timer (pure: no I/O)."""
    settings = _common(kopf.OperatorSettings())
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX, v1=False)
    settings.persistence.diffbase_storage = _WatchOnlyDiffBase(prefix=PREFIX, key="last-handled-configuration", v1=False)
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "paved"
    settings.posting.reporting_instance = socket.gethostname()
    settings.posting.event_name_prefix = "paved-event-"
    for kind, api_version in kube.MANAGED_KINDS.items():
        settings.watching.label_selectors[api_version, kind] = f"{kube.MANAGED_BY_LABEL}={kube.MANAGED_BY}"
    settings.watching.label_selectors["v1", "Secret"] += f",!{target.TARGET_LABEL}"
    settings.watching.label_selectors["v1", "Namespace"] = f"kubernetes.io/metadata.name={operator_namespace()}"
    settings.execution.max_workers = MAX_WORKERS
    return settings


def serving_settings(server: kopf.WebhookServer) -> kopf.OperatorSettings:
    """Every replica's Kopf: the admission webhook and its indexes; it posts and writes nothing."""
    settings = _common(kopf.OperatorSettings())
    settings.posting.enabled = False
    settings.admission.server = server
    return settings


class QuietWatchSuccess(logging.Filter):
    """Drop Kopf's "Handler '<id>' succeeded." lines of the watch handlers that see every event
    of many objects (children drift, the audit, stores): one line per object at start-up and
    per own write. What those handlers do is logged by Paved."""

    QUIET = re.compile(r"Handler '(drift-.*|audit-.*|.*-cache)' succeeded\.")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.QUIET.fullmatch(record.getMessage())


def fence_kopf_writes() -> None:
    """Route Kopf's own requests (patches of status, annotations and finalizers; Events) through
    the write fence, like Paved's, under Paved's User-Agent (it names the replica in the API
    server's audit log): Kopf sends them all through `kopf._cogs.clients.api.request`. A
    private function of a pinned Kopf (constraints.txt); tests/unit/test_runtime.py checks
    that it is still there and still the one path."""
    original = kopf_api.request
    if getattr(original, "paved_fenced", False):
        return

    async def request(method: str, url: str, **kwargs: Any) -> Any:
        if method.upper() not in fence.READ_METHODS and not fence.WRITES.permits():
            raise kopf.TemporaryError(f"{method.upper()} {url}: {fence.WRITES.why_not()}", delay=60)
        kwargs["headers"] = {**(kwargs.get("headers") or {}), "User-Agent": kube_client.USER_AGENT}
        return await original(method, url, **kwargs)

    request.paved_fenced = True  # type: ignore[attr-defined]
    kopf_api.request = request
