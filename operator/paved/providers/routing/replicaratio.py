"""Replica-ratio router: for clusters without Gateway API.

There is no traffic splitter: the user's Service sends each connection to one of the ready
pods it selects, so the canary's share is (about) its share of the pods. The state machine
already scales the two copies for that (`paved.rollout.plan.canary_replicas` and
`stable_replicas`: with 4 replicas, 20% is 1 canary + 3 stable pods, i.e. 25%); this router
checks that the Service selects only those pods and records the *nominal* split the
machine asked for, so that reading it back is exact.

Requirement (checked by `reconcile`, a condition names `spec.service` otherwise): the user's
Service must select `paved.dev/rollout: <rollout name>` besides its own labels. Without
it, it would also select the pods of the user's own Deployment, which run the new template
the moment it changes: that would send them traffic before any analysis.

The nominal split lives in annotation `paved.dev/traffic-weights: "<stable>/<canary>"` on
the `<target>-stable` Deployment (owned by the rollout; written by field manager
`paved-rollout`, so it never fights the `paved` manager that applies the Deployment).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paved.providers.routing import ROLLOUT_LABEL, ROUTE_FIELD_MANAGER, STABLE, RolloutContext, RouterError
from paved.providers.routing.workloads import SERVICE_NAME, ServiceProblem, Workloads, service_missing
from paved.rollout.observation import Weights

NAME = "replicaRatio"
WEIGHTS_ANNOTATION = "paved.dev/traffic-weights"


def parse_weights(text: str | None) -> Weights | None:
    try:
        stable, canary = (int(part) for part in str(text).split("/"))
    except (TypeError, ValueError):
        return None
    return Weights(stable, canary)


def selector_problem(context: RolloutContext, service: Mapping[str, Any] | None) -> ServiceProblem | None:
    if service is None:
        return service_missing(context)
    selector = (service.get("spec") or {}).get("selector") or {}
    if selector.get(ROLLOUT_LABEL) != context.name:
        return ServiceProblem(SERVICE_NAME, f"Service {context.service} must select `{ROLLOUT_LABEL}: {context.name}` too, "
                                            "so that only the stable and canary pods Paved scales receive traffic "
                                            f"(not the pods of Deployment {context.target})")
    return None


class ReplicaRatioRouter:
    name = NAME

    def __init__(self, context: RolloutContext, settings: Mapping[str, Any] | None = None, *,
                 workloads: Workloads | None = None) -> None:
        self.context = context
        self.workloads = workloads or Workloads(context)

    def reconcile(self) -> None:
        problem = selector_problem(self.context, self.workloads.user_service())
        if problem:
            raise RouterError(problem.message, retryable=False, field=problem.field)

    def get_weights(self) -> Weights | None:
        stable = self.workloads.copy(STABLE)
        annotations = ((stable or {}).get("metadata") or {}).get("annotations") or {}
        return parse_weights(annotations.get(WEIGHTS_ANNOTATION))

    def set_weights(self, weights: Weights) -> None:
        stable = self.workloads.copy(STABLE)
        if stable is None:
            raise RouterError(f"Deployment {self.context.deployment_name(STABLE)} does not exist yet")
        body = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": self.context.deployment_name(STABLE), "namespace": self.context.namespace,
                             "annotations": {WEIGHTS_ANNOTATION: f"{weights.stable}/{weights.canary}"}}}
        live = self.workloads.apply_copy(STABLE, body, field_manager=ROUTE_FIELD_MANAGER)
        seen = parse_weights(((live.get("metadata") or {}).get("annotations") or {}).get(WEIGHTS_ANNOTATION))
        if seen != weights:
            raise RouterError(f"Deployment {self.context.deployment_name(STABLE)} reads back weights {seen} "
                              f"after setting {weights.stable}/{weights.canary}")

    def finalize(self) -> None:
        return  # nothing outside the rollout's own (garbage-collected) objects

