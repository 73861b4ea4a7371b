"""Composition revisions and rollout waves: the I/O around paved.render.waves.

A `step` of one Composition (its event handler on a change and on the leader's initial
listing, paved.handlers.platform; then this engine's own thread, every WAVE_SECONDS while
the rollout is under way and every SETTLED_RECOUNT_SECONDS once it is done or halted):

1. make sure the CompositionRevision of its current spec exists (created with the next
   revision number, owned by the Composition: the garbage collector removes it with it);
2. list the intents rendered with it (status.composition) and read, from their status
   alone, which revision each is on and whether it is Ready or failing there;
3. reconcile the intents in flight (on the latest revision, not Ready yet: a database being
   modified) to see whether they are Ready now; ask the pure planner
   (paved.render.waves.plan_wave) which Automatic intents move now, and reconcile exactly
   those with the latest revision (the compose engine's reconcile with
   `move`: one status write each, as paved-reconcile); repeat while moved intents become
   Ready at once (Kubernetes-only compositions) and nothing halts;
4. write the Composition's rollout status (latestRevision, intents per revision,
   updatedIntents, failedIntents, the RolledOut condition) and each revision's `intents`,
   as `paved-composition-rollout` (StatusWriter; nothing is written when nothing changed).

Nothing here is remembered between steps but when each Composition is due again: the
rollout's state is the intents' statuses and the revisions, so a restarted operator or a new
leader goes on where the last one stopped (its initial listing steps every Composition).
Reads and writes go through the compose engine's KubePort (paved.kube.port; the write fence).
The thread is not a Kopf timer on purpose: Kopf puts its finalizer on every object with a
timer, and Compositions carry none.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from paved import API_VERSION
from paved.api.common import READY
from paved.api.platform import CompositionRollout
from paved.engines.compose.engine import ComposeEngine
from paved.engines.compose.model import IntentKind, in_scope, owner_of
from paved.errors import located
from paved.kube import status as kube_status
from paved.kube.client import ApiError
from paved.kube.port import KubePort
from paved.kube.status import StatusWriter
from paved.render.waves import (
    ROLLED_OUT,
    IntentOnRevision,
    Wave,
    intent_on_revision,
    is_revision_of,
    plan_wave,
    revision_labels,
    revision_name,
    revision_spec,
)

log = logging.getLogger(__name__)

COMPOSITION, REVISION = "Composition", "CompositionRevision"
ROLLOUT_FIELD_MANAGER = "paved-composition-rollout"
COMPOSITION_ROLLOUT_STATUS = StatusWriter(
    ROLLOUT_FIELD_MANAGER, frozenset({"latestRevision", "revisions", "updatedIntents", "failedIntents"}), frozenset({ROLLED_OUT}))
REVISION_STATUS = StatusWriter(ROLLOUT_FIELD_MANAGER, frozenset({"observedGeneration", "intents"}), frozenset({READY}))
WAVE_SECONDS = 5.0  # a rollout under way looks at its intents again this often
SETTLED_RECOUNT_SECONDS = 60.0  # a rolled-out or halted Composition is re-counted this often (new intents, recoveries)


class CompositionWaves:
    """Steps of Compositions' rollouts; one at a time per Composition."""

    def __init__(self, compose: ComposeEngine, *, wave_seconds: float = WAVE_SECONDS, kube: KubePort | None = None) -> None:
        self.compose = compose
        self.kube: KubePort = kube or compose.kube
        self.wave_seconds = wave_seconds
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._due: dict[str, float] = {}  # composition name -> monotonic time of its next step
        self._compositions: Callable[[], Sequence[Mapping[str, Any]]] = list
        self._namespaces: Collection[str] = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, compositions: Callable[[], Sequence[Mapping[str, Any]]], namespaces: Collection[str]) -> None:
        """Step due Compositions from now on (once; the leader's startup): `compositions` gives
        the live Composition index (what intents are rendered with)."""
        with self._guard:
            if self._thread is not None:
                return
            self._compositions, self._namespaces = compositions, namespaces
            self._thread = threading.Thread(target=self._loop, name="paved-composition-waves", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def forget(self, name: str) -> None:
        """The Composition is gone."""
        with self._guard:
            self._locks.pop(name, None)
            self._due.pop(name, None)

    def _loop(self) -> None:
        while not self._stop.wait(self.wave_seconds):
            now = time.monotonic()
            with self._guard:
                due = sorted(name for name, when in self._due.items() if when <= now)
            for name in due:
                try:
                    self._step_live(name)
                except Exception as error:  # noqa: BLE001 - a failed step is retried at the next one; the thread goes on
                    log.error("composition %s: rollout step failed: %s", name, located(error))

    def _step_live(self, name: str) -> None:
        composition = self.kube.get(API_VERSION, COMPOSITION, name)
        if composition is None:
            self.forget(name)
            return
        conditions = (composition.get("status") or {}).get("conditions") or []
        ready: Mapping[str, Any] = next((c for c in conditions if c.get("type") == READY), {})
        if ready.get("status") == "False":  # invalid: nothing moves to it (its Ready says why)
            return
        self.step(composition, self._compositions(), self._namespaces, trigger=f"composition {name} rollout")

    def step(self, composition: Mapping[str, Any], compositions: Sequence[Mapping[str, Any]],
             namespaces: Collection[str], *, trigger: str) -> Wave | None:
        """One step of the Composition's rollout (the module docstring); None when no intent
        kind it renders is served here."""
        name = _name(composition)
        intent_kind = self.compose.registered_kind(str((composition.get("spec") or {}).get("compositeKind") or ""))
        if intent_kind is None:
            return None
        with self._lock(name):
            latest = revision_name(composition)
            created = self.ensure_revision(composition, latest)
            settings = CompositionRollout.model_validate((composition.get("spec") or {}).get("rollout") or {})
            view = {intent.key: (item, intent) for item, intent in self._users(intent_kind, name, namespaces)}
            wave = plan_wave(latest, [intent for _, intent in view.values()], max_in_flight=settings.maxInFlight,
                             max_failures=settings.maxFailures)
            # Not Ready yet: look again (a database being modified). At most maxInFlight per step, so
            # that new intents waiting for their first database do not cost a reconcile each per step.
            for key in sorted(set(wave.in_flight) - set(wave.move))[:settings.maxInFlight]:
                view = self._reconcile(intent_kind, view, key, compositions, trigger, move=False)
            wave = plan_wave(latest, [intent for _, intent in view.values()], max_in_flight=settings.maxInFlight,
                             max_failures=settings.maxFailures)
            while wave.move:
                moved = wave.move
                for key in moved:
                    view = self._reconcile(intent_kind, view, key, compositions, trigger, move=True)
                wave = plan_wave(latest, [intent for _, intent in view.values()], max_in_flight=settings.maxInFlight,
                                 max_failures=settings.maxFailures)
                if all(key not in view or view[key][1].revision != latest for key in moved):
                    break  # no move landed (API errors): the next step tries again
            self._report(composition, wave, created)
            settled = wave.done or wave.halted
            with self._guard:
                self._due[name] = time.monotonic() + (SETTLED_RECOUNT_SECONDS if settled else self.wave_seconds)
            return wave

    def ensure_revision(self, composition: Mapping[str, Any], latest: str) -> Mapping[str, Any] | None:
        """Create the revision `latest` of the Composition unless it is known; the created
        object, or None (known, or made meanwhile by someone else)."""
        if latest in self.compose.revisions():
            return None
        selector = ",".join(f"{key}={value}" for key, value in revision_labels(composition).items())
        existing = self.kube.list(API_VERSION, REVISION, None, selector)
        if any((item.get("metadata") or {}).get("name") == latest for item in existing):
            return None
        number = 1 + max((int((item.get("spec") or {}).get("revision") or 0) for item in existing), default=0)
        body = {
            "apiVersion": API_VERSION, "kind": REVISION,
            "metadata": {"name": latest, "labels": revision_labels(composition)},
            "spec": {"revision": number, "compositionSpec": revision_spec(composition)},
        }
        owner = owner_of({"apiVersion": API_VERSION, "kind": COMPOSITION, **composition})
        try:
            made = self.kube.create(body, owner)
        except ApiError as error:
            if error.already_exists:
                return None
            raise
        log.info("composition %s: revision %d recorded as %s", _name(composition), number, latest)
        return made

    # --- steps ---------------------------------------------------------------------------

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def _users(self, intent_kind: IntentKind, name: str, namespaces: Collection[str]
               ) -> Iterator[tuple[dict[str, Any], IntentOnRevision]]:
        """The intents rendered with Composition `name` that this operator serves, as read."""
        for item in self.kube.list(API_VERSION, intent_kind.kind):
            metadata = item.get("metadata") or {}
            if (item.get("status") or {}).get("composition") != name or metadata.get("deletionTimestamp"):
                continue
            if in_scope(metadata.get("namespace"), namespaces):
                yield item, intent_on_revision(item)

    def _reconcile(self, intent_kind: IntentKind, view: dict[str, tuple[dict[str, Any], IntentOnRevision]], key: str,
                   compositions: Sequence[Mapping[str, Any]], trigger: str, *, move: bool
                   ) -> dict[str, tuple[dict[str, Any], IntentOnRevision]]:
        """Reconcile the intent `key` (`move`: with the latest revision); the view with what it shows now."""
        item, _ = view[key]
        try:
            outcome = self.compose.reconcile_written(intent_kind, item, compositions, trigger=trigger, move=move)
        except ApiError as error:  # one intent's failure must not stop the others
            log.warning("rollout: reconciling %s %s failed (%s); retried at the next step", intent_kind.kind, key, error)
            return view
        if outcome is None or outcome.status.get("composition") != (item.get("status") or {}).get("composition"):
            return {k: v for k, v in view.items() if k != key}  # being deleted, or rendered with another Composition now
        moved = {**item, "status": outcome.status}
        return {**view, key: (moved, intent_on_revision(moved))}

    def _report(self, composition: Mapping[str, Any], wave: Wave, created: Mapping[str, Any] | None) -> None:
        """The Composition's rollout status and each of its revisions' `intents`."""
        revisions = {name: revision for name, revision in self.compose.revisions().items() if is_revision_of(revision, composition)}
        if created is not None:
            revisions[_name(created)] = created
        numbers: dict[str, int | None] = {name: (revision.get("spec") or {}).get("revision") for name, revision in revisions.items()}
        order = sorted((name for name, count in wave.counts.items() if count),
                       key=lambda name: (name != wave.latest, -(numbers.get(name) or 0), name))
        counted = [{"name": name, "revision": numbers.get(name), "intents": wave.counts[name]} for name in order]
        generation = (composition.get("metadata") or {}).get("generation")
        fields = {"latestRevision": wave.latest, "revisions": counted, "updatedIntents": wave.updated,
                  "failedIntents": len(wave.failed)}
        status = kube_status.with_conditions({**dict(composition.get("status") or {}), **fields}, [wave.condition()], generation)
        if COMPOSITION_ROLLOUT_STATUS.write({"apiVersion": API_VERSION, "kind": COMPOSITION, **composition}, status,
                                            kube=self.kube) is not None:
            condition = wave.condition()
            log.info("composition %s: %s (%s)", _name(composition), condition[2], condition[3])
        for name, revision in revisions.items():
            shown_status: dict[str, Any] = dict(revision.get("status") or {})
            shown = {"apiVersion": API_VERSION, "kind": REVISION, "metadata": revision.get("metadata") or {},
                     "status": shown_status}
            count = wave.counts.get(name, 0)
            where = "latest" if name == wave.latest else "superseded"
            ready = (READY, True, "Recorded", f"revision {numbers.get(name)} of composition {_name(composition)} ({where}); "
                                             f"{count} intent(s) on it")
            recorded = (revision.get("metadata") or {}).get("generation")
            revision_status = kube_status.with_conditions(
                {**shown_status, "observedGeneration": recorded, "intents": count}, [ready], recorded)
            try:
                REVISION_STATUS.write(shown, revision_status, kube=self.kube)
            except ApiError as error:
                if not error.not_found:
                    raise


def _name(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name") or "")
