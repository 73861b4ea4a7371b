"""The ExternalSecretRef sync engine: the I/O around the pure core (paved.secretsync).

The Kopf handlers in paved.handlers.secrets only validate and register refs; this engine
does the syncing.

ONE engine thread per operator (`SyncEngine`, started by `@kopf.on.startup`) runs cycles:
it sleeps until the earliest due time (or a registration wakes it and it gathers for a
quarter second), takes every due ref, groups them by store and, per store, asks the store
once for the versions of all distinct remote keys, fetches only the values that changed,
and then per ref writes the Secret (server-side apply, owned by the ref) only if its
content hash changed, writes the status only if it changed, stamps opted-in workloads
once per cycle, and schedules the ref again. Every decision is taken by the pure core
(paved.secretsync); this module is the I/O around it.

Events (one per Secret written, one per Ready transition; plan.event_for) are queued to a
background recorder (paved.kube.events.EventRecorder: 10 a second after a burst of 50):
a cold start of thousands of refs spreads its Events out after the burst instead of
posting one inside every sync. A cycle writing BURST_WRITES Secrets or more holds
paved.ratelimit.BURST, and the policy audit's condition writes yield to it meanwhile.

On any store or key failure the Secret is not touched; the ref gets Ready=False,
Stale=True, the reason and the time of the last good sync, and retries with capped,
jittered backoff. Nothing here logs, posts or stores a secret value: messages are built
from names, fields and versions only (an API error on a Secret write keeps no value either:
paved.kube.client rebuilds every API error without them).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import secrets
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from paved import API_VERSION, operator_namespace, ratelimit
from paved.errors import located
from paved.api.common import READY, STALE, now_rfc3339
from paved.api.kinds import SpecError, kind_info
from paved.kube import apply as kube_apply
from paved.kube.apply import MANAGED_BY, MANAGED_BY_LABEL
from paved.kube import events as kube_events
from paved.kube import status as kube_status
from paved.kube.client import ApiError, list_pages, request, resource_info
from paved.providers.base import Owner
from paved.providers.secretstores import (
    AUTH_FAILED,
    CREDENTIALS_MISSING,
    StoreConfig,
    StoreError,
    StoreProviders,
)
from paved.secretsync import access, plan, restart, target
from paved.secretsync.model import CLUSTER_SECRET_STORE, SECRET_STORE, RefSpec, StoreFailure, StoreKey
from paved.secretsync.state import SyncState

log = logging.getLogger(__name__)

REF_KIND = "ExternalSecretRef"
REF_PLURAL = "externalsecretrefs"
STORE_PLURALS = {SECRET_STORE: "secretstores", CLUSTER_SECRET_STORE: "clustersecretstores"}
HASH_KEY_SECRET = "paved-content-hash-key"  # in the operator's namespace; keys every content digest
STORE_CHECK_INTERVAL = 300.0  # seconds between authentication re-checks of a store
GATHER_SECONDS = 0.25  # after a wake-up, wait this long so refs created together sync together
IDLE_WAIT = 30.0  # the loop re-evaluates at least this often
# The engine's Events (one per Secret written): a cold start must not post thousands inline.
_RECORDER = kube_events.EventRecorder()
# A cycle writing this many Secrets holds paved.ratelimit.BURST: the policy audit yields to it.
BURST_WRITES = 100
REF_CONDITIONS = frozenset({READY, STALE})  # the ref's conditions the engine writes; others (PolicyCompliant) are kept
STATUS_FIELD_MANAGER = "paved-secret-sync"  # owns every status field but other writers' conditions
WRITE_WORKERS = 8  # threads writing Secrets and statuses of one cycle; a cycle's reads stay batched
# A cycle writing at least this many Secrets in one namespace reads the metadata of that
# namespace's Secrets in one listing instead of one GET per Secret (a cold start: thousands).
LIST_SECRETS_AT = 20
LIST_PAGE_SIZE = 500
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
# This cycle's listings: namespace -> Secret name -> target.live_view of that Secret.
Listing = Mapping[str, Mapping[str, dict[str, Any]]]

WORKLOADS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"))


def _iso(moment: float) -> str:
    return now_rfc3339(datetime.fromtimestamp(moment, timezone.utc))


def engine_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a ref's status the engine owns: all of it but other writers' conditions."""
    conditions = [c for c in status.get("conditions") or [] if c.get("type") in REF_CONDITIONS]
    return {**status, "conditions": conditions}


# --- the Kubernetes side, as the engine needs it ----------------------------------------------


class KubePort(Protocol):
    """The Kubernetes reads and writes of the engine (real: KubeApi; unit tests: a fake)."""

    def get_store(self, key: StoreKey) -> dict[str, Any] | None: ...
    def namespace_labels(self, name: str) -> dict[str, str] | None: ...
    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def secrets_metadata(self, namespace: str) -> dict[str, dict[str, Any]]: ...
    def apply_secret(self, owner: Owner, body: Mapping[str, Any]) -> None: ...
    def merge_secret(self, live: Mapping[str, Any], patch: Mapping[str, Any]) -> None: ...
    def delete_secret(self, namespace: str, name: str, uid: str | None) -> None: ...
    def apply_ref_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...
    def list_workloads(self, namespace: str) -> list[dict[str, Any]]: ...
    def patch_workload(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> None: ...
    def event(self, owner: Owner, reason: str, message: str, type: str = "Normal") -> None: ...
    def secret_value(self, namespace: str, name: str, key: str) -> str: ...
    def service_account_token(self, namespace: str, name: str, audiences: Sequence[str], seconds: int) -> str: ...
    def content_hash_key(self) -> bytes: ...


class KubeApi:
    """KubePort over paved.kube (the operator's ServiceAccount, deploy/rbac.yaml)."""

    def get_store(self, key: StoreKey) -> dict[str, Any] | None:
        return kube_apply.get(API_VERSION, key.kind, key.name, key.namespace or None)

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        try:
            namespace = kube_apply.get("v1", "Namespace", name)
        except ApiError as error:  # unreadable: label-selected allowances refuse (paved.secretsync.access)
            log.warning("namespace %s not readable: %s %s", name, error.status, error.reason)
            return None
        return dict((namespace or {}).get("metadata", {}).get("labels") or {}) if namespace else None

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        # From the watch cache (a cycle writing many Secrets of a namespace lists them instead).
        # A Merge write is guarded by the resourceVersion read, so a read a moment behind costs
        # a retry, not data.
        return kube_apply.get("v1", "Secret", name, namespace, cached=True)

    def secrets_metadata(self, namespace: str) -> dict[str, dict[str, Any]]:
        """Every Secret of `namespace` by name, as much of its metadata as the engine reads of a
        live target (target.live_view), listed without data a page at a time."""
        path = resource_info("v1", "Secret").path(namespace=namespace)
        return {item["metadata"]["name"]: target.live_view(item)
                for page in list_pages(path, limit=LIST_PAGE_SIZE, accept=METADATA_ONLY) for item in page.get("items") or []}

    def content_hash_key(self) -> bytes:
        """The operator's key for content digests: random, made once, kept in its namespace."""
        namespace = operator_namespace()
        live = kube_apply.get("v1", "Secret", HASH_KEY_SECRET, namespace)
        if live is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": HASH_KEY_SECRET, "namespace": namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
                "type": "Opaque",
                "data": {"key": base64.b64encode(secrets.token_bytes(32)).decode()},
            }
            try:
                request("POST", resource_info("v1", "Secret").path(namespace=namespace), operation="create", body=body)
            except ApiError as error:
                if not error.already_exists:  # another replica made it first: use theirs
                    raise
            live = kube_apply.get("v1", "Secret", HASH_KEY_SECRET, namespace) or {}
        return base64.b64decode((live.get("data") or {})["key"])

    def apply_secret(self, owner: Owner, body: Mapping[str, Any]) -> None:
        kube_apply.apply(body, owner)

    def merge_secret(self, live: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
        kube_apply.merge_patch(live, patch)

    def delete_secret(self, namespace: str, name: str, uid: str | None) -> None:
        kube_apply.delete("v1", "Secret", name, namespace, uid=uid)

    def apply_ref_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Server-side apply the engine's part of the status (kube.status.apply_status): one
        request, no read, and the policy audit's PolicyCompliant is not the engine's to touch."""
        kube_status.apply_status(API_VERSION, REF_KIND, namespace, name, status, field_manager=STATUS_FIELD_MANAGER)

    def list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        found = []
        for api_version, kind in WORKLOADS:
            answer = request("GET", resource_info(api_version, kind).path(namespace=namespace), operation="list")
            for item in answer.get("items", []):
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                found.append(item)
        return found

    def patch_workload(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        # Not kube_apply.merge_patch: a resourceVersion guard would lose the restart to any concurrent write.
        request("PATCH", resource_info("apps/v1", kind).path(name, namespace), operation="patch", body=body,
                content_type="application/merge-patch+json")

    def event(self, owner: Owner, reason: str, message: str, type: str = "Normal") -> None:
        _RECORDER.record(owner, reason, message, type)  # type: ignore[arg-type]

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        try:
            secret = kube_apply.get("v1", "Secret", name, namespace)
        except ApiError as error:
            raise StoreError(f"reading Secret {namespace}/{name} failed: {error.status} {error.reason}",
                             reason=CREDENTIALS_MISSING) from None
        if secret is None:
            raise StoreError(f"Secret {namespace}/{name} not found", reason=CREDENTIALS_MISSING)
        encoded = (secret.get("data") or {}).get(key)
        if encoded is None:
            raise StoreError(f"Secret {namespace}/{name} has no key {key!r}", reason=CREDENTIALS_MISSING)
        return base64.b64decode(encoded).decode()

    def service_account_token(self, namespace: str, name: str, audiences: Sequence[str], seconds: int) -> str:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": list(audiences), "expirationSeconds": seconds},
        }
        try:
            answer = request("POST", resource_info("v1", "ServiceAccount").path(name, namespace, "token"),
                             operation="token-request", body=body)
        except ApiError as error:
            if error.not_found:
                raise StoreError(f"ServiceAccount {namespace}/{name} not found", reason=CREDENTIALS_MISSING) from None
            raise StoreError(f"TokenRequest for ServiceAccount {namespace}/{name} failed: {error.status} {error.reason}",
                             reason=AUTH_FAILED) from None
        return str(answer["status"]["token"])


# --- the engine -------------------------------------------------------------------------------


@dataclass
class CycleReport:
    refs: int = 0
    stores: int = 0
    keys_checked: int = 0
    keys_fetched: int = 0
    secrets_written: int = 0
    failures: int = 0
    restarts: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class _Applied:
    """One ref's part of a cycle, for the cycle's report and its workload restarts."""

    uid: str
    wrote: bool = False
    failure: str | None = None  # the Ready reason when the ref did not sync
    changed: tuple[str, str] | None = None  # (namespace, Secret) whose content this ref changed


class _TargetProblem(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class SyncEngine:
    """Registered refs, one loop, cycles batched by store (see the module docstring)."""

    def __init__(self, kube: KubePort, *, clock: Callable[[], float] = time.time, providers: StoreProviders | None = None,
                 write_workers: int = WRITE_WORKERS) -> None:
        self.kube = kube
        self.write_workers = write_workers
        self._writers: ThreadPoolExecutor | None = None
        self._hash_key: bytes | None = None
        self.clock = clock
        self.state = SyncState()
        self.providers = providers or StoreProviders(kube)
        self._stores: dict[StoreKey, dict[str, Any] | None] = {}
        self._stores_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_report = CycleReport()

    @property
    def hash_key(self) -> bytes:
        """The content-digest key, read (or made) once on first use."""
        if self._hash_key is None:
            self._hash_key = self.kube.content_hash_key()
        return self._hash_key

    # --- registration (handler threads) -------------------------------------------------

    def register(self, ref: RefSpec, status: Mapping[str, Any] | None) -> float:
        due = self.state.register(ref, status, self.clock())
        if due <= self.clock() + GATHER_SECONDS:
            self._wake.set()
        return due

    def report_invalid(self, body: Mapping[str, Any], problems: list[str]) -> None:
        """A ref whose spec cannot be synced: unregistered, Ready=False naming the fields (the
        Secret is left alone). Written only when that changes the status."""
        metadata = body.get("metadata") or {}
        self.state.unregister(metadata.get("uid", ""))
        old = dict(body.get("status") or {})
        status = plan.invalid_status(old, metadata.get("generation"), problems)
        if kube_status.status_delta(old, status):
            try:
                self.kube.apply_ref_status(metadata.get("namespace", ""), metadata.get("name", ""), engine_status(status))
            except ApiError as error:
                if not error.not_found:
                    log.warning("status of %s %s/%s not written: %s %s", REF_KIND, metadata.get("namespace"),
                                metadata.get("name"), error.status, error.reason)

    def unregister(self, uid: str) -> None:
        self.state.unregister(uid)

    def store_seen(self, key: StoreKey, body: Mapping[str, Any] | None) -> None:
        """A store appeared, changed or vanished (Kopf event); its refs are due at once on change."""
        snapshot = {"spec": dict(body.get("spec") or {}), "metadata": dict(body.get("metadata") or {})} if body else None
        with self._stores_lock:
            previous = self._stores.get(key, "unknown")
            self._stores[key] = snapshot
        old_spec = previous.get("spec") if isinstance(previous, dict) else previous
        new_spec = snapshot.get("spec") if snapshot else None
        if old_spec != new_spec:
            if previous != "unknown":
                self.providers.forget(key)
                self.state.forget_store(key)
            if self.state.store_changed(key, self.clock()):
                self._wake.set()

    def repair(self, uid: str) -> None:
        if self.state.mark_repair(uid, self.clock()):
            self._wake.set()

    # --- the loop ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="paved-secret-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        if self._writers is not None:
            self._writers.shutdown(wait=True)
            self._writers = None
        self.providers.close()

    def _loop(self) -> None:
        log.info("secret sync engine started")
        while not self._stop.is_set():
            now = self.clock()
            due = self.state.next_due()
            if due > now:
                woken = self._wake.wait(timeout=min(due - now, IDLE_WAIT))
                if woken:
                    self._wake.clear()
                    self._stop.wait(GATHER_SECONDS)
                continue
            try:
                self.run_cycle()
            except Exception as error:  # noqa: BLE001 - the loop must survive anything
                log.error("secret sync cycle failed: %s", located(error))
                self._stop.wait(1.0)
        log.info("secret sync engine stopped")

    # --- one cycle --------------------------------------------------------------------

    def run_cycle(self) -> CycleReport:
        """Sync every due ref once; returns what happened (counts, no values)."""
        started = time.perf_counter()
        now = self.clock()
        stamp = _iso(now)
        taken = self.state.take_due(now)
        report = CycleReport(refs=len(taken))
        if not taken:
            return report
        pending = {m.spec.uid: m for m in taken}
        labels: dict[str, dict[str, str] | None] = {}
        try:
            outcomes: list[tuple[plan.RefMemory, plan.Decision]] = []
            for store_key, specs in plan.group_by_store(m.spec for m in taken).items():
                report.stores += 1
                outcomes += self._sync_store(store_key, [pending[s.uid] for s in specs], stamp, labels, report)
            changed: dict[str, set[str]] = defaultdict(set)
            writes = Counter(m.spec.namespace for m, decision in outcomes if decision.touches_secret)
            with ratelimit.BURST.held() if writes.total() >= BURST_WRITES else contextlib.nullcontext():
                applied_all = self._apply_all(outcomes, stamp, now, self._list_targets(writes))
            for applied in applied_all:
                pending.pop(applied.uid, None)
                report.secrets_written += applied.wrote
                if applied.failure is not None:
                    report.failures += 1
                    report.reasons[applied.failure] = report.reasons.get(applied.failure, 0) + 1
                if applied.changed is not None:
                    changed[applied.changed[0]].add(applied.changed[1])
            report.restarts = self._restart(changed)
        finally:
            if pending:  # only after an unexpected error: give them back, retry soon
                self.state.release(pending.values(), delay=5.0, now=now)
            self.state.evict()
        report.seconds = time.perf_counter() - started
        self.last_report = report
        log.info(
            "secret sync cycle: %d ref(s), %d store(s), %d key(s) checked, %d fetched, %d Secret(s) written, %d failure(s), %.2fs",
            report.refs, report.stores, report.keys_checked, report.keys_fetched, report.secrets_written, report.failures, report.seconds,
        )
        return report

    def _store(self, key: StoreKey) -> dict[str, Any] | None:
        with self._stores_lock:
            if key in self._stores:
                return self._stores[key]
        body = self.kube.get_store(key)
        with self._stores_lock:
            self._stores.setdefault(key, body)
        return body

    def store_config(self, key: StoreKey, body: Mapping[str, Any]) -> tuple[StoreConfig, Any]:
        """Parse a store object; raise SpecError naming fields."""
        spec = kind_info(key.kind).parse_spec(body.get("spec"))
        return StoreConfig(key, spec.provider, key.namespace or operator_namespace()), spec  # type: ignore[attr-defined]

    def _sync_store(
        self,
        key: StoreKey,
        memories: list[plan.RefMemory],
        stamp: str,
        labels: dict[str, dict[str, str] | None],
        report: CycleReport,
    ) -> list[tuple[plan.RefMemory, plan.Decision]]:
        where = f" in namespace {key.namespace}" if key.namespace else ""
        try:
            body = self._store(key)
        except ApiError as error:
            failed = plan.failure("StoreUnavailable", f"spec.storeRef: reading {key} failed: {error.status} {error.reason}",
                                  field="spec.storeRef.name", asked_backend=False)
            return [(m, failed) for m in memories]
        if body is None:
            missing = plan.failure(plan.STORE_NOT_FOUND, f"spec.storeRef.name: {key.kind} {key.name} not found{where}; "
                                   "create it or fix the name", field="spec.storeRef.name", asked_backend=False)
            return [(m, missing) for m in memories]
        try:
            config, spec = self.store_config(key, body)
        except SpecError as error:
            invalid = plan.failure(plan.STORE_INVALID, f"spec.storeRef.name: {key} is invalid: {'; '.join(error.problems)}",
                                   field="spec.storeRef.name", asked_backend=False)
            return [(m, invalid) for m in memories]
        outcomes: list[tuple[plan.RefMemory, plan.Decision]] = []
        allowed = memories
        if key.cluster:
            allowed = []
            for memory in memories:
                namespace = memory.spec.namespace
                if namespace not in labels:
                    labels[namespace] = self.kube.namespace_labels(namespace)
                verdict = access.check(key.name, spec.access, memory.spec, labels[namespace])
                if verdict.allowed:
                    allowed.append(memory)
                else:
                    outcomes.append((memory, plan.failure(plan.ACCESS_DENIED, f"{verdict.field}: {verdict.message}",
                                                          field=verdict.field, asked_backend=False, retry=False)))
        if not allowed:
            return outcomes
        keys = plan.distinct_keys(m.spec for m in allowed)
        report.keys_checked += len(keys)
        try:
            provider = self.providers.get(config)
            observed = provider.versions(keys)
            cached = self.state.cached(key, keys)
            wanted = plan.keys_to_fetch(allowed, observed, cached, stamp)
            fetched = provider.fetch(wanted) if wanted else {}
            report.keys_fetched += len(wanted)
        except StoreError as error:
            failed = plan.store_failed(StoreFailure(error.reason, f"{key}: {error}", error.retryable))
            return outcomes + [(m, failed) for m in allowed]
        except Exception as error:  # noqa: BLE001 - an unexpected provider failure must not stop other stores
            log.error("store %s failed unexpectedly: %s", key, located(error))
            failed = plan.store_failed(StoreFailure("ProviderError", f"{key}: unexpected {type(error).__name__}"))
            return outcomes + [(m, failed) for m in allowed]
        self.state.remember(key, fetched)
        values = {**cached, **fetched}
        for memory in allowed:
            outcomes.append((memory, plan.decide(memory, observed, values, stamp, hash_key=self.hash_key)))
        return outcomes

    # --- applying the decisions ---------------------------------------------------------

    def _apply_all(self, outcomes: Sequence[tuple[plan.RefMemory, plan.Decision]], stamp: str, now: float,
                   listed: Listing) -> list[_Applied]:
        """Apply every ref's decision: refs of one target Secret in order, different Secrets in
        parallel (each ref costs a few sequential API requests; one thread would make a cold
        start of thousands of refs a queue)."""
        by_target: dict[tuple[str, str], list[tuple[plan.RefMemory, plan.Decision]]] = defaultdict(list)
        for memory, decision in outcomes:
            by_target[(memory.spec.namespace, memory.spec.target.name)].append((memory, decision))

        def apply_group(group: list[tuple[plan.RefMemory, plan.Decision]]) -> list[_Applied]:
            # Only the first ref of a target may trust the listing: the next one must see its write.
            return [self._apply(memory, decision, stamp, now, listed if index == 0 else {})
                    for index, (memory, decision) in enumerate(group)]

        groups = list(by_target.values())
        if self.write_workers <= 1 or len(groups) <= 1:
            return [applied for group in groups for applied in apply_group(group)]
        if self._writers is None:
            self._writers = ThreadPoolExecutor(self.write_workers, thread_name_prefix="paved-secret-write")
        results: list[_Applied] = []
        for future in [self._writers.submit(apply_group, group) for group in groups]:
            try:
                results.extend(future.result())
            except Exception as error:  # noqa: BLE001 - the group's refs stay pending and are retried
                log.error("applying a sync outcome failed: %s", located(error))
        return results

    def _list_targets(self, writes: Counter[str]) -> Listing:
        """namespace -> its Secrets (target.live_view) by name, for the namespaces where this
        cycle writes LIST_SECRETS_AT Secrets or more (others: one GET per Secret, see _live)."""
        listed: dict[str, dict[str, dict[str, Any]]] = {}
        for namespace, count in writes.items():
            if count >= LIST_SECRETS_AT:
                try:
                    listed[namespace] = self.kube.secrets_metadata(namespace)
                except ApiError as error:
                    log.warning("listing the Secrets of %s failed (%s %s); reading them one by one", namespace,
                                error.status, error.reason)
        return listed

    def _live(self, spec: RefSpec, listed: Listing) -> dict[str, Any] | None:
        """The target Secret as it is now (metadata at least): from this cycle's listing, else a GET."""
        secrets_of_namespace = listed.get(spec.namespace)
        if secrets_of_namespace is not None:
            return secrets_of_namespace.get(spec.target.name)
        return self.kube.get_secret(spec.namespace, spec.target.name)

    def _apply(self, memory: plan.RefMemory, decision: plan.Decision, stamp: str, now: float, listed: Listing) -> _Applied:
        """Write one ref's Secret (or remove its keys), then its status and Event; schedule it."""
        spec = memory.spec
        owner = Owner(API_VERSION, REF_KIND, spec.name, spec.namespace, spec.uid, spec.generation)
        applied = _Applied(spec.uid)
        previous_hash: str | None = None
        try:
            if decision.action == "write":
                previous_hash = self._write_secret(owner, spec, decision, listed)
                applied.wrote = True
            elif decision.action == "delete":
                previous_hash = self._remove_keys(owner, spec, listed)
        except _TargetProblem as problem:
            decision = plan.failure(problem.reason, problem.message, field="spec.target.name", retry=problem.reason == plan.TARGET_WRITE_FAILED)
        if not decision.success:
            applied.failure = decision.reason
        status = plan.status_for(memory, decision, stamp)
        written = status
        if kube_status.status_delta(memory.status, status):
            try:
                self.kube.apply_ref_status(spec.namespace, spec.name, engine_status(status))
            except ApiError as error:
                if error.not_found:  # the ref is gone
                    self.state.unregister(spec.uid)
                    return applied
                log.warning("status of %s not written: %s %s", spec, error.status, error.reason)
                written = memory.status  # so that the next cycle writes it again
        self._event(owner, plan.event_for(spec, memory.status, status, decision))
        self.state.complete(memory, decision, written, now)
        if decision.touches_secret and previous_hash and previous_hash != decision.content_hash:
            applied.changed = (spec.namespace, spec.target.name)
        return applied

    def _write_secret(self, owner: Owner, spec: RefSpec, decision: plan.Decision, listed: Listing) -> str | None:
        """Write the target Secret; return the content hash it had before (None: new)."""
        assert decision.data is not None and decision.content_hash
        name = spec.target.name
        try:
            live = self._live(spec, listed)
            if spec.target.creation_policy == "Owner":
                if live is not None and not kube_apply.is_owned_by(live, owner):
                    raise _TargetProblem(plan.TARGET_CONFLICT, (
                        f"spec.target.name: Secret {name} exists and is not owned by this ExternalSecretRef; "
                        "delete it, rename the target, or set spec.target.creationPolicy: Merge"))
                self.kube.apply_secret(owner, target.owned_secret(spec, decision.data, decision.content_hash))
            else:
                if live is None:
                    raise _TargetProblem("TargetNotFound", (
                        f"spec.target.name: Secret {name} does not exist; creationPolicy Merge only adds keys to "
                        "an existing Secret (use Owner to have it created)"))
                self.kube.merge_secret(live, target.merge_patch(spec, decision.data, decision.content_hash))
            return target.written_hash(live)
        except ApiError as error:  # its message keeps no value of the request (paved.kube.client)
            message = f"{error.status} {error.reason}: {error.message}"
            raise _TargetProblem(plan.TARGET_WRITE_FAILED, f"spec.target: writing Secret {name} failed: {message}") from None

    def _remove_keys(self, owner: Owner, spec: RefSpec, listed: Listing) -> str | None:
        """deletionPolicy Delete with nothing left to write: delete the Secret (Owner) or our keys (Merge)."""
        name = spec.target.name
        try:
            live = self._live(spec, listed)
            if live is None:
                return None
            if spec.target.creation_policy == "Owner":
                if kube_apply.is_owned_by(live, owner):
                    self.kube.delete_secret(spec.namespace, name, live["metadata"].get("uid"))
            else:
                self.kube.merge_secret(live, target.removal_patch(spec))
            return target.written_hash(live)
        except ApiError as error:
            raise _TargetProblem(plan.TARGET_WRITE_FAILED, f"spec.target: removing keys of Secret {name} failed: "
                                 f"{error.status} {error.reason}") from None

    def _event(self, owner: Owner, event: tuple[str, str, str] | None) -> None:
        """Post the Event plan.event_for chose (best effort)."""
        if event is None:
            return
        try:
            self.kube.event(owner, *event)
        except Exception as error:  # noqa: BLE001 - events are best effort
            log.warning("event on %s/%s not posted: %s", owner.namespace, owner.name, located(error))

    def _restart(self, changed: Mapping[str, set[str]]) -> int:
        """Stamp opted-in workloads whose Secrets changed this cycle (once each)."""
        count = 0
        for namespace, names in sorted(changed.items()):
            try:
                workloads = self.kube.list_workloads(namespace)
                patches = restart.restart_patches(workloads, names, self.state.hashes(namespace))
                for patch in patches:
                    self.kube.patch_workload(patch.kind, namespace, patch.name, restart.patch_body(patch))
                    count += 1
                    log.info("restarting %s %s/%s: Secret(s) %s changed", patch.kind, namespace, patch.name, ", ".join(patch.secrets))
                    for uid in {u for name in patch.secrets for u in self.state.uid_for_target(namespace, name)}:
                        memory = self.state.memory(uid)
                        if memory:
                            ref = memory.spec
                            self._event(Owner(API_VERSION, REF_KIND, ref.name, ref.namespace, ref.uid), ("WorkloadRestarted",
                                        f"{patch.kind} {patch.name} restarted: Secret {ref.target.name} changed", "Normal"))
            except ApiError as error:
                log.warning("restarting workloads in %s failed: %s %s", namespace, error.status, error.reason)
        return count

    # --- stores -------------------------------------------------------------------------

    def check_store(self, key: StoreKey, body: Mapping[str, Any]) -> dict[str, Any]:
        """A real authentication check of a store; returns its new status."""
        old = dict(body.get("status") or {})
        generation = (body.get("metadata") or {}).get("generation")
        try:
            config, _ = self.store_config(key, body)
            identity = self.providers.get(config).check()
            ready = (READY, True, "Authenticated", f"authenticated as {identity}")
        except SpecError as error:
            ready = (READY, False, "InvalidSpec", "; ".join(error.problems))
        except StoreError as error:
            ready = (READY, False, error.reason, str(error))
        except Exception as error:  # noqa: BLE001
            ready = (READY, False, "ProviderError", f"unexpected {located(error)}")
        status = kube_status.with_conditions({**old, "observedGeneration": generation, "lastAuthCheck": _iso(self.clock())}, [ready], generation)
        return status
