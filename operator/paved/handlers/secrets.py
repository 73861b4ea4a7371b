"""ExternalSecretRef, SecretStore, ClusterSecretStore: handlers.

Execution model
---------------
Handlers do not sync. They validate and *register*:

- ExternalSecretRef events (a watch of Paved's own, paved.kube.watch, started with the
  engine: Kopf's per-event work was most of the operator's CPU at a cold start of
  thousands) -> registered; due at once unless it already synced its current generation
  (first sync immediately, a spec change at once), else at its place on the schedule (from
  status.lastRefreshTime), so a restart is not a refresh storm; deleted -> unregistered
  (the Secret goes with the ref through its ownerReference). Every ref event also goes to
  the policy audit (paved.handlers.policy.observe_intent).
- SecretStore / ClusterSecretStore events (Kopf) feed the engine's store cache and make the
  store's refs due at once when it appears or changes; create/update/resume and a timer
  run a real authentication check and write the store's Ready condition. A SecretStore that
  would act with the operator's credentials or at an endpoint the platform did not give it
  (paved.secretsync.tenancy) is refused before anything is asked of a backend; when
  IntentPolicy allowances change (`allowances_changed`), every SecretStore is checked again
  and its refs sync again at once.
- Target Secret events (a watch of Paved's own too, selected by target.TARGET_LABEL on the
  API server): a target edited or deleted by hand makes its ref due at once, marked for repair.

The engine itself (one thread per operator, batching reads per store) is in
paved.handlers._secretsync.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from paved import API_VERSION, GROUP, VERSION
from paved.api.kinds import SpecError, kind_info
from paved.errors import located
from paved.handlers._secretsync import (
    REF_KIND,
    STORE_CHECK_INTERVAL,
    STORE_PLURALS,
    KubeApi,
    SyncEngine,
)
from paved.handlers import _compose, policy
from paved.handlers.children import owner_ref_of, written_by_paved
from paved.kube import apply as kube_apply
from paved.kube import status as kube_status
from paved.kube.watch import Informer
from paved.providers.base import Owner
from paved.secretsync import target
from paved.secretsync.model import SECRET_STORE, RefSpec, StoreKey, ref_spec_from
from paved.secretsync.values import live_content_hash, template_problems

log = logging.getLogger(__name__)


# --- Kopf ---------------------------------------------------------------------------------------

_ENGINE: SyncEngine | None = None
_ENGINE_LOCK = threading.Lock()


def engine() -> SyncEngine:
    """The operator's one engine (created on first use)."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = SyncEngine(KubeApi(), allowances=_compose.allowances)
        return _ENGINE


def _store_key(kind: str, body: Mapping[str, Any]) -> StoreKey:
    metadata = body.get("metadata") or {}
    namespace = (metadata.get("namespace") or "") if kind == SECRET_STORE else ""
    return StoreKey(kind, namespace, metadata.get("name", ""))


_INFORMERS: list[Informer] = []


@kopf.on.startup()
def start_engine(memo: kopf.Memo, **_: Any) -> None:
    """The engine, then the watches that feed it (in the namespaces Paved serves)."""
    engine().start()
    namespaces = sorted(memo.get("namespaces") or ()) if memo is not None else []
    target_selector = (f"{kube_apply.MANAGED_BY_LABEL}={kube_apply.MANAGED_BY},"
                       f"{target.TARGET_LABEL}={target.TARGET_LABEL_VALUE}")
    _INFORMERS[:] = [
        Informer(API_VERSION, REF_KIND, ref_event, namespaces=namespaces),
        Informer("v1", "Secret", target_event, label_selector=target_selector, namespaces=namespaces),
    ]
    for informer in _INFORMERS:
        informer.start()


@kopf.on.cleanup()
def stop_engine(**_: Any) -> None:
    for informer in _INFORMERS:
        informer.stop()
    if _ENGINE is not None:
        _ENGINE.stop()


def parse_ref(body: Mapping[str, Any]) -> RefSpec:
    """The ref as the engine sees it; SpecError names every problem's field."""
    metadata = body.get("metadata") or {}
    spec = kind_info(REF_KIND).parse_spec(body.get("spec"))
    ref = ref_spec_from(metadata.get("namespace", ""), metadata.get("name", ""), metadata.get("uid", ""),
                        int(metadata.get("generation") or 0), spec)  # type: ignore[arg-type]
    problems = template_problems(ref.target.template)
    if problems:
        raise SpecError(REF_KIND, problems)
    return ref


def ref_event(type: str | None, body: dict[str, Any]) -> None:
    """Register a new or re-specified ref with the engine (invalid: Ready=False naming the
    field); unregister a deleted one (its Secret goes with it through the ownerReference).
    Then hand the event to the policy audit.

    The engine keeps what Kopf's handler state would (the synced generation, from status),
    so nothing is written on the ref here, and the engine's own status writes coming back
    as events cost a dictionary look-up each.
    """
    metadata = body.get("metadata") or {}
    uid = metadata.get("uid", "")
    if type == "DELETED":
        engine().unregister(uid)
    elif not engine().state.knows(uid, int(metadata.get("generation") or 0)):
        register_or_report(body)
    policy.observe_intent(type, body)


def register_or_report(body: Mapping[str, Any]) -> None:
    try:
        ref = parse_ref(body)
    except SpecError as error:
        engine().report_invalid(body, error.problems)
        return
    engine().register(ref, body.get("status"))


def _store_event(kind: str) -> Callable[..., None]:
    def handler(type: str | None, body: kopf.Body, **_: Any) -> None:
        engine().store_seen(_store_key(kind, body), None if type == "DELETED" else body)

    return handler


def _store_check(kind: str) -> Callable[..., None]:
    def handler(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        old = dict(body.get("status") or {})
        status = engine().check_store(_store_key(kind, body), body)
        for key, value in kube_status.status_delta(old, status).items():
            patch.status[key] = value

    return handler


def allowances_changed() -> None:
    """What IntentPolicies allow changed (paved.handlers.policy): the refs of every SecretStore
    sync again at once, and each SecretStore's Ready is checked again, off the caller's thread."""
    stores = engine().permissions_changed()
    if stores:
        threading.Thread(target=_recheck_stores, args=(stores,), name="paved-store-recheck", daemon=True).start()


def _recheck_stores(keys: list[StoreKey]) -> None:
    for key in keys:
        try:
            live = kube_apply.get(API_VERSION, key.kind, key.name, key.namespace)
            if live is None:
                continue
            delta = kube_status.status_delta(dict(live.get("status") or {}), engine().check_store(key, live))
            if delta:
                kube_status.patch_status(API_VERSION, key.kind, key.namespace, key.name, delta,
                                         resource_version=(live.get("metadata") or {}).get("resourceVersion"))
        except Exception as error:  # noqa: BLE001 - the store's own timer checks it again
            log.warning("re-checking %s after an allowance change failed: %s", key, located(error))


for _kind, _plural in STORE_PLURALS.items():
    kopf.on.event(GROUP, VERSION, _plural, id=f"{_plural}-cache")(_store_event(_kind))
    _check = _store_check(_kind)
    kopf.on.resume(GROUP, VERSION, _plural, id=f"{_plural}-auth")(_check)
    kopf.on.create(GROUP, VERSION, _plural, id=f"{_plural}-auth")(_check)
    kopf.on.update(GROUP, VERSION, _plural, id=f"{_plural}-auth")(_check)
    kopf.timer(GROUP, VERSION, _plural, interval=STORE_CHECK_INTERVAL, initial_delay=STORE_CHECK_INTERVAL,
               id=f"{_plural}-recheck")(_check)


def target_event(type: str | None, body: dict[str, Any]) -> None:
    """A target Secret edited or deleted by someone else: its ref rewrites it at once (the
    engine's own writes, thousands at a cold start, are told apart by managedFields)."""
    owner = owner_ref_of(body)
    if owner is None or owner.kind != REF_KIND:
        return
    if type == "DELETED":
        engine().repair(owner.uid)
    elif not written_by_paved(body):
        repair_if_changed(owner, body)


def repair_if_changed(owner: Owner, body: Mapping[str, Any]) -> None:
    memory = engine().state.memory(owner.uid)
    if memory is not None and memory.content_hash and live_content_hash(engine().hash_key, body) != memory.content_hash:
        log.info("Secret %s/%s changed by someone else; restoring it", owner.namespace, memory.spec.target.name)
        engine().repair(owner.uid)


__all__ = ["engine", "parse_ref"]
