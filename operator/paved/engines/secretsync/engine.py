"""The ExternalSecretRef sync engine: the I/O around the pure core (paved.secretsync).

The Kopf handlers in paved.handlers.secrets only validate and register refs; this engine
does the syncing.

ONE engine loop per operator (`SyncEngine`, started by `@kopf.on.startup`) schedules: it
sleeps until the earliest due time (or a registration wakes it and it gathers for a
quarter second), takes every due ref of every store that has no job under way, and hands
each store's refs to that store's lane as one job (paved.engines.secretsync.lanes: one job
per store at a time, stores in parallel on a bounded pool). A job asks its store once for
the versions of all distinct remote keys, fetches only the values that changed, and then
per ref writes the Secret (server-side apply, owned by the ref) only if its content hash
changed, writes the status only if it changed, stamps opted-in workloads once per job, and
schedules the ref again. Every decision is taken by the pure core (paved.secretsync); this
module is the I/O around it.

Stores are independent: one that hangs or fails never delays another's refs. A job's
backend work (logins, version look-ups, value reads, retries) has a deadline
(`store_deadline`; paved.providers.deadline caps every request to it), and each store has
a circuit breaker (paved.secretsync.breaker): after FAILURE_THRESHOLD failed jobs in a row
it is not called at all, not even by the authentication check, for a cool-down; its refs
say so (Ready=False, Stale=True, reason StoreCircuitOpen with the last failure) and come
back when the cool-down ends, as the half-open probe. How late each ref is taken after its
due time is the histogram paved_secret_refresh_lateness_seconds.

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

import contextlib
import functools
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from paved import API_VERSION, operator_namespace, ratelimit
from paved.api.common import READY, is_true, now_rfc3339, parse_duration
from paved.api.platform import nothing_allowed
from paved.api.kinds import SpecError, kind_info
from paved.api.secrets import SecretStoreStatus
from paved.engines.secretsync.kube import REF_KIND, REF_STATUS, KubeApi
from paved.engines.secretsync.lanes import StoreLanes
from paved.errors import located
from paved.kube import apply as kube_apply
from paved.kube import status as kube_status
from paved.kube.client import ApiError
from paved.kube.status import StatusWriter
from paved.metrics import SECRET_REFRESH_LATENESS, SECRET_STORES_CIRCUIT_OPEN
from paved.providers import deadline
from paved.providers.base import Owner
from paved.providers.secretstores import (
    PROVIDER_ERROR,
    STORE_TIMEOUT,
    UNREACHABLE,
    StoreConfig,
    StoreError,
    StoreProviders,
    platform_endpoints,
)
from paved.secretsync import access, plan, restart, schedule, target, tenancy
from paved.secretsync.breaker import Breakers
from paved.secretsync.model import (
    CLUSTER_SECRET_STORE,
    SECRET_STORE,
    FetchResult,
    KeyState,
    RefSpec,
    RemoteKey,
    StoreContext,
    StoreFailure,
    StoreKey,
)
from paved.secretsync.state import SyncState, parse_time

log = logging.getLogger(__name__)

REF_PLURAL = "externalsecretrefs"
STORE_PLURALS = {SECRET_STORE: "secretstores", CLUSTER_SECRET_STORE: "clustersecretstores"}
STORE_CHECK_INTERVAL = 300.0  # seconds between authentication re-checks of a store
FAILED_STORE_CHECK_INTERVAL = 30.0  # seconds between re-checks of a store that is not Ready
GATHER_SECONDS = 0.25  # after a wake-up, wait this long so refs created together sync together
IDLE_WAIT = 30.0  # the loop re-evaluates at least this often
# A cycle writing this many Secrets holds paved.ratelimit.BURST: the policy audit yields to it.
BURST_WRITES = 100
# A store's authentication check (Kopf's handlers and timer, and a re-check after an allowance change).
STORE_STATUS = StatusWriter.of_model("paved-store-check", SecretStoreStatus, {READY})
WRITE_WORKERS = 8  # threads writing Secrets and statuses of one cycle; a cycle's reads stay batched
STORE_WORKERS = 16  # store jobs running at once (one per store at most: paved.engines.secretsync.lanes)
# A store's backend work in one job (logins, version look-ups, value reads, retries) must end
# within STORE_DEADLINE plus STORE_DEADLINE_PER_KEY per distinct remote key (Vault reads one
# path per request), at most MAX_STORE_DEADLINE; then its refs fail with StoreTimeout.
STORE_DEADLINE = 60.0
STORE_DEADLINE_PER_KEY = 0.05
MAX_STORE_DEADLINE = 600.0
CHECK_DEADLINE = 30.0  # an authentication check of a store (a Kopf handler thread waits for it)
# Store failures that count for the circuit breaker: the backend did not answer, or answered
# that it is failing. An authentication refusal is an answer: asking again costs nothing more.
BREAKER_REASONS = frozenset({UNREACHABLE, STORE_TIMEOUT, PROVIDER_ERROR})
STOP_WAIT = 10.0  # stop(): seconds to wait for store jobs under way
# A cycle writing at least this many Secrets in one namespace reads the metadata of that
# namespace's Secrets in one listing instead of one GET per Secret (a cold start: thousands).
LIST_SECRETS_AT = 20
# This cycle's listings: namespace -> Secret name -> target.live_view of that Secret.
Listing = Mapping[str, Mapping[str, dict[str, Any]]]

# (kind, namespace) -> what IntentPolicies allow it (paved.policy.allowances); the operator
# passes the policy index's, the default allows nothing.
AllowanceSource = Callable[[str, str | None], Mapping[str, list[str]]]


def _iso(moment: float) -> str:
    return now_rfc3339(datetime.fromtimestamp(moment, timezone.utc))


def engine_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a ref's status the engine owns (REF_STATUS): all of it but other writers' conditions."""
    return REF_STATUS.owned(status)


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

    def add(self, other: CycleReport) -> None:
        """Add a store job's counts to this cycle's (seconds: the longest job's)."""
        for item in fields(self):
            if item.name in ("refs", "seconds", "reasons"):
                continue
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))
        self.seconds = max(self.seconds, other.seconds)
        for reason, count in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + count


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

    def __init__(self, kube: KubeApi, *, clock: Callable[[], float] = time.time, providers: StoreProviders | None = None,
                 write_workers: int = WRITE_WORKERS, store_workers: int = STORE_WORKERS,
                 store_deadline: float = STORE_DEADLINE,
                 allowances: AllowanceSource = lambda kind, namespace: nothing_allowed()) -> None:
        self.kube = kube
        self.allowances = allowances
        self.write_workers = write_workers
        self.store_deadline = store_deadline
        self.lanes = StoreLanes(store_workers, on_done=lambda _: self._wake.set())
        self.breakers = Breakers()
        self._writers: ThreadPoolExecutor | None = None
        self._writers_lock = threading.Lock()
        self._hash_key: bytes | None = None
        self.clock = clock
        self.state = SyncState()
        self.providers = providers or StoreProviders(kube)
        self._stores: dict[StoreKey, dict[str, Any] | None] = {}
        self._stores_lock = threading.Lock()
        self._wake = threading.Event()
        self._gather = threading.Event()  # the wake-up was a registration: let its neighbours arrive
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
            self._gather.set()
            self._wake.set()
        return due

    def report_invalid(self, body: Mapping[str, Any], problems: list[str]) -> None:
        """A ref whose spec cannot be synced: unregistered, Ready=False naming the fields (the
        Secret is left alone). Written only when that changes the status."""
        metadata = body.get("metadata") or {}
        self.state.unregister(metadata.get("uid", ""))
        old = dict(body.get("status") or {})
        status = plan.invalid_status(old, metadata.get("generation"), problems)
        if REF_STATUS.changed(old, status):
            try:
                self.kube.apply_ref_status(metadata.get("namespace", ""), metadata.get("name", ""), engine_status(status))
            except ApiError as error:
                if not error.not_found:
                    log.warning("status of %s %s/%s not written: %s %s", REF_KIND, metadata.get("namespace"),
                                metadata.get("name"), error.status, error.reason)

    def unregister(self, uid: str) -> None:
        self.state.unregister(uid)

    def store_seen(self, key: StoreKey, body: Mapping[str, Any] | None) -> None:
        """A store appeared, changed or vanished (Kopf event); its refs are due at once on change.

        The first event of a store this process has not looked at yet (a restart, a new leader
        listing every store) changes nothing: its refs keep their place on the grid, so a
        failover does not read every remote key again off-grid, a few seconds before the next
        grid point reads it once more."""
        snapshot = {"spec": dict(body.get("spec") or {}), "metadata": dict(body.get("metadata") or {})} if body else None
        with self._stores_lock:
            previous = self._stores.get(key, "unknown")
            self._stores[key] = snapshot
        if previous == "unknown":
            return
        old_spec = previous.get("spec") if isinstance(previous, dict) else previous
        new_spec = snapshot.get("spec") if snapshot else None
        if old_spec != new_spec:
            self.providers.forget(key)
            self.state.forget_store(key)
            self.breakers.forget(key)  # a changed store deserves a try at once
            SECRET_STORES_CIRCUIT_OPEN.set(self.breakers.open_count())
            if self.state.store_changed(key, self.clock()):
                self._wake.set()

    def repair(self, uid: str) -> None:
        if self.state.mark_repair(uid, self.clock()):
            self._gather.set()
            self._wake.set()

    # --- the loop ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="paved-secret-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = STOP_WAIT) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        if not self.lanes.shutdown(timeout):
            log.warning("secret sync: store jobs still running after %.0fs; they end at their deadline", timeout)
        with self._writers_lock:
            writers, self._writers = self._writers, None
        if writers is not None:
            writers.shutdown(wait=True)
        self.providers.close()

    def _loop(self) -> None:
        log.info("secret sync engine started")
        while not self._stop.is_set():
            now = self.clock()
            due = self.state.next_due(busy=self.lanes.busy())
            if due > now:
                woken = self._wake.wait(timeout=min(due - now, IDLE_WAIT))
                if woken:
                    self._wake.clear()
                    if self._gather.is_set():  # a registration, not a store job that ended
                        self._gather.clear()
                        self._stop.wait(GATHER_SECONDS)
                continue
            try:
                self.run_cycle(wait=False)
            except Exception as error:  # noqa: BLE001 - the loop must survive anything
                log.error("secret sync cycle failed: %s", located(error))
                self._stop.wait(1.0)
        log.info("secret sync engine stopped")

    # --- one cycle: a job per store ----------------------------------------------------

    def run_cycle(self, *, wait: bool = True) -> CycleReport:
        """Take every due ref of every store without a job under way and start one job per
        store (its lane). The loop does not wait for them (wait=False): a store that hangs
        must not hold up the next store's refs. Tests and benches wait (the default) and get
        the cycle's counts back (no values)."""
        now = self.clock()
        taken = self.state.take_due(now, busy=self.lanes.busy())
        report = CycleReport(refs=len(taken))
        if not taken:
            return report
        jobs: list[Future[CycleReport]] = []
        by_uid = {m.spec.uid: m for m in taken}
        for store_key, specs in plan.group_by_store(m.spec for m in taken).items():
            memories = [by_uid[s.uid] for s in specs]
            job = self.lanes.submit(store_key, functools.partial(self._store_job, store_key, memories))
            job.add_done_callback(functools.partial(self._job_done, memories))
            jobs.append(job)
        self.state.evict()
        if wait:
            for job in jobs:
                report.add(job.result())
            self.last_report = report
        return report

    def _job_done(self, memories: list[plan.RefMemory], job: Future[CycleReport]) -> None:
        if job.cancelled():  # the engine stopped before the job ran: its refs are not in flight any more
            self.state.release(memories, delay=0.0, now=self.clock())

    def _store_job(self, key: StoreKey, memories: list[plan.RefMemory]) -> CycleReport:
        """One store's part of a cycle: read the backend once, then apply every ref's outcome."""
        started = time.perf_counter()
        now = self.clock()
        for late in self.state.overdue(memories, now):
            SECRET_REFRESH_LATENESS.observe(late)
        stamp = _iso(now)
        report = CycleReport(refs=len(memories), stores=1)
        pending = {m.spec.uid: m for m in memories}
        labels: dict[str, dict[str, str] | None] = {}
        try:
            outcomes = self._sync_store(key, memories, stamp, labels, report)
            changed: dict[str, set[str]] = defaultdict(set)
            writes = Counter(m.spec.namespace for m, decision in outcomes if decision.touches_secret)
            with ratelimit.BURST.held() if writes.total() >= BURST_WRITES else contextlib.nullcontext():
                # Scheduled from now, not from the job's start: a store that took its whole deadline
                # to fail must not be due again the moment its job ends.
                applied_all = self._apply_all(outcomes, stamp, self.clock(), self._list_targets(writes))
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
        report.seconds = time.perf_counter() - started
        log.info(
            "secret sync of %s: %d ref(s), %d key(s) checked, %d fetched, %d Secret(s) written, %d failure(s), %.2fs",
            key, report.refs, report.keys_checked, report.keys_fetched, report.secrets_written, report.failures, report.seconds,
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

    def store_refusal(self, key: StoreKey, config: StoreConfig) -> str | None:
        """Why a SecretStore may not act as its spec says (paved.secretsync.tenancy), or None. A
        refused store's provider is dropped: nothing is read with it, not even a cached session."""
        if key.cluster:
            return None
        found = tenancy.refusals(key, config.provider, self.allowances(SECRET_STORE, key.namespace), platform_endpoints())
        if not found:
            return None
        self.providers.forget(key)
        return tenancy.describe(found)

    def permissions_changed(self) -> list[StoreKey]:
        """What IntentPolicies allow may have changed: the refs of every SecretStore are due at
        once. Returns those SecretStores (their Ready is the caller's to check again)."""
        with self._stores_lock:
            keys = [key for key, body in self._stores.items() if body is not None and not key.cluster]
        now = self.clock()
        if sum(self.state.store_changed(key, now) for key in keys):
            self._wake.set()
        return keys

    def allowances_changed(self) -> None:
        """What IntentPolicies allow changed: the refs of every SecretStore sync again at once,
        and each SecretStore's Ready is checked again, off the caller's thread."""
        stores = self.permissions_changed()
        if stores:
            threading.Thread(target=self._recheck_stores, args=(stores,), name="paved-store-recheck", daemon=True).start()

    def _recheck_stores(self, keys: Sequence[StoreKey]) -> None:
        for key in keys:
            try:
                live = kube_apply.get(API_VERSION, key.kind, key.name, key.namespace)
                if live is None:
                    continue
                STORE_STATUS.write(live, self.check_store(key, live))
            except Exception as error:  # noqa: BLE001 - the store's own timer checks it again
                log.warning("re-checking %s after an allowance change failed: %s", key, located(error))

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
            failed = plan.failure("StoreUnavailable", f"spec.storeRef.name: reading {key} failed: {error.status} {error.reason}",
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
        refused = self.store_refusal(key, config)
        if refused:
            not_allowed = plan.failure(tenancy.STORE_NOT_ALLOWED, f"spec.storeRef.name: {key} may not act: {refused}; "
                                       "nothing was read", field="spec.storeRef.name", asked_backend=False, retry=False)
            return [(m, not_allowed) for m in memories]
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
        context = store_context(body, spec)
        answer = self._read_backend(key, config, allowed, stamp, context, report)
        if isinstance(answer, plan.Decision):
            return outcomes + [(m, answer) for m in allowed]
        observed, values = answer
        for memory in allowed:
            outcomes.append((memory, plan.decide(memory, observed, values, stamp, hash_key=self.hash_key, store=context)))
        return outcomes

    def _read_backend(self, key: StoreKey, config: StoreConfig, allowed: list[plan.RefMemory], stamp: str,
                      context: StoreContext, report: CycleReport,
                      ) -> tuple[dict[RemoteKey, KeyState], dict[RemoteKey, Any]] | plan.Decision:
        """Versions of the refs' keys and the values they need (cached or fetched), or the
        Decision every ref gets when the store failed or its circuit is open. The one place
        that calls the backend in a cycle: under the store's deadline and circuit breaker."""
        refused = self.breakers.allow(key, self.clock())
        if refused is not None:
            return self._refused(key, refused)
        keys = plan.distinct_keys(m.spec for m in allowed)
        report.keys_checked += len(keys)
        try:
            with deadline.within(min(MAX_STORE_DEADLINE, self.store_deadline + STORE_DEADLINE_PER_KEY * len(keys))):
                provider = self.providers.get(config)
                observed = provider.versions(keys)
                cached = self.state.cached(key, keys)
                wanted = plan.keys_to_fetch(allowed, observed, cached, stamp, context)
                fetched: dict[RemoteKey, FetchResult] = provider.fetch(wanted) if wanted else {}
                report.keys_fetched += len(wanted)
        except StoreError as error:
            failure = StoreFailure(error.reason, f"{key}: {error}", error.retryable)
            if error.reason in BREAKER_REASONS:
                return self._store_failed(key, failure)
            self._store_answered(key)  # e.g. authentication refused: the backend is there
            return plan.store_failed(failure)
        except deadline.DeadlineExceeded as error:
            return self._store_failed(key, StoreFailure(STORE_TIMEOUT, f"{key}: {error}"))
        except Exception as error:  # noqa: BLE001 - an unexpected provider failure must not stop other stores
            log.error("store %s failed unexpectedly: %s", key, located(error))
            self.breakers.release(key)
            return plan.store_failed(StoreFailure("ProviderError", f"{key}: unexpected {type(error).__name__}"))
        self._store_answered(key)
        self.state.remember(key, fetched)
        return observed, {**cached, **fetched}

    def _store_answered(self, key: StoreKey) -> None:
        self.breakers.succeeded(key)
        SECRET_STORES_CIRCUIT_OPEN.set(self.breakers.open_count())

    def _store_failed(self, key: StoreKey, failure: StoreFailure) -> plan.Decision:
        """Every ref's decision after a failure the breaker counts (it may open the circuit)."""
        if not self.breakers.failed(key, failure, self.clock()):
            return plan.store_failed(failure)
        state = self.breakers.state(key)
        log.warning("secret store %s: circuit open after %d failures in a row (the last: %s: %s); not called until %s",
                    key, state.failures, failure.reason, failure.message, _iso(state.open_until or self.clock()))
        SECRET_STORES_CIRCUIT_OPEN.set(self.breakers.open_count())
        return self._refused(key, self.breakers.refusal(key, self.clock()) or failure)

    def _refused(self, key: StoreKey, refusal: StoreFailure) -> plan.Decision:
        """The refs of a store whose circuit is open: nothing asked, back when the cool-down ends."""
        decision = plan.store_failed(refusal)
        decision.asked_backend = False
        decision.retry_at = self.breakers.retry_at(key)
        return decision

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
        with self._writers_lock:
            if self._writers is None:
                self._writers = ThreadPoolExecutor(self.write_workers, thread_name_prefix="paved-secret-write")
            writers = self._writers
        results: list[_Applied] = []
        for future in [writers.submit(apply_group, group) for group in groups]:
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
        if REF_STATUS.changed(memory.status, status):
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
        assert decision.data is not None and decision.content_hash  # noqa: S101
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

    def store_check_due(self, body: Mapping[str, Any]) -> bool:
        """Whether the store's periodic authentication check is due (sooner while it is not Ready)."""
        status = body.get("status") or {}
        return schedule.store_check_due(is_true(status.get("conditions"), READY), parse_time(status.get("lastAuthCheck")),
                                        self.clock(), STORE_CHECK_INTERVAL, FAILED_STORE_CHECK_INTERVAL)

    def check_store(self, key: StoreKey, body: Mapping[str, Any]) -> dict[str, Any]:
        """A real authentication check of a store; returns its new status."""
        old = dict(body.get("status") or {})
        generation = (body.get("metadata") or {}).get("generation")
        try:
            config, _ = self.store_config(key, body)
            refused_here = self.store_refusal(key, config)
            if refused_here:
                raise StoreError(f"{refused_here}; nothing was read", reason=tenancy.REASON, retryable=False)
            refused = self.breakers.refusal(key, self.clock())
            if refused is not None:  # its circuit is open: not even an authentication check
                raise StoreError(refused.message, reason=refused.reason)
            with deadline.within(CHECK_DEADLINE):
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


def store_context(body: Mapping[str, Any], spec: Any) -> StoreContext:
    """The store as the missing-key rule needs it: which revision answered, and its grace period."""
    metadata = body.get("metadata") or {}
    grace = parse_duration(spec.missingKeyGracePeriod, "spec.missingKeyGracePeriod").total_seconds()
    return StoreContext(revision=f"{metadata.get('uid', '')}/{metadata.get('generation', '')}", missing_grace=grace)
