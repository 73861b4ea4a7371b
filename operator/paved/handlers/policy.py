"""IntentPolicies and PolicyExceptions in the cluster: indexes, status, and the continuous audit.

- `policy_index` / `exception_index` (Kopf indexes, like the composition index): the webhook
  and the audit read policies and exceptions from memory; Kopf holds handlers back until the
  initial listings are in, so nothing is judged against a half-loaded set. Compiled policies
  come from paved.policy's cache (by name + spec hash): a policy compiles once per version.
- IntentPolicy status: Ready=True (Compiled) or Ready=False (CompileError, naming the rule,
  line and column). A broken policy is left out of every evaluation: it never blocks or
  reports unrelated objects.
- PolicyException status: Ready=True until `expiresAt`, then Ready=False / Expired=True; or
  Ready=False (NamespaceNotAllowed) outside the namespaces the platform names.
- Continuous audit (`Auditor`, one background thread): re-evaluates every intent when a
  policy or exception changes, when an exception expires (it wakes exactly then), when an
  intent's spec changes, and every `audit_interval` seconds (jittered) as a safety net.
  Results go to the intent's `PolicyCompliant` condition and, when the CRD is installed, to
  one PolicyReport per namespace (paved.kube.policyreport). Writes happen only on change.
  A violating intent is never changed or deleted: only reported.

Which namespaces may hold PolicyExceptions (the model says an exception covers intents in
its own namespace, so the "namespace the platform names" is the intents' namespace): those
listed with `paved run --exception-namespace` (memo `exception_namespaces`) and those the
platform labels `paved.dev/policy-exceptions=allowed` (namespace labels are usually platform-
owned). Exceptions elsewhere are refused by the webhook and ignored by the audit.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import kopf

from paved import API_VERSION, ratelimit
from paved.api.common import POLICY_COMPLIANT, READY, get_condition, set_condition
from paved.api.kinds import INTENT_KINDS, kind_info
from paved.errors import safe_traceback
from paved.handlers import _compose
from paved.handlers.platform import snapshot
from paved.kube import apply as kube
from paved.kube import policyreport
from paved.kube import status as kube_status
from paved.kube.client import ApiError, Json, list_pages, resource_info
from paved.policy import CompiledPolicy, Verdict, check_intent, compile_policies
from paved.policy.allowances import allowance_signature, allowances_for
from paved.policy.decisions import (
    compliance_condition,
    exception_conditions,
    exceptions_allowed_in,
    next_expiry,
    policy_condition,
)

log = logging.getLogger(__name__)

DEFAULT_AUDIT_INTERVAL = 600.0
LIST_PAGE_SIZE = 500  # intents per request of a full audit's listing
AUDIT_JITTER = 0.1
NAMESPACE_TTL = 15.0
ALLOWANCE_MEMO_SECONDS = 2.0
# --------------------------------------------------------------------------- pure helpers


def compiled_policies(index: Mapping[str, Iterable[Mapping[str, Any]]] | Iterable[Mapping[str, Any]]) -> list[CompiledPolicy]:
    """The usable policies of the index (broken ones are skipped: they block nothing)."""
    return compile_policies(_compose.compositions_from(index))[0]  # same {name: Store} shape as the composition index


def allowed_exception_namespaces(memo: Mapping[str, Any] | None) -> frozenset[str]:
    return frozenset((memo or {}).get("exception_namespaces") or ())


def exceptions_for(namespace: str | None, namespace_object: Mapping[str, Any] | None, index: Mapping[str, Iterable[Any]],
                   memo: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The PolicyExceptions that may apply to intents of `namespace` (none where not allowed)."""
    if not exceptions_allowed_in(namespace_object, namespace, allowed_exception_namespaces(memo)):
        return []
    return list(index[namespace]) if namespace and namespace in index else []


def reported(intent: Mapping[str, Any]) -> bool:
    """Whether the intent's own reconcile has reported on its current generation (Ready carries
    it): until then the audit leaves it alone, see `intent_event`."""
    status = intent.get("status") or {}
    ready = get_condition(status.get("conditions"), READY) or {}
    return (intent.get("metadata") or {}).get("generation") in (ready.get("observedGeneration"), status.get("observedGeneration"))


def carries(intent: Mapping[str, Any], condition: kube_status.ConditionSpec) -> bool:
    """Whether the intent already shows `condition` (type, status, reason, message) for its generation."""
    type_, value, reason, message = condition
    current = get_condition((intent.get("status") or {}).get("conditions"), type_) or {}
    wanted = ("True" if value else "False") if isinstance(value, bool) else value
    generation = (intent.get("metadata") or {}).get("generation")
    return (current.get("status"), current.get("reason"), current.get("message", ""), current.get("observedGeneration")) == \
        (wanted, reason, message, generation)


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


# --------------------------------------------------------------------------- I/O helpers


_ns_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
_ns_lock = threading.Lock()


def namespace_object(namespace: str | None) -> dict[str, Any] | None:
    """The Namespace (labels matter for namespaceSelector), cached for NAMESPACE_TTL seconds."""
    if not namespace:
        return None
    now = time.monotonic()
    with _ns_lock:
        cached = _ns_cache.get(namespace)
    if cached is not None and now - cached[0] < NAMESPACE_TTL:
        return cached[1]
    live = kube.get("v1", "Namespace", namespace)
    value = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": dict(((live or {}).get("metadata") or {}).get("labels") or {})}} if live else None
    with _ns_lock:
        _ns_cache[namespace] = (now, value)
    return value


AUDIT_FIELD_MANAGER = "paved-policy-audit"  # owns the PolicyCompliant condition of every intent
# While a reconciler works through a burst (paved.ratelimit.BURST), the audit's condition
# writes yield to it: this pace once past the burst allowance. Otherwise: full speed.
AUDIT_WRITE_RATE, AUDIT_WRITE_BURST = 10.0, 50
_AUDIT_WRITES = ratelimit.TokenBucket(AUDIT_WRITE_RATE, AUDIT_WRITE_BURST)


def write_condition(intent: Mapping[str, Any], condition: kube_status.ConditionSpec) -> bool:
    """Set the audit's one condition on an intent; True when written, no request when unchanged.

    Server-side applied as the audit's own field manager: the intent's other conditions are
    neither read nor touched, so a concurrent write by the intent's reconcile costs nothing.
    """
    if carries(intent, condition):
        return False
    metadata = intent.get("metadata") or {}
    type_, value, reason, message = condition
    # set_condition on the current list: lastTransitionTime stays unless the status flips
    new = set_condition((intent.get("status") or {}).get("conditions"), type_, value, reason, message, metadata.get("generation"))
    mine = [c for c in new if c.get("type") == type_]
    if ratelimit.BURST.active():
        _AUDIT_WRITES.take()
    try:
        kube_status.apply_status(API_VERSION, intent["kind"], metadata.get("namespace"), metadata["name"],
                                 {"conditions": mine}, field_manager=AUDIT_FIELD_MANAGER)
    except ApiError as error:
        if error.not_found:
            return False
        raise
    return True


# --------------------------------------------------------------------------- the audit


class Auditor:
    """One background thread: full audits (policy/exception changes, expiries, periodic) and
    single-intent audits (spec changes). Holds the latest verdicts per intent for the reports."""

    def __init__(self, policy_index: Any, exception_index: Any, composition_index: Any, memo: Any, interval: float) -> None:
        self.policy_index, self.exception_index, self.composition_index = policy_index, exception_index, composition_index
        self.memo, self.interval = memo, interval
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.full_requested = True  # the first pass audits every intent that has reported
        self.pending: dict[str, dict[str, Any]] = {}  # uid -> intent body
        self.removed: set[tuple[str, str, str]] = set()
        # uid -> (generation, condition) the intent was last seen to carry, by our write or a
        # read: a queued event body older than our own write must not cause a second write
        self.carried: dict[str, tuple[Any, ...]] = {}
        self.results: dict[str, dict[tuple[str, str], tuple[dict[str, str], list[Verdict]]]] = {}
        self.reports: dict[str, Json] = {}  # namespace -> the last written report
        self.thread = threading.Thread(target=self._loop, name="paved-audit", daemon=True)

    def start(self) -> None:
        self.thread.start()

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
            self.carried.pop(metadata.get("uid") or "", None)
        self.wake.set()

    def _loop(self) -> None:
        while True:
            try:  # the indexes are read while Kopf's event loop may be updating them
                now = datetime.now(timezone.utc)
                all_exceptions = [e for store in dict(self.exception_index).values() for e in store]
                woken = self.wake.wait(audit_wait(self.interval, now, next_expiry(all_exceptions, now)))
                self.wake.clear()
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
                # Not reported yet: its report brings it here (intent_event) with the current
                # policies; only the periodic safety net covers an intent that never reports.
                if periodic or reported(intent):
                    touched.add(self._audit(intent, now))
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
                        if _compose.in_scope(item["metadata"].get("namespace"), self.memo):
                            yield audit_view({**item, "apiVersion": API_VERSION, "kind": kind})
            except ApiError as error:
                log.warning("audit cannot list %s: %s", kind, error)

    def _audit(self, intent: Mapping[str, Any], now: datetime) -> str:
        metadata = intent.get("metadata") or {}
        namespace = metadata.get("namespace") or ""
        ns_object = namespace_object(namespace)
        result = check_intent(
            intent, _compose.compositions_from(self.composition_index), compiled_policies(self.policy_index), ns_object,
            exceptions_for(namespace, ns_object, self.exception_index, self.memo), now=now,
        )
        condition = compliance_condition(result.verdicts, result.render_error)
        uid, carried = metadata.get("uid") or "", (metadata.get("generation"), *condition)
        try:
            if self.carried.get(uid) == carried and not carries(intent, condition):
                # We wrote it after this body was read (or someone removed it since): look.
                live = kube.get(str(intent.get("apiVersion") or API_VERSION), str(intent.get("kind")), metadata["name"], namespace)
                intent = audit_view(live) if live is not None else intent
            if write_condition(intent, condition):  # no request when the condition is unchanged
                log.info("%s %s/%s: %s=%s (%s)", intent.get("kind"), namespace, metadata.get("name"), *condition[:3])
            with self.lock:
                self.carried[uid] = carried
        except ApiError as error:
            log.warning("cannot write PolicyCompliant on %s %s/%s: %s", intent.get("kind"), namespace, metadata.get("name"), error)
        reference = {"apiVersion": API_VERSION, "kind": str(intent.get("kind")), "name": metadata.get("name", ""),
                     "namespace": namespace, "uid": metadata.get("uid", "")}
        self.results.setdefault(namespace, {})[(reference["kind"], reference["name"])] = (reference, result.verdicts)
        return namespace

    def _update_exceptions(self, now: datetime) -> None:
        for namespace, store in dict(self.exception_index).items():
            allowed = exceptions_allowed_in(namespace_object(namespace), namespace, allowed_exception_namespaces(self.memo))
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


def write_platform_status(body: Mapping[str, Any], conditions: list[kube_status.ConditionSpec]) -> None:
    """Conditions on an IntentPolicy or PolicyException, written only when they change."""
    metadata = body.get("metadata") or {}
    generation = metadata.get("generation")
    old = dict(body.get("status") or {})
    status = kube_status.with_conditions({**old, "observedGeneration": generation}, conditions, generation)
    delta = kube_status.status_delta(old, status)
    if delta:
        try:
            kube_status.patch_status(API_VERSION, str(body.get("kind")), metadata.get("namespace"), metadata["name"], delta)
        except ApiError as error:
            if not error.not_found:
                log.warning("cannot write status of %s %s: %s", body.get("kind"), metadata.get("name"), error)
            return  # not written: the next pass tries again
        # the index snapshot sees its own status write only at the next event: remember it to stay quiet
        if isinstance(body, dict):
            body.setdefault("status", {}).update(delta)


_auditor: Auditor | None = None
_auditor_lock = threading.Lock()


def auditor(policy_index: Any, exception_index: Any, composition_index: Any, memo: Any) -> Auditor:
    """The process's Auditor, started on first use (Kopf has loaded every index by then)."""
    global _auditor
    with _auditor_lock:
        if _auditor is None:
            interval = float((memo or {}).get("audit_interval") or DEFAULT_AUDIT_INTERVAL)
            _auditor = Auditor(policy_index, exception_index, composition_index, memo, interval)
            _auditor.start()
        return _auditor


# --------------------------------------------------------------------------- Kopf


@kopf.on.startup()
def share_allowances(policy_index: kopf.Index, **_: Any) -> None:
    """Renders everywhere (Kopf handlers, drift watch, daemons) read allowances from the live
    policy index; Kopf fills it before any intent handler runs."""

    memo: dict[tuple[str, str | None], tuple[int, float, Mapping[str, list[str]]]] = {}

    def allowed(kind: str, namespace: str | None) -> Mapping[str, list[str]]:
        # Memoised briefly per namespace: a thousand identity daemons re-check, one computes.
        now, epoch = time.monotonic(), _compose.allowance_epoch()
        hit = memo.get((kind, namespace))
        if hit is not None and hit[0] == epoch and hit[1] > now:
            return hit[2]
        namespace_labels = ((namespace_object(namespace) or {}).get("metadata") or {}).get("labels") if namespace else None
        value = allowances_for(compiled_policies(policy_index), kind, namespace_labels)
        memo[(kind, namespace)] = (epoch, now + ALLOWANCE_MEMO_SECONDS, value)
        return value

    _compose.set_allowance_source(allowed)


_allowances_seen: dict[str, Any] = {}  # policy name -> allowance_signature of a policy that allows something


def note_allowances(name: str, spec: Mapping[str, Any] | None) -> bool:
    """Record a policy's allowances (spec None: deleted); True when what it allows, or to whom, changed."""
    signature = allowance_signature(spec)
    if _allowances_seen.get(name) == signature:
        return False
    if signature is None:
        _allowances_seen.pop(name, None)
    else:
        _allowances_seen[name] = signature
    return True


@kopf.index("paved.dev", "v1alpha1", "intentpolicies")
def policy_index(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """name -> snapshot of the IntentPolicy."""
    return {name: {**snapshot(body), "kind": "IntentPolicy"}}


@kopf.index("paved.dev", "v1alpha1", "policyexceptions")
def exception_index(namespace: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """namespace -> snapshots of its PolicyExceptions (with status, to write it only on change)."""
    item = {**snapshot(body), "kind": "PolicyException", "status": copy.deepcopy(dict(body.get("status") or {}))}
    return {namespace: item}


@kopf.on.event("paved.dev", "v1alpha1", "intentpolicies")
def policy_changed(type: str | None, body: kopf.Body, policy_index: kopf.Index, exception_index: kopf.Index,
                   composition_index: kopf.Index, memo: kopf.Memo, **_: Any) -> None:
    """Ready from the compile result; any spec change (or deletion) re-audits every intent; a
    change of allowances makes the identities re-check theirs (their daemons follow the epoch)."""
    audit = auditor(policy_index, exception_index, composition_index, memo)
    metadata = body.get("metadata") or {}
    if note_allowances(metadata.get("name") or "", None if type == "DELETED" else body.get("spec")):
        _compose.allowances_changed()
    if type == "DELETED":
        audit.request_full()
        return
    condition = policy_condition(body)
    if condition[1] is False:
        log.warning("IntentPolicy %s: %s", metadata.get("name"), condition[3])
    old_generation = (body.get("status") or {}).get("observedGeneration")
    write_platform_status({**body, "kind": "IntentPolicy"}, [condition])
    if type is not None and old_generation != metadata.get("generation"):
        audit.request_full()


@kopf.on.event("paved.dev", "v1alpha1", "policyexceptions")
def exception_changed(type: str | None, body: kopf.Body, policy_index: kopf.Index, exception_index: kopf.Index,
                      composition_index: kopf.Index, memo: kopf.Memo, **_: Any) -> None:
    """Ready/Expired; any change re-audits (the audit also wakes at each expiry by itself)."""
    audit = auditor(policy_index, exception_index, composition_index, memo)
    if type == "DELETED" or (body.get("status") or {}).get("observedGeneration") != (body.get("metadata") or {}).get("generation"):
        audit.request_full()
    else:
        audit.wake.set()  # recompute the next expiry


async def _intent_changed(type: str | None, body: kopf.Body, policy_index: kopf.Index, exception_index: kopf.Index,
                    composition_index: kopf.Index, memo: kopf.Memo, **_: Any) -> None:
    """Kopf's watch of the intent kinds it serves; see `intent_event`."""
    intent_event(type, body, auditor(policy_index, exception_index, composition_index, memo))


def observe_intent(type: str | None, body: Mapping[str, Any]) -> None:
    """An intent event from a watch of Paved's own (paved.kube.watch: ExternalSecretRefs, by
    the thousand). Before the audit has started nothing is lost: its first pass is a full one."""
    if _auditor is not None:
        intent_event(type, body, _auditor)


def intent_event(type: str | None, body: Mapping[str, Any], audit: Auditor) -> None:
    """A created or re-specified intent is audited once its own reconcile has reported on this
    generation (its Ready condition carries it); a deleted one leaves the report.

    Waiting for Ready keeps the two status writers apart: the intent's reconcile patches the
    whole `conditions` list (a merge patch replaces lists) from the body it was given, so a
    PolicyCompliant written between that read and its patch was dropped and written again
    (at 1,500 identities created at once, 290 of them took a second PolicyCompliant write).
    An intent whose reconcile never reports is still covered by the periodic full audit.
    Nothing here waits on I/O: every status write of every intent comes through here.
    """
    namespace = (body.get("metadata") or {}).get("namespace")
    if not _compose.in_scope(namespace, audit.memo):
        return
    if type == "DELETED":
        audit.forget(body)
        return
    if not reported(body):
        return  # not reported yet: the reconcile's status write (a MODIFIED event) brings us back
    condition = get_condition((body.get("status") or {}).get("conditions"), POLICY_COMPLIANT)
    if condition is None or condition.get("observedGeneration") != (body.get("metadata") or {}).get("generation"):
        audit.submit(body)


@kopf.on.event("v1", "namespaces", id="audit-start")
def start_audit(policy_index: kopf.Index, exception_index: kopf.Index, composition_index: kopf.Index, memo: kopf.Memo,
                **_: Any) -> None:
    """Start the audit as soon as Kopf has loaded every index, even with no intent Kopf serves:
    Kopf holds handlers back until then, and the operator's own Namespace (the only one
    watched, paved.runtime) is the one object sure to exist."""
    auditor(policy_index, exception_index, composition_index, memo)


# ExternalSecretRefs are watched by paved.handlers.secrets (paved.kube.watch), which calls observe_intent.
AUDITED_BY_KOPF = tuple(kind for kind in INTENT_KINDS if kind != "ExternalSecretRef")
for _kind in AUDITED_BY_KOPF:
    kopf.on.event("paved.dev", "v1alpha1", kind_info(_kind).plural, id=f"audit-{kind_info(_kind).plural}")(_intent_changed)

