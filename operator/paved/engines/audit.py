"""The continuous policy audit: every intent judged against the IntentPolicies, all the time.

`Auditor` is one background thread (paved.runtime starts it on the leader, once Kopf has
loaded the policy, exception and composition indexes). It re-evaluates every intent when a
policy or exception changes, when an exception expires (it wakes exactly then), when an
intent's spec changes, and every `interval` seconds (jittered) as a safety net. Results go
to the intent's `PolicyCompliant` condition (server-side applied as the audit's own field
manager: the intent's other writers never touch it, nor it theirs) and, when the CRD is
installed, to one PolicyReport per namespace (paved.kube.policyreport). Writes happen only
on change. A violating intent is never changed or deleted: only reported.

Which namespaces may hold PolicyExceptions: the platform's (`paved run --exception-namespace`)
and those labelled `paved.dev/policy-exceptions=allowed` (see paved.handlers.policy).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

from paved import API_VERSION, ratelimit
from paved.api.common import EXPIRED, POLICY_COMPLIANT, READY, get_condition
from paved.api.kinds import INTENT_KINDS
from paved.engines.compose import compositions_from, in_scope
from paved.engines.namespaces import NamespaceCache
from paved.errors import safe_traceback
from paved.kube import policyreport
from paved.kube import status as kube_status
from paved.kube.client import ApiError, Json, list_pages, resource_info
from paved.kube.status import StatusWriter
from paved.policy import CompiledPolicy, Verdict, check_intent, compile_policies
from paved.policy.decisions import compliance_condition, exception_conditions, exceptions_allowed_in, next_expiry

log = logging.getLogger(__name__)

DEFAULT_AUDIT_INTERVAL = 600.0
LIST_PAGE_SIZE = 500  # intents per request of a full audit's listing
AUDIT_JITTER = 0.1




def compiled_policies(index: Mapping[str, Iterable[Mapping[str, Any]]] | Iterable[Mapping[str, Any]]) -> list[CompiledPolicy]:
    """The usable policies of the index (broken ones are skipped: they block nothing)."""
    return compile_policies(compositions_from(index))[0]  # same {name: Store} shape as the composition index


def exceptions_for(namespace: str | None, namespace_object: Mapping[str, Any] | None, index: Mapping[str, Iterable[Any]],
                   exception_namespaces: Collection[str]) -> list[Mapping[str, Any]]:
    """The PolicyExceptions that may apply to intents of `namespace` (none where not allowed)."""
    if not exceptions_allowed_in(namespace_object, namespace, exception_namespaces):
        return []
    return list(index[namespace]) if namespace and namespace in index else []


def audit_view(intent: Mapping[str, Any]) -> dict[str, Any]:
    """What the audit reads of an intent, without the rest (managedFields and the like): the
    audit holds intents queued by the thousand, and they keep only these subtrees alive."""
    metadata = intent.get("metadata") or {}
    status = intent.get("status") or {}
    return {
        "apiVersion": intent.get("apiVersion"),
        "kind": intent.get("kind"),
        "metadata": {key: metadata[key] for key in ("name", "namespace", "uid", "generation", "labels", "annotations") if key in metadata},
        "spec": intent.get("spec"),
        "status": {key: status[key] for key in ("conditions", "observedGeneration") if key in status},
    }


def audit_wait(interval: float, now: datetime, expiry: datetime | None, uniform: Any = random.uniform) -> float:
    """Seconds until the next full audit: the jittered interval, or just after the next expiry."""
    wait = interval * (1 + uniform(0, AUDIT_JITTER))
    if expiry is not None:
        wait = min(wait, max(0.0, (expiry - now).total_seconds()) + 0.5)
    return wait


# --------------------------------------------------------------------------- writes

AUDIT_FIELD_MANAGER = "paved-policy-audit"
AUDIT_STATUS = StatusWriter(AUDIT_FIELD_MANAGER, conditions=frozenset({POLICY_COMPLIANT}))  # of every intent
# Platform objects' status: an IntentPolicy's by its event handler (it compiled or not), a
# PolicyException's by the audit (active, expired, or in a namespace that may not hold one).
PLATFORM_STATUS = {
    "IntentPolicy": StatusWriter("paved-policy-compile", frozenset({"observedGeneration"}), frozenset({READY})),
    "PolicyException": StatusWriter(AUDIT_FIELD_MANAGER, frozenset({"observedGeneration"}), frozenset({READY, EXPIRED})),
}
# While a reconciler works through a burst (paved.ratelimit.BURST), the audit's condition
# writes yield to it: this pace once past the burst allowance. Otherwise: full speed.
AUDIT_WRITE_RATE, AUDIT_WRITE_BURST = 10.0, 50


def write_condition(intent: Mapping[str, Any], condition: kube_status.ConditionSpec, bucket: ratelimit.TokenBucket) -> bool:
    """Set the audit's one condition on an intent; True when written, no request when the
    intent shows it already (for its generation).

    Server-side applied as the audit's own field manager: the intent's other conditions are
    neither read nor touched, and no other writer touches this one.
    """
    status = intent.get("status")
    # set_condition on the current list: lastTransitionTime stays unless the status flips
    new = kube_status.with_conditions(status, [condition], (intent.get("metadata") or {}).get("generation"))
    if not AUDIT_STATUS.changed(status, new):
        return False
    if ratelimit.BURST.active():
        bucket.take()
    try:
        AUDIT_STATUS.write(intent, new)
    except ApiError as error:
        if error.not_found:
            return False
        raise
    return True


def write_platform_status(body: Mapping[str, Any], conditions: list[kube_status.ConditionSpec]) -> None:
    """Conditions on an IntentPolicy or PolicyException, written only when they change."""
    metadata = body.get("metadata") or {}
    generation = metadata.get("generation")
    status = kube_status.with_conditions({**(body.get("status") or {}), "observedGeneration": generation}, conditions, generation)
    try:
        written = PLATFORM_STATUS[str(body.get("kind"))].write({"apiVersion": API_VERSION, **body}, status)
    except ApiError as error:
        if not error.not_found:
            log.warning("cannot write status of %s %s: %s", body.get("kind"), metadata.get("name"), error)
        return  # not written: the next pass tries again
    # the index snapshot sees its own status write only at the next event: remember it to stay quiet
    if written is not None and isinstance(body, dict):
        body["status"] = dict(written.get("status") or {})



# --------------------------------------------------------------------------- the audit


class Auditor:
    """One background thread: full audits (policy/exception changes, expiries, periodic) and
    single-intent audits (spec changes). Holds the latest verdicts per intent for the reports."""

    def __init__(self, *, namespaces: Collection[str], exception_namespaces: Collection[str], namespace_cache: NamespaceCache,
                 interval: float = DEFAULT_AUDIT_INTERVAL) -> None:
        self.namespaces, self.exception_namespaces = frozenset(namespaces), frozenset(exception_namespaces)
        self.namespace_cache, self.interval = namespace_cache, interval
        # Kopf's live indexes, given at start (Kopf has loaded them by then: paved.handlers.policy)
        self.policy_index: Mapping[str, Any] = {}
        self.exception_index: Mapping[str, Any] = {}
        self.composition_index: Mapping[str, Any] = {}
        self.writes = ratelimit.TokenBucket(AUDIT_WRITE_RATE, AUDIT_WRITE_BURST)
        self.started = False
        self._stop = threading.Event()
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.full_requested = True  # the first pass audits every intent
        self.pending: dict[str, dict[str, Any]] = {}  # uid -> intent body
        self.removed: set[tuple[str, str, str]] = set()
        # uid -> (generation, condition) the intent carries since our write, or a listing:
        # no one else writes PolicyCompliant, so an event body read before our write (the
        # intent's reconcile writing its own conditions meanwhile) causes no second write.
        self.judged: dict[str, tuple[Any, ...]] = {}
        self.results: dict[str, dict[tuple[str, str], tuple[dict[str, str], list[Verdict]]]] = {}
        self.reports: dict[str, Json] = {}  # namespace -> the last written report
        self.thread = threading.Thread(target=self._loop, name="paved-audit", daemon=True)

    def start(self, policy_index: Mapping[str, Any], exception_index: Mapping[str, Any],
              composition_index: Mapping[str, Any]) -> None:
        """Start the thread once, on Kopf's live indexes (later calls do nothing)."""
        with self.lock:
            if self.started:
                return
            self.policy_index, self.exception_index, self.composition_index = policy_index, exception_index, composition_index
            self.started = True
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()

    def observe(self, type: str | None, body: Mapping[str, Any]) -> None:
        """An intent event (Kopf's watch, or Paved's own for ExternalSecretRefs): a created or
        re-specified intent is audited at once (the intent's reconcile and the audit each apply
        only their own conditions, so neither waits for the other); a deleted one leaves the
        report. Events of a generation already judged (the reconcile's own status writes) are
        skipped. Nothing here waits on I/O: every status write of every intent comes through here.
        """
        metadata = body.get("metadata") or {}
        if not in_scope(metadata.get("namespace"), self.namespaces):
            return
        if type == "DELETED":
            self.forget(body)
            return
        generation = metadata.get("generation")
        if self.judged.get(metadata.get("uid") or "", (None,))[0] == generation:
            return
        condition = get_condition((body.get("status") or {}).get("conditions"), POLICY_COMPLIANT)
        if condition is None or condition.get("observedGeneration") != generation:
            self.submit(body)

    def request_full(self) -> None:
        with self.lock:
            self.full_requested = True
        self.wake.set()

    def submit(self, body: Mapping[str, Any]) -> None:
        with self.lock:
            self.pending[(body.get("metadata") or {}).get("uid", "")] = audit_view(body)
        self.wake.set()

    def forget(self, body: Mapping[str, Any]) -> None:
        metadata = body.get("metadata") or {}
        with self.lock:
            self.removed.add((metadata.get("namespace") or "", body.get("kind") or "", metadata.get("name") or ""))
            self.judged.pop(metadata.get("uid") or "", None)
        self.wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:  # the indexes are read while Kopf's event loop may be updating them
                now = datetime.now(timezone.utc)
                all_exceptions = [e for store in dict(self.exception_index).values() for e in store]
                woken = self.wake.wait(audit_wait(self.interval, now, next_expiry(all_exceptions, now)))
                self.wake.clear()
                if self._stop.is_set():
                    return
                self.run_once(periodic=not woken)  # a timeout is the periodic pass or an expiry
            except Exception as error:  # noqa: BLE001 - the audit must survive a bad pass
                log.error("policy audit pass failed:\n%s", safe_traceback(error))
                with self.lock:  # the failed pass took the pending work: redo all of it at the next wake-up
                    self.full_requested = True
                time.sleep(5)

    def run_once(self, periodic: bool = False) -> None:
        with self.lock:
            full = self.full_requested or periodic and not self.pending and not self.removed
            self.full_requested = False
            pending, self.pending = self.pending, {}
            removed, self.removed = self.removed, set()
        now = datetime.now(timezone.utc)
        self._update_exceptions(now)
        touched: set[str] = set()
        if full:
            seen: dict[str, set[tuple[str, str]]] = {}
            for intent in self._list_intents():
                seen.setdefault(intent["metadata"]["namespace"], set()).add((intent["kind"], intent["metadata"]["name"]))
                touched.add(self._audit(intent, now, listed=True))
            for namespace in list(self.results):
                for key in [k for k in self.results[namespace] if k not in seen.get(namespace, set())]:
                    del self.results[namespace][key]
                touched.add(namespace)
        else:
            for intent in pending.values():
                touched.add(self._audit(intent, now))
        for namespace, kind, name in removed:
            if self.results.get(namespace, {}).pop((kind, name), None) is not None:
                touched.add(namespace)
        self._write_reports(touched)

    def _list_intents(self) -> Iterator[dict[str, Any]]:
        """Every intent in scope, listed a page at a time (thousands of intents never sit in
        memory at once), as audit views."""
        for kind in INTENT_KINDS:
            try:
                for page in list_pages(resource_info(API_VERSION, kind).path(), limit=LIST_PAGE_SIZE):
                    for item in page.get("items", []):
                        if in_scope(item["metadata"].get("namespace"), self.namespaces):
                            yield audit_view({**item, "apiVersion": API_VERSION, "kind": kind})
            except ApiError as error:
                log.warning("audit cannot list %s: %s", kind, error)

    def _audit(self, intent: Mapping[str, Any], now: datetime, *, listed: bool = False) -> str:
        """Judge one intent and write its PolicyCompliant when the intent does not carry it yet:
        as `intent` shows it when `listed` (read just now), else as remembered in `judged`
        when that is newer than the event body."""
        metadata = intent.get("metadata") or {}
        namespace = metadata.get("namespace") or ""
        ns_object = self.namespace_cache.get(namespace)
        result = check_intent(
            intent, compositions_from(self.composition_index), compiled_policies(self.policy_index), ns_object,
            exceptions_for(namespace, ns_object, self.exception_index, self.exception_namespaces), now=now,
        )
        condition = compliance_condition(result.verdicts, result.render_error)
        uid, judged = metadata.get("uid") or "", (metadata.get("generation"), *condition)
        try:
            # no request when the intent carries it already
            if (listed or self.judged.get(uid) != judged) and write_condition(intent, condition, self.writes):
                log.info("%s %s/%s: %s=%s (%s)", intent.get("kind"), namespace, metadata.get("name"), *condition[:3])
            with self.lock:
                self.judged[uid] = judged
        except ApiError as error:
            log.warning("cannot write PolicyCompliant on %s %s/%s: %s", intent.get("kind"), namespace, metadata.get("name"), error)
        reference = {"apiVersion": API_VERSION, "kind": str(intent.get("kind")), "name": metadata.get("name", ""),
                     "namespace": namespace, "uid": metadata.get("uid", "")}
        self.results.setdefault(namespace, {})[(reference["kind"], reference["name"])] = (reference, result.verdicts)
        return namespace

    def _update_exceptions(self, now: datetime) -> None:
        for namespace, store in dict(self.exception_index).items():
            allowed = exceptions_allowed_in(self.namespace_cache.get(namespace), namespace, self.exception_namespaces)
            for exception in list(store):
                write_platform_status(exception, exception_conditions(exception, allowed, now))

    def _write_reports(self, namespaces: Iterable[str]) -> None:
        namespaces = [ns for ns in namespaces if ns]
        if not namespaces:
            return
        try:
            if not policyreport.installed():
                return
        except ApiError as error:
            log.warning("cannot discover PolicyReports: %s", error)
            return
        for namespace in namespaces:
            entries = list(self.results.get(namespace, {}).values())
            try:
                if not any(verdicts for _, verdicts in entries):
                    if self.reports.pop(namespace, None) is not None:
                        policyreport.delete_report(namespace)
                    continue
                report = policyreport.build_report(namespace, entries)
                if self.reports.get(namespace) != report:
                    policyreport.write_report(report)
                    self.reports[namespace] = report
            except ApiError as error:
                log.warning("cannot write the PolicyReport of namespace %s: %s", namespace, error)

