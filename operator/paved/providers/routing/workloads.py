"""The stable and canary workloads of a rollout, and the Services in front of them.

Model (see docs/rollout.md): the user's Deployment (the *target*) stays native and is the
source of the pod template; Paved writes nothing of it but, when spec.originalScaleDown asks,
its spec.replicas (and a note of the user's count), under its own field manager
(`scale_original`). Paved creates and owns

    Deployment <target>-stable    the target's pod template at the stable revision
    Deployment <target>-canary    the target's pod template at the revision being rolled out
    Service    <service>-stable   the user's Service's ports, selecting the stable pods
    Service    <service>-canary   ... selecting the canary pods

Each copy's pods carry the target template's labels plus `paved.dev/rollout: <rollout>` and
`paved.dev/role: stable|canary`; the copies' selectors and the Paved Services select on
both, so the target's own pods never receive routed traffic and the two copies never
overlap. Everything is applied with paved.kube.apply (field manager `paved`, managed-by
label, ownerReference to the rollout: the cluster removes it with the rollout).

A *revision* is a short hash of the target's pod template (`template_revision`), computed
by Paved so it is known the moment the user changes the template (no wait for the
Deployment controller). The template of an older revision is found on the copies (their
`paved.dev/revision` annotation) or, failing that, on the target's own ReplicaSets.

Pure builders (`copy_deployment`, `copy_service`, `workload_state`, ...) are separate from
`Workloads`, which sends them (crate-operator's habit).
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from paved.kube.port import ApiKube, KubePort
from paved.providers.routing import (
    CANARY, ORIGINAL_REPLICAS_ANNOTATION, REVISION_ANNOTATION, ROLE_LABEL, ROLLOUT_LABEL, SCALE_FIELD_MANAGER, STABLE,
    RolloutContext, RouterError,
)
from paved.rollout.observation import TargetState, WorkloadState

Json = dict[str, Any]
POD_TEMPLATE_HASH = "pod-template-hash"
REVISION_HISTORY = 2


class WorkloadError(RouterError):
    """A stable/canary workload could not be read or written."""


# --- pure -----------------------------------------------------------------------------------


def template_revision(template: Mapping[str, Any]) -> str:
    """A short, stable hash of a pod template (the `pod-template-hash` label is ignored, so a
    ReplicaSet's template hashes like the Deployment template it came from)."""
    clean = copy.deepcopy(dict(template))
    labels = (clean.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return spec_digest(clean)


def spec_digest(value: Any) -> str:
    """A short hash of a JSON value that key order does not change: the revision of a pod
    template, or of an HPA's spec."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def target_state(target: Mapping[str, Any]) -> TargetState:
    spec = target.get("spec") or {}
    replicas = spec.get("replicas")
    return TargetState(revision=template_revision(spec.get("template") or {}),
                       replicas=1 if replicas is None else int(replicas), remembered=remembered_replicas(target))


def remembered_replicas(target: Mapping[str, Any]) -> int | None:
    """The user's count Paved noted when it scaled the target down, while Paved's scale field
    manager still owns spec.replicas (whoever scaled it since set the count that counts)."""
    metadata = target.get("metadata") or {}
    note = str((metadata.get("annotations") or {}).get(ORIGINAL_REPLICAS_ANNOTATION) or "")
    owns = any(entry.get("manager") == SCALE_FIELD_MANAGER and entry.get("operation") == "Apply"
               and "f:replicas" in (((entry.get("fieldsV1") or {}).get("f:spec")) or {})
               for entry in metadata.get("managedFields") or [])
    return int(note) if owns and note.isdigit() else None


def original_scale(context: RolloutContext, replicas: int, remember: int | None) -> Json:
    """The apply body of the user's Deployment's scale: spec.replicas and the note of the
    user's count (absent: the note goes, the field is handed back at the user's count). Pure."""
    metadata: Json = {"name": context.target, "namespace": context.namespace}
    if remember is not None:
        metadata["annotations"] = {ORIGINAL_REPLICAS_ANNOTATION: str(remember)}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": {"replicas": replicas}}


def role_labels(context: RolloutContext, role: str) -> dict[str, str]:
    return {ROLLOUT_LABEL: context.label, ROLE_LABEL: role}


def copy_deployment(context: RolloutContext, role: str, target: Mapping[str, Any], template: Mapping[str, Any],
                    revision: str, replicas: int) -> Json:
    """The desired `<target>-<role>` Deployment: `template` (a pod template of the target) at
    `replicas`, labelled and selected by role. Pure."""
    target_spec = target.get("spec") or {}
    extra = role_labels(context, role)
    pod = copy.deepcopy(dict(template))
    metadata = pod.setdefault("metadata", {})
    labels = dict(metadata.get("labels") or {})
    labels.pop(POD_TEMPLATE_HASH, None)
    metadata["labels"] = {**labels, **extra}
    selector = copy.deepcopy(dict(target_spec.get("selector") or {}))
    selector["matchLabels"] = {**dict(selector.get("matchLabels") or {}), **extra}
    spec: Json = {
        "replicas": max(int(replicas), 0),
        "selector": selector,
        "template": pod,
        "revisionHistoryLimit": REVISION_HISTORY,
    }
    for field in ("strategy", "minReadySeconds", "progressDeadlineSeconds"):
        if field in target_spec:
            spec[field] = copy.deepcopy(target_spec[field])
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": context.deployment_name(role),
            "namespace": context.namespace,
            "labels": dict(extra),
            "annotations": {REVISION_ANNOTATION: revision},
        },
        "spec": spec,
    }


def copy_service(context: RolloutContext, role: str, service: Mapping[str, Any]) -> Json:
    """The desired `<service>-<role>` Service: the user's Service's ports, selecting only the
    `role` pods of this rollout. Pure."""
    spec = service.get("spec") or {}
    ports = []
    for port in spec.get("ports") or []:
        ports.append({key: port[key] for key in ("name", "port", "targetPort", "protocol", "appProtocol") if key in port})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": context.service_name(role), "namespace": context.namespace,
                     "labels": role_labels(context, role)},
        "spec": {
            "type": "ClusterIP",
            "selector": {**dict(spec.get("selector") or {}), **role_labels(context, role)},
            "ports": ports,
        },
    }


@dataclass(frozen=True)
class ServiceProblem:
    """Why the user's Service cannot front the rollout, and the field of spec.service to fix."""

    field: str
    message: str


SERVICE_NAME, SERVICE_PORT = "spec.service.name", "spec.service.port"


def service_missing(context: RolloutContext) -> ServiceProblem:
    return ServiceProblem(SERVICE_NAME, f"Service {context.namespace}/{context.service} not found; create it or fix the name")


def service_problem(context: RolloutContext, service: Mapping[str, Any] | None) -> ServiceProblem | None:
    """Why the user's Service cannot front the rollout (None when it can). Pure."""
    if service is None:
        return service_missing(context)
    spec = service.get("spec") or {}
    if not spec.get("selector"):
        return ServiceProblem(SERVICE_NAME, f"Service {context.service} has no selector; "
                                            "Paved derives the stable/canary Services from it")
    if not any(port.get("port") == context.port for port in spec.get("ports") or []):
        known = ", ".join(str(port.get("port")) for port in spec.get("ports") or []) or "none"
        return ServiceProblem(SERVICE_PORT, f"Service {context.service} has no port {context.port} (it has {known})")
    for role in (STABLE, CANARY):
        if len(context.service_name(role)) > 63:
            return ServiceProblem(SERVICE_NAME, f"{context.service_name(role)!r} would be longer than 63 characters; "
                                                "use a shorter Service name")
    return None


def workload_state(deployment: Mapping[str, Any] | None) -> WorkloadState | None:
    """What the machine needs to know of a copy; `ready` counts only ready pods of the
    template the Deployment now declares (a lower bound while old pods are still around). Pure."""
    if deployment is None:
        return None
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    revision = (metadata.get("annotations") or {}).get(REVISION_ANNOTATION)
    if int(status.get("observedGeneration") or 0) < int(metadata.get("generation") or 0):
        return WorkloadState(revision, desired, 0)
    total = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    old = max(0, total - updated)
    return WorkloadState(revision, desired, max(0, min(updated, ready - old)))


def revision_of(deployment: Mapping[str, Any] | None) -> str | None:
    revision = (((deployment or {}).get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION)
    return str(revision) if revision is not None else None


# --- I/O ------------------------------------------------------------------------------------


_ABSENT: Json = {}


class DeploymentCache:
    """Deployments as last seen by a watch or written by Paved: the newest resourceVersion wins.

    Fed by the handler's Deployment watch (`offer`, `gone`) and by Paved's own writes (the
    answer of every apply), so an entry is never older than Paved's last write to that
    Deployment, which is what the state machine's drift logic needs from a read. A
    Deployment known to be absent is remembered as such until an event or a write says
    otherwise. Thread-safe.
    """

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Json] = {}
        self._lock = threading.Lock()

    def lookup(self, namespace: str, name: str) -> tuple[bool, Json | None]:
        """(known, body): body None when known to be absent."""
        with self._lock:
            item = self._items.get((namespace, name))
        if item is None:
            return False, None
        return True, (None if item is _ABSENT else item)

    def offer(self, body: Mapping[str, Any]) -> None:
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        with self._lock:
            current = self._items.get(key)
            if current is None or current is _ABSENT or _newer(metadata.get("resourceVersion"),
                                                               (current.get("metadata") or {}).get("resourceVersion")):
                self._items[key] = dict(body)

    def absent(self, namespace: str, name: str) -> None:
        with self._lock:
            self._items[(namespace, name)] = _ABSENT

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._items.pop((namespace, name), None)


def _newer(candidate: Any, current: Any) -> bool:
    """Whether resourceVersion `candidate` is newer than `current` (etcd's are integers;
    anything else is taken as newer, the watch delivers in order)."""
    if str(candidate).isdigit() and str(current).isdigit():
        return int(candidate) > int(current)
    return True


class Workloads:
    """Reads the target and the copies; executes EnsureCanary / Scale* / PromoteStableTemplate.

    Reads are cached for one tick (`refresh()` forgets them): the handler observes, decides,
    then acts, and the actions reuse what was read instead of reading again. With a
    `DeploymentCache` (fed by a watch) Deployments are read from it, and from the API server
    only when it does not know them.
    """

    def __init__(self, context: RolloutContext, kube: KubePort | None = None,
                 deployments: DeploymentCache | None = None) -> None:
        self.context = context
        self.kube = kube or ApiKube()
        self.deployments = deployments
        self._cache: dict[str, Json | None] = {}

    def refresh(self) -> None:
        self._cache.clear()

    def _get(self, key: str, kind: str, name: str) -> Json | None:
        if key not in self._cache:
            if kind == "Deployment" and self.deployments is not None:
                known, body = self.deployments.lookup(self.context.namespace, name)
                if known:
                    self._cache[key] = body
                    return body
            api_version = "apps/v1" if kind == "Deployment" else "v1"
            body = self.kube.get(api_version, kind, name, self.context.namespace)
            if kind == "Deployment" and self.deployments is not None:
                if body is None:
                    self.deployments.absent(self.context.namespace, name)
                else:
                    self.deployments.offer(body)
            self._cache[key] = body
        return self._cache[key]

    def target(self) -> Json | None:
        return self._get("target", "Deployment", self.context.target)

    def copy(self, role: str) -> Json | None:
        return self._get(role, "Deployment", self.context.deployment_name(role))

    def user_service(self) -> Json | None:
        return self._get("service", "Service", self.context.service)

    def observe(self, role: str) -> WorkloadState | None:
        return workload_state(self.copy(role))

    # -- services ---------------------------------------------------------------------------

    def ensure_services(self) -> None:
        """Apply `<service>-stable` and `<service>-canary` (RouterError naming the field when
        the user's Service cannot be used)."""
        service = self.user_service()
        problem = service_problem(self.context, service)
        if problem:
            raise RouterError(problem.message, retryable=False, field=problem.field)
        assert service is not None  # noqa: S101
        for role in (STABLE, CANARY):
            self.kube.apply(copy_service(self.context, role, service), self.context.owner)

    # -- actions ----------------------------------------------------------------------------

    def ensure_canary(self, revision: str, replicas: int) -> None:
        self._apply(CANARY, revision, replicas)

    def promote_stable(self, revision: str, replicas: int) -> None:
        """The stable copy takes the template of `revision`, at `replicas`."""
        self._apply(STABLE, revision, replicas)

    def scale_original(self, replicas: int, remember: int | None) -> None:
        """Set the user's Deployment's spec.replicas under Paved's scale field manager, noting
        the user's count next to it (`remember` None: hand the field back, drop the note)."""
        live = self.kube.apply_fields(original_scale(self.context, replicas, remember), field_manager=SCALE_FIELD_MANAGER)
        self._cache["target"] = live
        if self.deployments is not None and live:
            self.deployments.offer(live)

    def scale(self, role: str, replicas: int) -> None:
        live = self.copy(role)
        revision = revision_of(live)
        if live is None or revision is None:
            if replicas == 0:
                return  # nothing to scale down
            raise WorkloadError(f"Deployment {self.context.deployment_name(role)} does not exist yet; "
                                "it is created with a template first")
        self._apply(role, revision, replicas)

    def _apply(self, role: str, revision: str, replicas: int) -> None:
        target = self.target()
        if target is None:
            raise WorkloadError(f"Deployment {self.context.namespace}/{self.context.target} not found",
                                field="spec.targetRef.name")
        template = self.template_for(revision)
        self.apply_copy(role, copy_deployment(self.context, role, target, template, revision, replicas))

    def apply_copy(self, role: str, body: Mapping[str, Any], *, field_manager: str = "paved") -> Json:
        """Apply `body` to the `role` copy (all of it, or a few fields under another field
        manager); the answer replaces this tick's read and feeds the Deployment cache."""
        live = self.kube.apply(body, self.context.owner, field_manager=field_manager)
        self._cache[role] = live
        if self.deployments is not None and live:
            self.deployments.offer(live)
        return live

    def template_for(self, revision: str) -> Json:
        """The target's pod template at `revision`: the target's own, else a copy's, else one
        of the target's ReplicaSets (the Deployment controller keeps a few old ones)."""
        target = self.target() or {}
        template = (target.get("spec") or {}).get("template") or {}
        if template and template_revision(template) == revision:
            return template
        for role in (CANARY, STABLE):
            live = self.copy(role)
            if live is not None and revision_of(live) == revision:
                return _strip_role(self.context, (live.get("spec") or {}).get("template") or {})
        selector = ",".join(f"{k}={v}" for k, v in
                            sorted(((target.get("spec") or {}).get("selector") or {}).get("matchLabels", {}).items()))
        for replica_set in self.kube.list("apps/v1", "ReplicaSet", self.context.namespace, selector):
            candidate = (replica_set.get("spec") or {}).get("template") or {}
            if _owned_by(replica_set, target) and template_revision(candidate) == revision:
                labels = (candidate.get("metadata") or {}).get("labels") or {}
                labels.pop(POD_TEMPLATE_HASH, None)
                return candidate
        raise WorkloadError(f"the pod template of revision {revision} is gone (not on Deployment "
                            f"{self.context.target} nor on its ReplicaSets)")


def _strip_role(context: RolloutContext, template: Mapping[str, Any]) -> Json:
    """A copy's pod template without the labels Paved added (i.e. the target's template)."""
    clean = copy.deepcopy(dict(template))
    labels = (clean.get("metadata") or {}).get("labels") or {}
    for key in role_labels(context, STABLE):
        labels.pop(key, None)
    return clean


def _owned_by(child: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    uid = (owner.get("metadata") or {}).get("uid")
    return any(ref.get("uid") == uid for ref in (child.get("metadata") or {}).get("ownerReferences") or [])
