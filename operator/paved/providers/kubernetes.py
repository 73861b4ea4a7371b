"""The `kubernetes` provider: composed Kubernetes objects, applied with server-side apply.

observe = GET + drift check + readiness of the common kinds; apply = SSA through
paved.kube.apply (labels, ownerReference); delete = DELETE; all through a KubePort
(paved.kube.port: ApiKube unless a test hands it a FakeKube). Outputs are identity and
addressing facts only (name, namespace, uid, a Service's host), never Secret data.

Children that Kubernetes does not let the intent own (another namespace, cluster scope)
are applied with allow_unowned=True: they carry the owner label and annotation, and the
intent's finalizer prunes them (see paved.engines.compose.ComposeEngine.finalize).
"""

from __future__ import annotations

from typing import Any, Mapping

from paved import GROUP
from paved.api.common import READY, get_condition
from paved.kube import apply as kube_apply
from paved.kube.client import ApiError
from paved.kube.port import ApiKube, KubePort
from paved.providers.base import DeletionResult, Observation, Owner, ProviderError
from paved.render.types import RenderedResource

NAME = "kubernetes"

# API statuses that say the body itself is wrong (schema, immutable field, forbidden by RBAC
# or admission): retrying the same body cannot help, the composition or intent must change.
_PERMANENT_STATUSES = frozenset({400, 403, 404, 405, 415, 422})


def external_id(body: Mapping[str, Any]) -> str:
    """`Kind/namespace/name` (or `Kind/name` when cluster-scoped), as shown in intent status."""
    return str(kube_apply.key_of(body))


def readiness(live: Mapping[str, Any]) -> tuple[bool, str]:
    """(ready, why not) for a live object: workloads must be rolled out, Paved's own kinds Ready,
    anything else exists."""
    kind = live.get("kind")
    spec, status = live.get("spec") or {}, live.get("status") or {}
    generation = (live.get("metadata") or {}).get("generation")
    if kind in ("Deployment", "StatefulSet"):
        wanted = spec.get("replicas", 1)
        observed = status.get("observedGeneration")
        if generation is not None and (observed is None or observed < generation):
            return False, f"{kind} spec change not yet observed by its controller"
        ready_field = "availableReplicas" if kind == "Deployment" else "readyReplicas"
        have = status.get(ready_field) or 0
        updated = status.get("updatedReplicas") or 0
        if have < wanted or updated < wanted:
            return False, f"{have}/{wanted} replicas {ready_field.removesuffix('Replicas')}, {updated}/{wanted} updated"
    if str(live.get("apiVersion", "")).startswith(f"{GROUP}/"):
        # A Paved object (an ExternalSecretRef a database composes): ready when its own Ready
        # condition says so for its current generation; its message tells why not.
        ready = get_condition(status.get("conditions"), READY)
        if ready is None or (generation is not None and ready.get("observedGeneration") not in (None, generation)):
            return False, f"{kind} not yet reconciled"
        if ready.get("status") != "True":
            return False, f"{kind} not ready: {ready.get('reason', '')}: {ready.get('message', '')}"
    return True, ""


def outputs_of(live: Mapping[str, Any]) -> dict[str, Any]:
    """Facts later templates may read; never the data of a Secret or ConfigMap."""
    metadata = live.get("metadata") or {}
    outputs: dict[str, Any] = {
        "apiVersion": live.get("apiVersion"),
        "kind": live.get("kind"),
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "uid": metadata.get("uid"),
    }
    if live.get("kind") == "Service":
        spec = live.get("spec") or {}
        outputs["clusterIP"] = spec.get("clusterIP")
        outputs["host"] = f"{metadata.get('name')}.{metadata.get('namespace')}.svc"
        outputs["ports"] = {str(port.get("name") or port.get("port")): port.get("port") for port in spec.get("ports") or []}
    return outputs


def _provider_error(error: ApiError, action: str, body: Mapping[str, Any]) -> ProviderError:
    retryable = error.status not in _PERMANENT_STATUSES
    return ProviderError(f"{action} {external_id(body)}: {error.status} {error.reason}: {error.message}", retryable=retryable)


class KubernetesProvider:
    """ResourceProvider over a KubePort."""

    name = NAME

    def __init__(self, kube: KubePort | None = None) -> None:
        self.kube: KubePort = kube or ApiKube()

    def observe(self, resource: RenderedResource, owner: Owner) -> Observation:
        body = resource.body
        metadata = body.get("metadata") or {}
        try:
            namespaced = self.kube.namespaced(body["apiVersion"], body["kind"])
            live = self.kube.get(body["apiVersion"], body["kind"], metadata["name"], metadata.get("namespace") or owner.namespace)
        except ApiError as error:
            raise _provider_error(error, "observe", body) from None
        if live is None:
            return Observation(exists=False, external_id=external_id(body), message="does not exist")
        desired = kube_apply.decorate(body, owner, namespaced=namespaced, allow_unowned=True)
        return self._observation(live, drift=kube_apply.drift(desired, live))

    def apply(self, resource: RenderedResource, owner: Owner) -> Observation:
        try:
            live = self.kube.apply(resource.body, owner, allow_unowned=True)
        except ApiError as error:
            raise _provider_error(error, "apply", resource.body) from None
        observation = self._observation(live, drift=[])
        observation.changed = True
        return observation

    def delete(self, resource: RenderedResource, owner: Owner, policy: str = "Delete") -> DeletionResult:
        body = resource.body
        metadata = body.get("metadata") or {}
        if policy == "Retain":
            return DeletionResult(done=True, message=f"{external_id(body)} retained")
        try:
            live = self.kube.get(body["apiVersion"], body["kind"], metadata["name"], metadata.get("namespace") or owner.namespace)
            if live is None or not kube_apply.is_owned_by(live, owner):
                return DeletionResult(done=True, message=f"{external_id(body)} not present")
            self.kube.delete(body["apiVersion"], body["kind"], metadata["name"], metadata.get("namespace"), uid=live["metadata"]["uid"])
        except ApiError as error:
            raise _provider_error(error, "delete", body) from None
        return DeletionResult(done=True, message=f"{external_id(body)} deleted")

    @staticmethod
    def _observation(live: Mapping[str, Any], *, drift: list[str]) -> Observation:
        ready, why = readiness(live)
        return Observation(
            exists=True,
            ready=ready,
            outputs=outputs_of(live),
            message=why,
            external_id=external_id(live),
            drift=drift,
        )

