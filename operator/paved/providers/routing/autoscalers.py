"""The copies' HorizontalPodAutoscalers, derived from the user's (spec.autoscalerRef).

Paved reads the user's HPA (autoscaling/v2) and never writes it; it applies one HPA per copy,
`<target>-stable` and `<target>-canary`, aimed at that copy with the user's metrics and
behaviour and the bounds the state machine asks for (paved.rollout.autoscaling). They are
owned by the rollout like the copies, so the cluster removes them with it; a rollout that
drops spec.autoscalerRef has them deleted (`RemoveAutoscalers`).

Each derived HPA notes the revision of the user's HPA it was made from (an annotation), so a
read of it tells the state machine whether the cluster has what it asked for.

Pure builders (`autoscaler_problem`, `autoscaler_state`, `derived_autoscaler`,
`derived_state`) are separate from `Autoscalers`, which reads and sends.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from paved.kube.apply import is_owned_by
from paved.kube.port import ApiKube, KubePort
from paved.providers.routing import CANARY, STABLE, RolloutContext
from paved.providers.routing.workloads import role_labels, spec_digest
from paved.rollout.observation import AutoscalerState

Json = dict[str, Any]
API_VERSION, KIND = "autoscaling/v2", "HorizontalPodAutoscaler"
FIELD = "spec.autoscalerRef.name"
DERIVED_FROM_ANNOTATION = "paved.dev/autoscaler-revision"  # the user's HPA's revision a copy's HPA was made from


def autoscaler_problem(context: RolloutContext, name: str, hpa: Mapping[str, Any] | None) -> str | None:
    """Why the user's HPA cannot be the model of the copies' (None when it can). Pure."""
    if hpa is None:
        return f"HorizontalPodAutoscaler {context.namespace}/{name} not found; create it or fix the name"
    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    if ref.get("kind") != "Deployment" or ref.get("name") != context.target:
        return (f"HorizontalPodAutoscaler {name} scales {ref.get('kind')} {ref.get('name')}, not the target "
                f"Deployment {context.target}")
    return None


def autoscaler_state(hpa: Mapping[str, Any]) -> AutoscalerState:
    """The user's HPA as the state machine sees it: its bounds and a hash of its spec. Pure."""
    spec = hpa.get("spec") or {}
    return AutoscalerState(min_replicas=int(spec.get("minReplicas") or 1), max_replicas=int(spec.get("maxReplicas") or 1),
                           revision=spec_digest(spec))


def derived_autoscaler(context: RolloutContext, role: str, hpa: Mapping[str, Any], min_replicas: int,
                       max_replicas: int) -> Json:
    """The `<target>-<role>` HPA: the user's spec aimed at the `role` copy, within the bounds. Pure."""
    spec = copy.deepcopy(dict(hpa.get("spec") or {}))
    spec["scaleTargetRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": context.deployment_name(role)}
    spec["minReplicas"], spec["maxReplicas"] = min_replicas, max_replicas
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": context.deployment_name(role), "namespace": context.namespace,
                     "labels": role_labels(context, role),
                     "annotations": {DERIVED_FROM_ANNOTATION: autoscaler_state(hpa).revision}},
        "spec": spec,
    }


def derived_state(hpa: Mapping[str, Any]) -> AutoscalerState:
    """A copy's HPA as read: its bounds and the revision of the user's HPA it was made from. Pure."""
    spec = hpa.get("spec") or {}
    annotations = (hpa.get("metadata") or {}).get("annotations") or {}
    return AutoscalerState(min_replicas=int(spec.get("minReplicas") or 1), max_replicas=int(spec.get("maxReplicas") or 1),
                           revision=str(annotations.get(DERIVED_FROM_ANNOTATION) or ""))


def autoscalers_for(spec: Mapping[str, Any], context: RolloutContext, kube: KubePort | None = None) -> Autoscalers:
    """The rollout's Autoscalers, of the HPA spec.autoscalerRef names (name None without one)."""
    name = (spec.get("autoscalerRef") or {}).get("name")
    return Autoscalers(context, str(name) if name else None, kube)


class Autoscalers:
    """Reads the user's HPA (once per tick; none without spec.autoscalerRef) and the copies'
    HPAs, and applies or removes the latter."""

    def __init__(self, context: RolloutContext, name: str | None, kube: KubePort | None = None) -> None:
        self.context, self.name = context, name
        self.kube = kube or ApiKube()
        self._user: tuple[Json | None] | None = None  # (the read,) once read: absence is an answer too

    def user(self) -> Json | None:
        if self.name is None:
            return None
        if self._user is None:
            self._user = (self.kube.get(API_VERSION, KIND, self.name, self.context.namespace),)
        return self._user[0]

    def problem(self) -> str | None:
        return autoscaler_problem(self.context, self.name, self.user()) if self.name is not None else None

    def observe(self) -> AutoscalerState | None:
        user = self.user()
        return autoscaler_state(user) if user is not None and self.problem() is None else None

    def copies(self) -> dict[str, AutoscalerState]:
        """The copies' HPAs as they are, by role (a role missing: it has none of this rollout's)."""
        return {role: derived_state(hpa) for role, hpa in self._copies().items()}

    def remove(self) -> None:
        """Delete the copies' HPAs (that incarnation only; gone already is fine)."""
        for hpa in self._copies().values():
            metadata = hpa["metadata"]
            self.kube.delete(API_VERSION, KIND, metadata["name"], self.context.namespace, uid=metadata["uid"])

    def _copies(self) -> dict[str, Json]:
        """The `<target>-<role>` HPAs this rollout owns (a namesake of someone else's is not one)."""
        found = {role: self.kube.get(API_VERSION, KIND, self.context.deployment_name(role), self.context.namespace)
                 for role in (STABLE, CANARY)}
        return {role: hpa for role, hpa in found.items() if hpa is not None and is_owned_by(hpa, self.context.owner)}

    def apply(self, role: str, min_replicas: int, max_replicas: int) -> None:
        user = self.user()
        if user is None:
            return  # gone since the read: the next tick refuses the rollout
        self.kube.apply(derived_autoscaler(self.context, role, user, min_replicas, max_replicas), self.context.owner)
