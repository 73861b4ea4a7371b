"""The copies' HorizontalPodAutoscalers, derived from the user's (spec.autoscalerRef).

Paved reads the user's HPA (autoscaling/v2) and never writes it; it applies one HPA per copy,
`<target>-stable` and `<target>-canary`, aimed at that copy with the user's metrics and
behaviour and the bounds the state machine asks for (paved.rollout.autoscaling). They are
owned by the rollout like the copies, so the cluster removes them with it.

Pure builders (`autoscaler_problem`, `autoscaler_state`, `derived_autoscaler`) are separate
from `Autoscalers`, which reads and sends.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from paved.providers.routing import ROLE_LABEL, ROLLOUT_LABEL, RolloutContext
from paved.kube.port import ApiKube, KubePort
from paved.rollout.observation import AutoscalerState

Json = dict[str, Any]
API_VERSION, KIND = "autoscaling/v2", "HorizontalPodAutoscaler"
FIELD = "spec.autoscalerRef.name"


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
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return AutoscalerState(min_replicas=int(spec.get("minReplicas") or 1), max_replicas=int(spec.get("maxReplicas") or 1),
                           revision=hashlib.sha256(text.encode()).hexdigest()[:10])


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
                     "labels": {ROLLOUT_LABEL: context.name, ROLE_LABEL: role}},
        "spec": spec,
    }


def autoscalers_for(spec: Mapping[str, Any], context: RolloutContext, kube: KubePort | None = None) -> Autoscalers | None:
    """The rollout's Autoscalers when spec.autoscalerRef names one, else None."""
    name = (spec.get("autoscalerRef") or {}).get("name")
    return Autoscalers(context, str(name), kube) if name else None


class Autoscalers:
    """Reads the user's HPA (once per tick) and applies the copies' HPAs."""

    def __init__(self, context: RolloutContext, name: str, kube: KubePort | None = None) -> None:
        self.context, self.name = context, name
        self.kube = kube or ApiKube()
        self._user: tuple[Json | None] | None = None  # (the read,) once read: absence is an answer too

    def user(self) -> Json | None:
        if self._user is None:
            self._user = (self.kube.get(API_VERSION, KIND, self.name, self.context.namespace),)
        return self._user[0]

    def problem(self) -> str | None:
        return autoscaler_problem(self.context, self.name, self.user())

    def observe(self) -> AutoscalerState | None:
        user = self.user()
        return autoscaler_state(user) if user is not None and self.problem() is None else None

    def apply(self, role: str, min_replicas: int, max_replicas: int) -> None:
        user = self.user()
        if user is None:
            return  # gone since the read: the next tick refuses the rollout
        self.kube.apply(derived_autoscaler(self.context, role, user, min_replicas, max_replicas), self.context.owner)
