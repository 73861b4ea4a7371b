"""The DatabaseIntent engine: what is specific to databases around the composed reconcile.

What is specific to databases, in the order a reconcile meets it:

1. `spec.network.allowFrom[i].namespace` must exist before anything is made: a missing one
   is a `NamespaceNotFound` condition naming the field, no cloud call, and a bounded retry
   (the namespace may be created next).
2. The finalizer `paved.dev/database-cleanup` is put on the intent BEFORE the first cloud
   call, and only when its composition renders a resource outside Kubernetes (RDS). Added
   after the call, a deletion in between would leak the database; added to every intent,
   in-cluster databases would carry a finalizer they do not need.
3. `spec.restoreFrom` is checked before the first cloud call while the instance does not
   exist yet (the subnet group and security groups come before it): a snapshot that is
   missing, of another engine, ... is an `InvalidRestoreSource` condition naming the field,
   and nothing is created.
4. The composed reconcile (generated password, render, providers, status). A generated
   password the instance does not have (its Secret was lost and made again, a restore) is
   pushed by the aws-rds provider, which knows it from the password id tag; until it is, the
   instance is not ready and says why.
5. A cloud resource whose immutable fields differ from the intent (encryption, engine, ...)
   turns `Synced` False with reason `ImmutableFieldChanged` naming the fields; it is never
   "fixed" by deleting and recreating the database.

Cloud drift: a per-intent Kopf daemon (paved.handlers.database) calls `check_drift` every
`spec.driftCheckInterval` (default 10m): the same reconcile, which corrects mutable fields,
its status written like every reconcile's; `status.lastDriftCheck` is the drift check's own
field (its own writer, `paved-drift-check`), so a reconcile never carries or drops it.
Each wait is stretched by random jitter so intents created (or resumed) together spread out,
and is never shorter than the interval: at most one describe per resource per interval.

Deletion follows `spec.deletionPolicy` (Snapshot, Retain, Delete) through the providers, in
reverse order and each after the next is gone: the instance, then its security groups and
subnet group (Retain keeps them all). A failed cloud call keeps the finalizer and retries with
bounded exponential backoff; nothing is released on an error, and Ready says so
(DeletionFailed, written as the reconcile: once the intent is being deleted, nothing else
reconciles it).

Adoption: annotation `paved.dev/adopt-db-instance: <identifier>` asks the composition to
render that identifier plus tag `paved.dev/adopted: "true"`, which is the aws-rds provider's
explicit signal to take over an existing instance it did not create (it sets the generated
master password once, so the connection Secret works, and tags the instance as the
intent's). The signal travels in the rendered body, so every path that applies it (these
handlers, the children watch, a Composition change) sees the same decision.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from paved import KOPF_FINALIZER
from paved.api.common import READY, SYNCED, now_rfc3339, parse_duration
from paved.api.database import DatabaseIntentSpec
from paved.api.kinds import SpecError
from paved.engines.compose import (
    KUBERNETES,
    REASON_PROVIDER_ERROR,
    ComposeEngine,
    ComposeError,
    ComposeResult,
    IntentKind,
    Outcome,
    build_status,
    namespace_labels,
    owner_of,
)
from paved.kube import apply as kube
from paved.kube import events, status as kube_status
from paved.kube.client import ApiError
from paved.kube.status import CONDITIONS, StatusWriter
from paved.providers import base as providers
from paved.providers.aws import rds
from paved.providers.base import ProviderError
from paved.render import IntentRender, render_intent

log = logging.getLogger(__name__)

KIND = "DatabaseIntent"
CLEANUP_FINALIZER = "paved.dev/database-cleanup"
REASON_NAMESPACE_NOT_FOUND = "NamespaceNotFound"
REASON_IMMUTABLE = "ImmutableFieldChanged"
REASON_DELETION_FAILED = "DeletionFailed"
REASON_INVALID_RESTORE = "InvalidRestoreSource"
DRIFT_JITTER = 0.1  # each wait is interval x (1 + U(0, DRIFT_JITTER)); the first one x (1 + U(0, 1))
DEFAULT_DRIFT_INTERVAL = 600.0
MIN_DRIFT_INTERVAL = 1.0
LAST_DRIFT_CHECK = "lastDriftCheck"
DRIFT_CHECK_STATUS = StatusWriter("paved-drift-check", frozenset({LAST_DRIFT_CHECK}))

Compositions = Sequence[Mapping[str, Any]]


class IntentChanging(ProviderError):
    """The intent is being deleted or keeps changing: nothing is created now; retry shortly."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message, retryable=True)
        self.delay = delay

# --------------------------------------------------------------------------- status


def endpoint_of(result: ComposeResult) -> dict[str, Any] | None:
    """Where clients connect: the first resource that reports an address and a port
    (an RDS instance), else the first Service (the in-cluster composition)."""
    for state in result.states:
        outputs = state.observation.outputs
        if outputs.get("address") and outputs.get("port"):
            return {"host": outputs["address"], "port": int(outputs["port"])}
    for state in result.states:
        outputs = state.observation.outputs
        if outputs.get("kind") == "Service" and outputs.get("host") and outputs.get("ports"):
            return {"host": outputs["host"], "port": int(next(iter(outputs["ports"].values())))}
    return None


def database_status(body: Mapping[str, Any], result: ComposeResult, old: Mapping[str, Any]) -> dict[str, Any]:
    """endpoint and connectionSecret (once the Secret exists); deterministic for idle reconciles."""
    extras: dict[str, Any] = {}
    endpoint = endpoint_of(result)
    if endpoint is not None:
        extras["endpoint"] = endpoint
    if isinstance(result.spec, DatabaseIntentSpec):
        secret = result.spec.connection_secret_name(str(body["metadata"]["name"]))
        if any(state.observation.exists and writes_secret(state.resource.body, secret) for state in result.states):
            extras["connectionSecret"] = secret
    return extras


def writes_secret(body: Mapping[str, Any], name: str) -> bool:
    """Whether a composed Kubernetes object is the Secret `name`, or the ExternalSecretRef that
    syncs it (a password the cloud manages)."""
    if body.get("kind") == "Secret":
        return bool((body.get("metadata") or {}).get("name") == name)
    return body.get("kind") == "ExternalSecretRef" and ((body.get("spec") or {}).get("target") or {}).get("name") == name


def deletion_policy(spec: Any) -> str:
    return str(getattr(spec, "deletionPolicy", "Snapshot"))


def immutable_drift(result: ComposeResult) -> str | None:
    """A message naming every resource and field that differs but cannot be changed in place."""
    problems = [
        f"{state.resource.name} ({state.observation.external_id}): {', '.join(state.observation.immutable_drift)} "
        f"cannot be changed on the existing resource ({state.observation.message}); restore the intent's value, "
        "or create a new intent and migrate"
        for state in result.states
        if state.observation.immutable_drift
    ]
    return "; ".join(problems) or None


def with_immutable_drift(outcome: Outcome, body: Mapping[str, Any]) -> Outcome:
    """Synced=False/ImmutableFieldChanged when a resource has immutable drift (status, Event)."""
    message = immutable_drift(outcome.result)
    if message is None or outcome.result.error is not None:
        return outcome
    status = kube_status.with_conditions(outcome.status, [(SYNCED, False, REASON_IMMUTABLE, message)], outcome.result.generation)
    refined = DATABASES.outcome(outcome.result, body, status)
    if CONDITIONS in refined.changed:
        events.post_event(owner_of(body), REASON_IMMUTABLE, message, "Warning")
    return refined


# --------------------------------------------------------------------------- pre-checks


def missing_allowed_namespaces(spec: DatabaseIntentSpec) -> list[tuple[str, str]]:
    """(field path, namespace) for each allowFrom namespace that does not exist."""
    missing = []
    for index, peer in enumerate(spec.network.allowFrom):
        if kube.get("v1", "Namespace", peer.namespace) is None:
            missing.append((f"spec.network.allowFrom[{index}].namespace", peer.namespace))
    return missing


def renders_cloud_resources(rendering: IntentRender) -> bool:
    """Whether the intent renders (cleanly) to at least one resource outside Kubernetes.

    A render error means nothing will be created: no finalizer (the reconcile reports it).
    `rendering` must be the reconcile's own (DatabaseEngine.rendering: with the intent's
    allowances), or an adopting intent would look like one that creates nothing.
    """
    return any(resource.provider != KUBERNETES for resource in rendering.resources)


def instance_ready(body: Mapping[str, Any]) -> bool:
    """Whether the status says the intent's RDS instance existed and was ready at the last reconcile."""
    return any(entry.get("provider") == rds.PROVIDER and entry.get("ready")
               for entry in (body.get("status") or {}).get("resources") or [])


def has_cleanup_finalizer(body: Mapping[str, Any]) -> bool:
    return CLEANUP_FINALIZER in ((body.get("metadata") or {}).get("finalizers") or [])


def add_cleanup_finalizer(body: Mapping[str, Any]) -> None:
    """Persist the finalizer now (not through Kopf's end-of-handler patch): the cloud call follows.

    Kopf's own finalizer goes on in the same patch: Kopf runs delete handlers only for objects
    that carry it, and it adds it only after a handler finishes. An operator killed after the
    cloud call but before that, and a deletion arriving before the next leader's resume,
    would otherwise leave ours on the intent with no handler to remove it.

    A resourceVersion-guarded merge patch; on a conflict the object is re-read and the
    patch retried, so a concurrent writer's finalizers are never overwritten.
    """
    live: Mapping[str, Any] | None = body
    for _attempt in range(3):
        if live is None or live["metadata"].get("deletionTimestamp"):
            raise IntentChanging("the intent is being deleted; nothing is created", delay=1)
        if has_cleanup_finalizer(live):
            return
        present = list(live["metadata"].get("finalizers") or [])
        finalizers = present + [name for name in (CLEANUP_FINALIZER, KOPF_FINALIZER) if name not in present]
        try:
            kube.merge_patch(live, {"metadata": {"finalizers": finalizers}})
            return
        except ApiError as error:
            if error.status != 409:
                raise
        meta = live["metadata"]
        live = kube.get(live["apiVersion"], live["kind"], meta["name"], meta.get("namespace"))
    raise IntentChanging("the intent keeps changing; adding the cleanup finalizer later", delay=2)



# --------------------------------------------------------------------------- cloud drift


def drift_interval(spec: Mapping[str, Any] | None) -> float:
    """Seconds between drift checks from spec.driftCheckInterval (schema-checked; default 10m)."""
    try:
        seconds = parse_duration(str((spec or {}).get("driftCheckInterval") or "10m"), "spec.driftCheckInterval").total_seconds()
    except ValueError:
        seconds = DEFAULT_DRIFT_INTERVAL
    return max(MIN_DRIFT_INTERVAL, seconds)


def next_drift_wait(spec: Mapping[str, Any] | None, *, first: bool, uniform: Callable[[float, float], float] = random.uniform) -> float:
    """The interval stretched by jitter, never shortened. The first wait after a (re)start is
    spread over up to two intervals, so intents resumed together do not poll together."""
    return drift_interval(spec) * (1.0 + uniform(0.0, 1.0 if first else DRIFT_JITTER))


# `refine` applies the immutable-drift condition on every reconcile path (handlers, the drift
# daemon, child-drift restores, Composition re-renders), not only the handlers'.
DATABASES = IntentKind(KIND, status_extras=database_status, deletion_policy=deletion_policy, refine=with_immutable_drift,
                       not_reconciled=frozenset({LAST_DRIFT_CHECK}))


class DatabaseEngine:
    """The database kind, registered with `compose`, and its reconcile, drift check and deletion."""

    def __init__(self, compose: ComposeEngine) -> None:
        self.compose = compose
        self.kind = compose.register_kind(DATABASES)

    def _refused(self, body: Mapping[str, Any], error: ComposeError) -> Outcome:
        """An outcome for a pre-check failure: conditions only, nothing applied, nothing called."""
        result = ComposeResult(generation=(body.get("metadata") or {}).get("generation"), error=error)
        outcome = self.kind.outcome(result, body, build_status(self.kind, body, result))
        if CONDITIONS in outcome.changed:
            events.post_event(owner_of(body), error.reason, error.message, "Warning")
        return outcome

    def reconcile(self, body: Mapping[str, Any], compositions: Compositions, *, trigger: str) -> Outcome:
        """The checks of the module docstring, then the composed reconcile; writes nothing but the finalizer."""
        try:
            spec = self.kind.parse_spec(body)
        except SpecError:
            spec = None  # the composed reconcile reports InvalidSpec with every field
        if isinstance(spec, DatabaseIntentSpec):
            try:
                missing = missing_allowed_namespaces(spec)
                if missing:
                    field, namespace = missing[0]
                    message = "; ".join(f"{path}: namespace {name!r} does not exist; create it or remove the entry" for path, name in missing)
                    return self._refused(body, ComposeError(REASON_NAMESPACE_NOT_FOUND, message, field=field, retryable=True))
                refusal = self.restore_refusal(body, spec, compositions)
                if refusal is not None:
                    return self._refused(body, refusal)
                if not has_cleanup_finalizer(body) and renders_cloud_resources(self.rendering(body, spec, compositions)):
                    add_cleanup_finalizer(body)
            except ApiError as error:  # a condition and the bounded backoff of a retryable error, not Kopf's fixed 60 s
                retryable = error.transient or error.status >= 500 or error.status == 409
                return self._refused(body, ComposeError(REASON_PROVIDER_ERROR, f"reading the cluster: {error}", retryable=retryable))
        return self.compose.reconcile(self.kind, body, compositions, trigger=trigger)

    def rendering(self, body: Mapping[str, Any], spec: DatabaseIntentSpec, compositions: Compositions) -> IntentRender:
        """The intent rendered as the composed reconcile will render it (its namespace's labels,
        its allowances), for the checks that must come before the first cloud call."""
        namespace = owner_of(body).namespace
        return render_intent(body, compositions, spec=spec, namespace_labels=namespace_labels(namespace, kube=self.compose.kube),
                             allowed=self.compose.allowances(KIND, namespace), revisions=self.compose.revisions())

    def reconcile_and_write(self, body: Mapping[str, Any], compositions: Compositions, *, trigger: str) -> Outcome | None:
        """`reconcile`, and its status written (None: the intent is being deleted)."""
        return self.compose.reconcile_and_write(
            self.kind, body, lambda current: self.reconcile(current, compositions, trigger=trigger).written())

    def restore_refusal(self, body: Mapping[str, Any], spec: DatabaseIntentSpec, compositions: Compositions) -> ComposeError | None:
        """spec.restoreFrom is checked before the first cloud call (the subnet group and security
        groups come before the instance): a snapshot that does not exist, is of another engine, ...
        is a condition naming the field, and nothing is created. Only while the instance is not
        known to be ready (no call at all at rest); the provider checks again when it restores."""
        if spec.restoreFrom is None or instance_ready(body):
            return None
        owner = owner_of(body)
        try:  # an intent that does not render has no resources here: the composed reconcile reports why
            for resource in self.rendering(body, spec, compositions).resources:
                check = getattr(providers.get(resource.provider), "check_restore", None)
                if check is not None and rds.RESTORE_KEY in resource.body:
                    check(resource, owner)
        except ProviderError as error:
            return ComposeError(REASON_INVALID_RESTORE if error.field else REASON_PROVIDER_ERROR, str(error),
                                field=error.field, retryable=error.retryable)
        return None

    def check_drift(self, body: Mapping[str, Any], compositions: Compositions) -> Outcome | None:
        """One drift check: the composed reconcile (one describe per cloud resource when nothing
        changed, a modify of only the differing fields when something did), its status written
        when it changed, then lastDriftCheck (its own writer: one request per check)."""
        outcome = self.reconcile_and_write(body, compositions, trigger="drift check")
        if outcome is not None:
            DRIFT_CHECK_STATUS.write(body, {LAST_DRIFT_CHECK: now_rfc3339()})
        return outcome

    def deletion_failed(self, body: Mapping[str, Any], message: str) -> None:
        """Ready=False/DeletionFailed with `message`: the reconcile's own Ready, written as the
        reconcile (nothing else reconciles an intent being deleted)."""
        generation = (body.get("metadata") or {}).get("generation")
        try:
            self.compose.reconcile_and_write(self.kind, body, lambda current: (kube_status.with_conditions(
                current.get("status"), [(READY, False, REASON_DELETION_FAILED, message)], generation), None), while_deleting=True)
        except ApiError as error:  # the deletion is retried anyway, and says so again
            metadata = body.get("metadata") or {}
            log.warning("%s %s/%s: status not written: %s %s", KIND, metadata.get("namespace"), metadata.get("name"),
                        error.status, error.reason)

    def finalize(self, body: Mapping[str, Any], compositions: Compositions) -> list[str]:
        """Carry out spec.deletionPolicy on the cloud resources; what is still being deleted."""
        return self.compose.finalize(self.kind, body, compositions)
