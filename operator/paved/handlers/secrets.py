"""ExternalSecretRef, SecretStore, ClusterSecretStore: Kopf's (and Paved's own watches') side
of the secret sync engine (paved.engines.secretsync).

Handlers do not sync. They validate and *register*:

- ExternalSecretRef events (a watch of Paved's own, paved.kube.watch, started with the
  engine on the leader: Kopf's per-event work was most of the operator's CPU at a cold start
  of thousands) -> registered; due at once unless it already synced its current generation
  (first sync immediately, a spec change at once), else at its place on the schedule (from
  status.lastRefreshTime), so a restart is not a refresh storm; deleted -> unregistered
  (the Secret goes with the ref through its ownerReference). Every ref event also goes to
  the policy audit.
- SecretStore / ClusterSecretStore events (Kopf) feed the engine's store cache and make the
  store's refs due at once when it appears or changes; create/update/resume and a timer
  run a real authentication check and write the store's Ready condition (server-side apply
  as `paved-store-check`). A SecretStore that
  would act with the operator's credentials or at an endpoint the platform did not give it
  (paved.secretsync.tenancy) is refused before anything is asked of a backend; when
  IntentPolicy allowances change (`allowances_changed`), every SecretStore is checked again
  and its refs sync again at once.
- Target Secret events (a watch of Paved's own too, selected by target.TARGET_LABEL on the
  API server): a target edited or deleted by hand makes its ref due at once, marked for repair.

The engine itself (one loop per operator, a job per store, batching reads per store; a
store that hangs delays only its own refs) is paved.engines.secretsync.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from paved import API_VERSION, GROUP, VERSION
from paved.api.kinds import SpecError, kind_info
from paved.engines import Engines
from paved.engines.secretsync import FAILED_STORE_CHECK_INTERVAL, REF_KIND, STORE_PLURALS, STORE_STATUS
from paved.handlers.children import owner_ref_of, written_by_paved
from paved.kube import apply as kube_apply
from paved.kube.watch import Informer
from paved.providers.base import Owner
from paved.secretsync import target
from paved.secretsync.model import SECRET_STORE, RefSpec, StoreKey, ref_spec_from
from paved.secretsync.values import live_content_hash, template_problems

log = logging.getLogger(__name__)


def watches(engines: Engines) -> list[Informer]:
    """The watches that feed the engine on the leader (in the namespaces Paved serves)."""
    namespaces = sorted(engines.scope.namespaces)
    target_selector = (f"{kube_apply.MANAGED_BY_LABEL}={kube_apply.MANAGED_BY},"
                       f"{target.TARGET_LABEL}={target.TARGET_LABEL_VALUE}")
    return [
        Informer(API_VERSION, REF_KIND, functools.partial(ref_event, engines), namespaces=namespaces),
        Informer("v1", "Secret", functools.partial(target_event, engines), label_selector=target_selector,
                 namespaces=namespaces),
    ]


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


def ref_event(engines: Engines, type: str | None, body: dict[str, Any]) -> None:
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
        engines.secrets.unregister(uid)
    elif not engines.secrets.state.knows(uid, int(metadata.get("generation") or 0)):
        register_or_report(engines, body)
    engines.audit.observe(type, body)


def register_or_report(engines: Engines, body: Mapping[str, Any]) -> None:
    try:
        ref = parse_ref(body)
    except SpecError as error:
        engines.secrets.report_invalid(body, error.problems)
        return
    engines.secrets.register(ref, body.get("status"))


def _store_key(kind: str, body: Mapping[str, Any]) -> StoreKey:
    metadata = body.get("metadata") or {}
    namespace = (metadata.get("namespace") or "") if kind == SECRET_STORE else ""
    return StoreKey(kind, namespace, metadata.get("name", ""))


def _store_event(kind: str) -> Callable[..., None]:
    def handler(type: str | None, body: kopf.Body, memo: Engines, **_: Any) -> None:
        memo.secrets.store_seen(_store_key(kind, body), None if type == "DELETED" else body)

    return handler


def _store_check(kind: str) -> Callable[..., None]:
    def handler(body: kopf.Body, memo: Engines, **_: Any) -> None:
        STORE_STATUS.write(body, memo.secrets.check_store(_store_key(kind, body), body))

    return handler


def _store_recheck(kind: str) -> Callable[..., None]:
    """The periodic check: every 5 min while the store is Ready, every 30 s while it is not, so a
    fix made outside the store (its namespace labelled for ServiceAccount tokens) shows soon."""
    check = _store_check(kind)

    def handler(body: kopf.Body, memo: Engines, **kwargs: Any) -> None:
        if memo.secrets.store_check_due(body):
            check(body=body, memo=memo, **kwargs)

    return handler


def target_event(engines: Engines, type: str | None, body: dict[str, Any]) -> None:
    """A target Secret edited or deleted by someone else: its ref rewrites it at once (the
    engine's own writes, thousands at a cold start, are told apart by managedFields)."""
    owner = owner_ref_of(body)
    if owner is None or owner.kind != REF_KIND:
        return
    if type == "DELETED":
        engines.secrets.repair(owner.uid)
    elif not written_by_paved(body):
        repair_if_changed(engines, owner, body)


def repair_if_changed(engines: Engines, owner: Owner, body: Mapping[str, Any]) -> None:
    memory = engines.secrets.state.memory(owner.uid)
    if memory is not None and memory.content_hash and live_content_hash(engines.secrets.hash_key, body) != memory.content_hash:
        log.info("Secret %s/%s changed by someone else; restoring it", owner.namespace, memory.spec.target.name)
        engines.secrets.repair(owner.uid)


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the store handlers to the leader's registry (refs and targets: `watches`)."""
    for kind, plural in STORE_PLURALS.items():
        kopf.on.event(GROUP, VERSION, plural, id=f"{plural}-cache", registry=registry)(_store_event(kind))
        check = _store_check(kind)
        for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
            on(GROUP, VERSION, plural, id=f"{plural}-auth", registry=registry)(check)
        kopf.timer(GROUP, VERSION, plural, interval=FAILED_STORE_CHECK_INTERVAL, initial_delay=FAILED_STORE_CHECK_INTERVAL,
                   id=f"{plural}-recheck", registry=registry)(_store_recheck(kind))
