"""Traffic routers for ProgressiveRollout: one small interface, a factory keyed by the spec.

Flagger's shape. A router splits traffic between the stable and the canary workload:

    reconcile()            make sure what the router needs exists and is usable (Services,
                           the route references them); raise RouterError naming the field
                           otherwise, before any traffic moves
    get_weights()          the split as read back from the cluster (None: nothing set yet)
    set_weights(weights)   write the split, read it back, raise RouterError if it differs
    finalize()             hand traffic back when the rollout is deleted

`router_for(spec, context)` picks the implementation from the one-of field that is set in
`spec.trafficRouting` (`gatewayAPI`, `replicaRatio`; absent means `replicaRatio`). Each
implementation lives in its own module and registers itself; `register` lets tests put a
fake under a name.

Names, labels and the one rollout-wide context shared by routers and workloads live here so
that every module spells them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from paved.providers.base import Owner, ProviderError
from paved.providers.registry import Registry
from paved.rollout.observation import Weights

ROLLOUT_LABEL = "paved.dev/rollout"
"""On every pod Paved runs for a rollout (value: the rollout's name)."""
ROLE_LABEL = "paved.dev/role"
"""`stable` or `canary`: tells the two copies apart (selectors of the Paved Services)."""
REVISION_ANNOTATION = "paved.dev/revision"
"""On the stable/canary Deployments: the target revision whose pod template they run."""
COMMAND_ANNOTATION = "paved.dev/command"
"""`promote`, `abort` or `retry`, set by `paved rollout ...` on the ProgressiveRollout."""
COMMAND_ID_ANNOTATION = "paved.dev/command-id"
"""Any unique string next to the command: each id acts once."""
ROUTE_FIELD_MANAGER = "paved-rollout"
"""Field manager of every write Paved makes to objects it does not own (the HTTPRoute)."""

STABLE, CANARY = "stable", "canary"


class RouterError(ProviderError):
    """The router cannot do its job; `field` names the spec field to fix when it is the user's
    input (then `retryable` is False and no traffic moves)."""


@dataclass(frozen=True)
class RolloutContext:
    """Who is rolling out what: enough for routers and workloads to name and own objects."""

    owner: Owner               # the ProgressiveRollout (ownerReferences, events)
    target: str                # spec.targetRef.name: the user's Deployment
    service: str               # spec.service.name: the user's Service
    port: int                  # spec.service.port

    @property
    def namespace(self) -> str:
        return self.owner.namespace or "default"

    @property
    def name(self) -> str:
        return self.owner.name

    def deployment_name(self, role: str) -> str:
        return f"{self.target}-{role}"

    def service_name(self, role: str) -> str:
        return f"{self.service}-{role}"

    @classmethod
    def from_body(cls, body: Mapping[str, Any], owner: Owner) -> RolloutContext:
        spec = body.get("spec") or {}
        return cls(owner=owner, target=str((spec.get("targetRef") or {}).get("name") or ""),
                   service=str((spec.get("service") or {}).get("name") or ""),
                   port=int((spec.get("service") or {}).get("port") or 0))


@runtime_checkable
class Router(Protocol):
    name: str

    def reconcile(self) -> None:
        """Create or check what routing needs; RouterError (with `field`) when it cannot work."""

    def get_weights(self) -> Weights | None:
        """The split as the cluster has it now; None when the router has not set one yet."""

    def set_weights(self, weights: Weights) -> None:
        """Write the split and verify it by reading it back; RouterError when it differs."""

    def finalize(self) -> None:
        """The rollout is being deleted: leave traffic flowing without Paved's objects."""


RouterFactory = Callable[..., Router]
"""(context, the value of the one-of field, e.g. {httpRoute: checkout}, workloads=None) ->
a router; `workloads` (a paved.providers.routing.workloads.Workloads) shares the caller's
reads of the Services and Deployments."""

ROUTERS: Registry[RouterFactory] = Registry(
    "traffic router",
    builtin={"gatewayAPI": "paved.providers.routing.gatewayapi:GatewayAPIRouter",
             "replicaRatio": "paved.providers.routing.replicaratio:ReplicaRatioRouter"},
    unknown=lambda name, known: RouterError(f"unknown traffic router {name!r}; known: {known}", retryable=False,
                                            field="spec.trafficRouting"),
)
"""Traffic routers by the one-of field of spec.trafficRouting."""
DEFAULT = "replicaRatio"


def router_kind(spec: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """(router name, its settings) from spec.trafficRouting; absent means replicaRatio."""
    routing = spec.get("trafficRouting") or {}
    for name in ROUTERS.names():
        settings = routing.get(name)
        if isinstance(settings, Mapping):
            return name, settings
    return DEFAULT, {}


def router_for(spec: Mapping[str, Any], context: RolloutContext, workloads: Any = None) -> Router:
    name, settings = router_kind(spec)
    return ROUTERS.factory(name)(context, settings, workloads=workloads)
