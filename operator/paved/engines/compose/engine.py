"""The composed reconcile every intent kind shares: spec -> composition -> render -> providers.

One method, `ComposeEngine.reconcile`, takes an intent as read from the API server and makes
the world match it, in a fixed, visible order:

1. validate the spec with the kind's pydantic model (defaults applied)  -> InvalidSpec
2. read the namespace's labels, select the Composition                  -> NoComposition
3. render every resource with placeholders for generated values; any RenderError stops
   here, BEFORE anything is written (nothing half-created)              -> RenderFailed
4. get or create the generated-secrets Secret (values made once, never logged)
5. apply each non-pending resource in order through its provider, feed its outputs to the
   next render pass, repeat until nothing more can be applied           -> ProviderError
6. prune Kubernetes children the intent no longer renders
7. build the new status (Ready, Synced, observedGeneration, composition, renderHash,
   resources) and what of it changed

Quiet at idle: when the render hash equals status.renderHash, step 5 first observes each
resource and writes only the missing or drifted ones, and the status of an unchanged
reconcile equals what the intent shows, so a resumed or re-listed intent causes no write at all.

Callers: the Kopf handlers of each kind, the children watch (drift of owned objects) and
Composition changes; all reconcile and write through `reconcile_and_write`, as one writer
(the kind's `status_writer`: server-side apply as `paved-reconcile`, paved.kube.status), one
path at a time per intent, each starting from the status as last written (`as_written`).
Kinds register an `IntentKind` with the engine so those generic paths can reconcile any
intent from its ownerReference.

The engine holds the process's only compose state (paved.runtime builds one): the registered
kinds, where allowances come from, and a lock per intent. It has no thread of its own, so
its lifecycle is its owner's.
"""

from __future__ import annotations

import base64
import logging
import threading
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from paved import metrics, ratelimit
from paved.api.common import READY, SYNCED
from paved.api.fields import derived_name
from paved.api.kinds import SpecError
from paved.api.platform import nothing_allowed
from paved.policy.allowances import allowance_signature
from paved.engines.compose.model import (
    GENERATED_SUFFIX,
    KUBERNETES,
    MAX_PASSES,
    REASON_APPLIED,
    REASON_INVALID_SPEC,
    REASON_NO_COMPOSITION,
    REASON_PROVIDER_ERROR,
    REASON_READY,
    REASON_RENDER_FAILED,
    REASON_WAITING,
    ComposeError,
    ComposeResult,
    IntentKind,
    Outcome,
    ResourceState,
    owner_of,
)
from paved.kube import apply as kube_apply
from paved.kube import status as kube_status
from paved.kube.client import ApiError
from paved.kube.port import ApiKube, KubePort, prune
from paved.kube.status import CONDITIONS
from paved.providers import base as providers
from paved.providers.base import Owner, ProviderError
from paved.render import RenderError, RenderResult, declared_secrets, everything_allowed, generate_missing, render_intent
from paved.render.types import RenderedResource

log = logging.getLogger(__name__)

AllowanceSource = Callable[[str, str | None], Mapping[str, list[str]]]  # (kind, namespace) -> allowed
RevisionSource = Callable[[], Mapping[str, Mapping[str, Any]]]  # CompositionRevisions by name
T = TypeVar("T")


class ComposeEngine:
    """Registered intent kinds, the allowance source, a lock per intent; the reconcile itself,
    whose Kubernetes reads and writes go through `kube` (ApiKube; FakeKube in unit tests)."""

    def __init__(self, kube: KubePort | None = None) -> None:
        self.kube: KubePort = kube or ApiKube()
        self._kinds: dict[str, IntentKind] = {}
        self._allowance_source: AllowanceSource = lambda kind, namespace: nothing_allowed()
        self._revision_source: RevisionSource = dict
        self._allowance_epoch = 0  # bumped whenever some policy's allowances change: long-lived watchers re-check
        self._allowances_seen: dict[str, Any] = {}  # policy name -> allowance_signature of a policy that allows something
        self._locks_guard = threading.Lock()
        self._locks: weakref.WeakValueDictionary[str, threading.RLock] = weakref.WeakValueDictionary()
        self._written: dict[str, dict[str, Any]] = {}  # uid -> the reconcile's part of the status as last written

    # --- kinds ----------------------------------------------------------------------------

    def register_kind(self, intent_kind: IntentKind) -> IntentKind:
        """Make `intent_kind` reachable by the generic paths (children watch, composition changes)."""
        self._kinds[intent_kind.kind] = intent_kind
        return intent_kind

    def registered_kind(self, kind: str) -> IntentKind | None:
        return self._kinds.get(kind)

    # --- allowances -----------------------------------------------------------------------

    def set_allowance_source(self, source: AllowanceSource) -> None:
        """Where renders read what IntentPolicies allow an intent (the policy handlers set it
        from the policy index at startup; until then, and in tests without it, nothing is allowed)."""
        self._allowance_source = source

    def note_allowances(self, policy: str, spec: Mapping[str, Any] | None) -> bool:
        """Record what an IntentPolicy allows, and to whom (spec None: deleted); when that
        changed, bump the epoch so that long-lived watchers (identity daemons) look again."""
        signature = allowance_signature(spec)
        if self._allowances_seen.get(policy) == signature:
            return False
        if signature is None:
            self._allowances_seen.pop(policy, None)
        else:
            self._allowances_seen[policy] = signature
        self._allowance_epoch += 1
        return True

    @property
    def allowance_epoch(self) -> int:
        return self._allowance_epoch

    def allowances(self, kind: str, namespace: str | None) -> Mapping[str, list[str]]:
        """What IntentPolicies allow an intent of `kind` in `namespace` (paved.policy.allowances)."""
        return self._allowance_source(kind, namespace)

    # --- revisions ------------------------------------------------------------------------

    def set_revision_source(self, source: RevisionSource) -> None:
        """Where renders read the CompositionRevisions (paved.handlers.platform sets it from the
        revision index at startup; until then, and in tests without it, none is known and
        every intent is rendered with its Composition as it is now)."""
        self._revision_source = source

    def revisions(self) -> Mapping[str, Mapping[str, Any]]:
        return self._revision_source()

    def owner_lock(self, uid: str) -> threading.RLock:
        """One lock per intent, so a drift restore and a Kopf handler never interleave on it."""
        with self._locks_guard:
            lock = self._locks.get(uid)
            if lock is None:
                lock = threading.RLock()
                self._locks[uid] = lock
            return lock

    # --- the reconcile --------------------------------------------------------------------

    def compose(
        self,
        intent_kind: IntentKind,
        body: Mapping[str, Any],
        compositions: Sequence[Mapping[str, Any]],
        *,
        previous: Mapping[str, Any] | None = None,
        move: bool = False,
    ) -> ComposeResult:
        """Steps 1-6 of the module docstring; never raises for expected failures (see result.error).

        The intent is rendered with the CompositionRevision it is on (paved.render.waves), or
        with the latest when `move` (a Composition's rollout moves it now)."""
        owner = owner_of(body)
        previous = previous or {}
        result = ComposeResult(generation=owner.generation)
        try:
            result.spec = intent_kind.parse_spec(body)
        except SpecError as error:
            result.error = _spec_error(error)
            return result
        try:
            labels = namespace_labels(owner.namespace, kube=self.kube)
        except ApiError as error:
            result.error = ComposeError(REASON_PROVIDER_ERROR, f"reading namespace {owner.namespace}: {error.message}", retryable=True)
            return result
        rendering = render_intent(body, compositions, spec=result.spec, namespace_labels=labels,
                                  allowed=self.allowances(intent_kind.kind, owner.namespace),
                                  revisions=self.revisions(), move=move)
        result.composition, result.revision = rendering.composition_name, rendering.revision
        if rendering.error is not None:
            result.error = _render_error(rendering.error, selecting=rendering.composition is None)
            return result
        composition, rendered = rendering.composition, rendering.result
        assert composition is not None and rendered is not None  # noqa: S101 - narrows: no error means rendered
        result.render_hash = rendered.hash
        generated: dict[str, str] = {}
        try:
            generated = ensure_generated(self.kube, composition, owner)
            if generated:
                rendered = rendering.with_values(generated=generated)
            observe_first = previous.get("renderHash") == rendered.hash
            _apply_passes(result, rendered, owner, observe_first=observe_first,
                          rerender=lambda outputs: rendering.with_values(outputs=outputs, generated=generated))
            if result.error is None and previous.get("renderHash") not in (None, rendered.hash):
                _prune(self.kube, result, owner, previous, generated_secret=bool(generated))
        except RenderError as error:  # a later pass, with outputs known, failed to render
            result.error = _render_error(error, selecting=False)
        except ProviderError as error:  # outside a resource: generated secret, pruning
            result.error = ComposeError(REASON_PROVIDER_ERROR, str(error), field=error.field, retryable=error.retryable)
        except ApiError as error:
            result.error = ComposeError(REASON_PROVIDER_ERROR, str(error), retryable=error.transient or error.status >= 500)
        # No message above can hold a generated value: render errors are built without them
        # (paved.render.engine), and provider and API errors keep no value of a request
        # (paved.kube.client, paved.providers), so an echo of the rendered body cannot reach status.
        return result

    def reconcile(
        self,
        intent_kind: IntentKind,
        body: Mapping[str, Any],
        compositions: Sequence[Mapping[str, Any]],
        *,
        trigger: str = "handler",
        move: bool = False,
    ) -> Outcome:
        """Compose, build the status and what changed of it, post Events for that; no status write.

        Serialised per intent (owner_lock). Events are posted only when something changed, so
        an idle re-run is silent.
        """
        owner = owner_of(body)
        with self.owner_lock(owner.uid), metrics.timed_reconcile(intent_kind.kind):
            old = dict(body.get("status") or {})
            result = self.compose(intent_kind, body, compositions, previous=old, move=move)
            status = build_status(intent_kind, body, result)
            outcome = intent_kind.outcome(result, body, status)
            metrics.RECONCILES.labels(kind=intent_kind.kind, result=result.result_label).inc()
            _report(self.kube, owner, result, outcome.changed, trigger)
            if intent_kind.refine is not None:
                outcome = intent_kind.refine(outcome, body)
            if outcome.changed and intent_kind.audit is not None:
                intent_kind.audit(owner, old, outcome.status)
            return outcome

    # --- the reconcile's status ------------------------------------------------------------

    def reconcile_and_write(self, intent_kind: IntentKind, body: Mapping[str, Any],
                            compute: Callable[[Mapping[str, Any]], tuple[Mapping[str, Any] | None, T]], *,
                            while_deleting: bool = False) -> T | None:
        """Reconcile an intent and write its status, one path at a time per intent (owner_lock):
        `compute(current)` acts and returns the new status (None: nothing to write) and what
        to hand back. `current` is `body` as this process last wrote the reconcile's part of
        its status (`as_written`). An intent being deleted is left to its finalizer (None)
        unless `while_deleting`; a gone one gets no status. Meanwhile the policy audit yields
        (paved.ratelimit.BURST): it no longer waits for an intent's Ready, and at a cold start
        of thousands its evaluations and writes would otherwise compete with the reconciles."""
        if (body.get("metadata") or {}).get("deletionTimestamp") and not while_deleting:
            return None
        with ratelimit.BURST.held(), self.owner_lock(owner_of(body).uid):
            current = self.as_written(intent_kind, body)
            status, result = compute(current)
            try:
                if status is not None:
                    self._write_status(intent_kind, current, status)
            except ApiError as error:
                if not error.not_found:  # gone: nothing to write
                    raise
            return result

    def reconcile_written(self, intent_kind: IntentKind, body: Mapping[str, Any], compositions: Sequence[Mapping[str, Any]],
                          *, trigger: str, move: bool = False) -> Outcome | None:
        """The composed reconcile and its status written (the children watch, Composition
        changes, rollout waves with `move`): `reconcile` through `reconcile_and_write`."""
        return self.reconcile_and_write(
            intent_kind, body,
            lambda current: self.reconcile(intent_kind, current, compositions, trigger=trigger, move=move).written())

    def as_written(self, intent_kind: IntentKind, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """`body` with the reconcile's part of its status as this process last wrote it.

        Every path that reconciles an intent (its Kopf handlers, the children watch,
        Composition changes, an identity's daemon, a database's drift check) is one writer,
        the only one of those fields, and writes them through here one at a time; so
        that part is newer than in any body read before the write (a Kopf event, a daemon's
        snapshot, a listing). Computing from it, a path never puts back what another path
        changed meanwhile (an identity's Accepted), and comparing with it, never skips a
        write the object still needs. A new leader starts from the bodies."""
        written = self._written.get(owner_of(body).uid)
        if written is None:
            return body
        return {**body, "status": intent_kind.status_writer.with_part(body.get("status"), written)}

    def _write_status(self, intent_kind: IntentKind, body: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
        """Write the reconcile's part of `status` onto the intent `body` (as_written); no request
        when it holds that already. True when written. A gone intent raises ApiError (404)."""
        uid = owner_of(body).uid
        with self.owner_lock(uid):
            try:
                written = intent_kind.status_writer.write(body, status, kube=self.kube)
            except Exception:
                self._written.pop(uid, None)  # it may or may not have landed: read bodies again
                raise
            self._written[uid] = intent_kind.status_writer.owned(status)
            return written is not None

    def forget(self, uid: str) -> None:
        """The intent is gone: drop what was written of its status."""
        self._written.pop(uid, None)

    def finalize(self, intent_kind: IntentKind, body: Mapping[str, Any], compositions: Sequence[Mapping[str, Any]]) -> list[str]:
        """Remove what the garbage collector cannot: external resources and unowned children.

        Non-Kubernetes resources are deleted through their providers in reverse order with the
        kind's deletion policy (the intent is re-rendered to know them), each only once every
        later one is gone: a later resource may use an earlier one (an instance its security
        group), and the cloud refuses to delete what is in use. Kubernetes children in other
        namespaces or at cluster scope are pruned by label first (nothing new starts using what
        is being deleted); which kinds to search comes from the render and the status, and from
        every managed kind when neither is known. Returns what is still being deleted ([] = done).
        """
        owner = owner_of(body)
        unfinished: list[str] = []
        with self.owner_lock(owner.uid):
            rendered, policy = render_for_deletion(intent_kind, body, compositions, self.revisions(), kube=self.kube)
            kinds = _unowned_kinds(owner, rendered, body.get("status") or {})
            if kinds:
                prune(self.kube, owner, set(), kinds, only_unowned=True)
            for resource in reversed(rendered):
                if resource.provider == KUBERNETES:
                    continue
                outcome = providers.get(resource.provider).delete(resource, owner, policy)
                if not outcome.done:
                    unfinished.append(f"{resource.name}: {outcome.message}")
                    break
        return unfinished


# --------------------------------------------------------------------------- steps


def namespace_labels(namespace: str | None, *, kube: KubePort) -> dict[str, str]:
    if not namespace:
        return {}
    live = kube.get("v1", "Namespace", namespace)
    return dict(((live or {}).get("metadata") or {}).get("labels") or {})


def generated_secret_name(owner: Owner) -> str:
    return derived_name(owner.name, GENERATED_SUFFIX)


def ensure_generated(kube: KubePort, composition: Mapping[str, Any], owner: Owner) -> dict[str, str]:
    """Values of the composition's generatedSecrets, made once and kept in `<name>-paved-generated`.

    Created with POST (never overwritten); a name declared later is added with a
    resourceVersion-guarded merge patch, so two racing reconciles cannot both win.
    """
    if not declared_secrets(composition):
        return {}
    name = generated_secret_name(owner)
    for _attempt in range(3):
        live = kube.get("v1", "Secret", name, owner.namespace)
        existing = _decode(live)
        values = generate_missing(composition, existing)
        if live is None:
            body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": name}, "data": _encode(values)}
            try:
                kube.create(body, owner)
                return values
            except ApiError as error:
                if not error.already_exists:
                    raise
            continue  # a concurrent reconcile created it first: read theirs
        missing = {key: value for key, value in values.items() if key not in existing}
        if not missing:
            return values
        try:  # resourceVersion-guarded: a concurrent writer makes this fail with 409, then re-read
            kube.merge_patch(live, {"data": _encode(missing)})
            return values
        except ApiError as error:
            if error.status != 409:
                raise
    raise ProviderError(f"Secret {owner.namespace}/{name} keeps changing; will retry", retryable=True)


def _decode(secret: Mapping[str, Any] | None) -> dict[str, str]:
    data = (secret or {}).get("data") or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def _encode(values: Mapping[str, str]) -> dict[str, str]:
    return {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}


def _render_error(error: RenderError, *, selecting: bool) -> ComposeError:
    reason = REASON_NO_COMPOSITION if selecting else REASON_RENDER_FAILED
    message = error.user_message if not error.location else f"{error.user_message} ({error.location})"
    return ComposeError(reason, message, field=error.field or error.variable)


def _spec_error(error: SpecError) -> ComposeError:
    first = error.problems[0] if error.problems else ""
    return ComposeError(REASON_INVALID_SPEC, "; ".join(error.problems), field=first.split(":", 1)[0] or None)


def _provider_error(error: ProviderError, resource: RenderedResource) -> ComposeError:
    message = f"resource {resource.name!r} ({resource.provider}): {error}"
    return ComposeError(REASON_PROVIDER_ERROR, message, field=error.field, retryable=error.retryable)



def _apply_passes(
    result: ComposeResult,
    rendered: RenderResult,
    owner: Owner,
    *,
    observe_first: bool,
    rerender: Callable[[dict[str, dict[str, Any]]], RenderResult],
) -> None:
    """Apply every ready-to-apply resource, re-rendering with new outputs until no progress."""
    outputs: dict[str, dict[str, Any]] = {}
    done: dict[str, dict[str, Any]] = {}  # name -> body as last applied/observed
    states: dict[str, ResourceState] = {}
    for _pass in range(MAX_PASSES):
        progressed = False
        for resource in rendered.resources:
            if resource.pending or done.get(resource.name) == resource.body:
                continue
            try:
                state = _reconcile_resource(resource, owner, observe_first=observe_first)
            except ProviderError as error:
                result.error = _provider_error(error, resource)
                break
            states[resource.name] = state
            done[resource.name] = resource.body
            outputs[resource.name] = state.observation.outputs
            progressed = True
        if result.error is not None or not progressed:
            break
        if not any(resource.pending for resource in rendered.resources):
            break
        rendered = rerender(outputs)
    result.states = [states[r.name] for r in rendered.resources if r.name in states]
    result.pending = [r for r in rendered.resources if r.name not in states]


def _reconcile_resource(resource: RenderedResource, owner: Owner, *, observe_first: bool) -> ResourceState:
    """Observe-then-apply (idle path) or apply at once (the desired state changed)."""
    provider = providers.get(resource.provider)
    if observe_first:
        observation = provider.observe(resource, owner)
        if observation.exists and not observation.drift:
            return ResourceState(resource, observation)
        corrected = observation.drift if observation.exists else ["missing"]
        return ResourceState(resource, provider.apply(resource, owner), corrected=list(corrected), written=True)
    return ResourceState(resource, provider.apply(resource, owner), written=True)


def _prune(kube: KubePort, result: ComposeResult, owner: Owner, previous: Mapping[str, Any], *, generated_secret: bool) -> None:
    """Delete Kubernetes children that the previous render had and this one does not."""
    keep = {kube_apply.key_of(s.resource.body) for s in result.states if s.resource.provider == KUBERNETES}
    if generated_secret:
        keep.add(kube_apply.ObjectKey("v1", "Secret", owner.namespace or "", generated_secret_name(owner)))
    kinds = {(key.api_version, key.kind) for key in keep}
    for entry in previous.get("resources") or []:
        if entry.get("provider") == KUBERNETES:
            kind = str(entry.get("externalId", "")).split("/", 1)[0]
            if kind in kube_apply.MANAGED_KINDS:
                kinds.add((kube_apply.MANAGED_KINDS[kind], kind))
    try:
        result.pruned = [str(key) for key in prune(kube, owner, keep, kinds)]
    except ApiError as error:
        raise ProviderError(f"pruning resources no longer rendered: {error.message}", retryable=True) from None


# --------------------------------------------------------------------------- status


def build_status(intent_kind: IntentKind, body: Mapping[str, Any], result: ComposeResult) -> dict[str, Any]:
    """The whole new status: previous fields kept, composed fields and conditions replaced.

    On InvalidSpec/NoComposition/RenderFailed nothing was applied, so what the previous
    generation made stays live and the status keeps describing it (resources, grants).
    """
    old = dict(body.get("status") or {})
    status = dict(old)
    status["observedGeneration"] = result.generation
    if result.composition is not None:  # also on RenderFailed: a fix to this composition re-renders the intent
        status["composition"] = result.composition
    if result.composition is not None and result.revision is not None:  # also on RenderFailed: the rollout counts it failing
        status["compositionRevision"] = result.revision
    applied_anything = result.error is None or result.error.reason == REASON_PROVIDER_ERROR
    if applied_anything and result.composition is not None:
        status["renderHash"] = result.render_hash
        not_applied = "not applied: an earlier resource failed" if result.error else "waiting for outputs of earlier resources"
        status["resources"] = [state.status_entry() for state in result.states] + [
            {"name": resource.name, "provider": resource.provider, "ready": False, "message": not_applied}
            for resource in result.pending
        ]
    if applied_anything and intent_kind.status_extras is not None:
        status.update(intent_kind.status_extras(body, result, old))
    ready, synced = _conditions(result)
    return kube_status.with_conditions(status, [ready, synced], result.generation)


def _conditions(result: ComposeResult) -> tuple[kube_status.ConditionSpec, kube_status.ConditionSpec]:
    if result.error is not None:
        error = result.error
        return (READY, False, error.reason, error.message), (SYNCED, False, error.reason, error.message)
    synced = (SYNCED, True, REASON_APPLIED, f"rendered through composition {result.composition}")
    if not result.ready:
        waiting = ", ".join(result.waiting_for())
        details = "; ".join(f"{s.resource.name}: {s.observation.message}" for s in result.states if not s.ready and s.observation.message)
        message = f"waiting for {waiting}" + (f" ({details})" if details else "")
        return (READY, False, REASON_WAITING, message), synced
    count = len(result.states)
    return (READY, True, REASON_READY, f"{count} resource{'s' if count != 1 else ''} ready"), synced



def _report(kube: KubePort, owner: Owner, result: ComposeResult, changed: Collection[str], trigger: str) -> None:
    """Log and post Events for transitions only (names and fields, never values)."""
    where = f"{owner.kind} {owner.namespace}/{owner.name}"
    if result.corrected:
        message = "restored " + "; ".join(result.corrected)
        log.info("%s: %s (trigger: %s)", where, message, trigger)
        kube.event(owner, "DriftCorrected", message)
    if result.pruned:
        message = "removed resources no longer rendered: " + ", ".join(result.pruned)
        log.info("%s: %s", where, message)
        kube.event(owner, "Pruned", message)
    if CONDITIONS not in changed:
        return
    if result.error is not None:
        log.warning("%s: %s: %s", where, result.error.reason, result.error.message)
        kube.event(owner, result.error.reason, result.error.message, "Warning")
    elif result.ready:
        log.info("%s: ready through composition %s", where, result.composition)
        kube.event(owner, REASON_READY, f"{len(result.states)} resources ready through composition {result.composition}")


# --------------------------------------------------------------------------- deletion



def render_for_deletion(
    intent_kind: IntentKind, body: Mapping[str, Any], compositions: Sequence[Mapping[str, Any]],
    revisions: Mapping[str, Mapping[str, Any]] | None = None, *, kube: KubePort,
) -> tuple[tuple[RenderedResource, ...], str]:
    """Everything the intent renders (no outputs, no generated values; with the revision it
    is on when `revisions` are known) and its deletion policy; nothing and "Delete" when it no
    longer renders (only Kubernetes leftovers are then pruned)."""
    owner = owner_of(body)
    try:
        spec = intent_kind.parse_spec(body)
    except SpecError as error:
        problem: Exception = error
    else:
        rendering = render_intent(body, compositions, spec=spec, namespace_labels=namespace_labels(owner.namespace, kube=kube),
                                  allowed=everything_allowed("(deletion)"), revisions=revisions)
        if rendering.error is None:
            return rendering.resources, intent_kind.deletion_policy(spec)
        problem = rendering.error
    log.warning("%s %s/%s: cannot render for deletion (%s); pruning Kubernetes leftovers only",
                owner.kind, owner.namespace, owner.name, problem)
    return (), "Delete"


def _unowned_kinds(owner: Owner, rendered: Sequence[RenderedResource], status: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(apiVersion, kind) of children that cannot carry an ownerReference to `owner`."""
    if not rendered and not status.get("resources"):
        return {(api_version, kind) for kind, api_version in kube_apply.MANAGED_KINDS.items()}  # nothing known: search all
    kinds = set()
    for resource in rendered:
        metadata = resource.body.get("metadata") or {}
        if resource.provider == KUBERNETES and metadata.get("namespace") != owner.namespace:
            kinds.add((resource.body.get("apiVersion", ""), resource.body.get("kind", "")))
    for entry in status.get("resources") or []:
        parts = str(entry.get("externalId", "")).split("/")
        if entry.get("provider") == KUBERNETES and parts[0] in kube_apply.MANAGED_KINDS and (len(parts) != 3 or parts[1] != owner.namespace):
            kinds.add((kube_apply.MANAGED_KINDS[parts[0]], parts[0]))
    return kinds
