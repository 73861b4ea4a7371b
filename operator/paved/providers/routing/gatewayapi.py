"""Gateway API router: weights on the backendRefs Paved owns in the user's HTTPRoute.

The contract with the user (docs/rollout.md): the HTTPRoute named by
`spec.trafficRouting.gatewayAPI.httpRoute` has one or more rules whose backendRefs list both
Services Paved creates, e.g. in Git:

    backendRefs:
      - {name: checkout-stable, port: 80, weight: 100}
      - {name: checkout-canary, port: 80, weight: 0}

Paved changes the `weight` of those two refs, in every rule that lists them, and nothing
else: not other rules, not filters, not matches, not other backends, not parentRefs or
hostnames. At rest (no rollout running) the weights are back at 100/0, which is what Git
says, so a GitOps tool shows no permanent drift; during a rollout it shows the weights
moving, and should ignore them (see the docs for Argo CD's `managedFieldsManagers` and
Flux).

How, given that Gateway API declares `spec.rules` and `backendRefs` as *atomic* lists (a
server-side apply cannot own one element's weight, only the whole list): every write is a
server-side apply by field manager `paved-rollout` whose `spec.rules` is the live list,
read just before, with only those weights replaced, and which carries the live
`metadata.resourceVersion` as a precondition. If anyone changed the route in between, the
API server answers 409 and the write is redone from a fresh read, so a concurrent edit
(another rule, a filter) is never lost. Fields outside `spec.rules` are never sent, so
another manager (Argo CD, Flux, kubectl) keeps owning them without conflict. The route as
the API server stored it (its answer to the write: after admission and any mutating
webhook) is read back and compared; a difference raises RouterError.

The route itself is never labelled, annotated or owned by the rollout: it is the user's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tenacity

from paved.kube.client import ApiError
from paved.kube.port import ApiKube, KubePort
from paved.providers.routing import (
    CANARY, ROUTE_FIELD_MANAGER, STABLE, RolloutContext, RouterError,
)
from paved.providers.routing.workloads import Workloads
from paved.rollout.observation import Weights

NAME = "gatewayAPI"
GROUP = "gateway.networking.k8s.io"
API_VERSION = f"{GROUP}/v1"
KIND = "HTTPRoute"
DEFAULT_WEIGHT = 1  # Gateway API: an unset backendRef weight is 1
INCOHERENT = Weights(0, 0)
"""Reported when the managed rules disagree (or give no traffic at all): it equals no split
the state machine sets, so the machine restores the weights it wants in every rule."""
WRITE_ATTEMPTS = 4

Json = dict[str, Any]


# --- pure -----------------------------------------------------------------------------------


def refers_to(ref: Mapping[str, Any], service: str, service_namespace: str, route_namespace: str) -> bool:
    """Whether a backendRef points at Service `service_namespace/service`."""
    if (ref.get("group") or "") not in ("", "core") or (ref.get("kind") or "Service") != "Service":
        return False
    return ref.get("name") == service and (ref.get("namespace") or route_namespace) == service_namespace


def managed_rules(route: Mapping[str, Any], context: RolloutContext) -> list[int]:
    """Indices of the rules that list the stable or the canary Service."""
    names = (context.service_name(STABLE), context.service_name(CANARY))
    route_ns = (route.get("metadata") or {}).get("namespace") or context.namespace
    found = []
    for index, rule in enumerate((route.get("spec") or {}).get("rules") or []):
        refs = rule.get("backendRefs") or []
        if any(refers_to(ref, name, context.namespace, route_ns) for ref in refs for name in names):
            found.append(index)
    return found


def route_problem(route: Mapping[str, Any] | None, context: RolloutContext, route_name: str) -> str | None:
    """Why Paved cannot steer traffic with this route (None when it can). Pure."""
    stable, canary = context.service_name(STABLE), context.service_name(CANARY)
    wanted = (f"list both Services in a rule's backendRefs, e.g. [{{name: {stable}, port: {context.port}, "
              f"weight: 100}}, {{name: {canary}, port: {context.port}, weight: 0}}]")
    if route is None:
        return f"HTTPRoute {route_name} not found"
    route_ns = (route.get("metadata") or {}).get("namespace") or context.namespace
    rules = managed_rules(route, context)
    if not rules:
        mentions_user_service = any(
            refers_to(ref, context.service, context.namespace, route_ns)
            for rule in (route.get("spec") or {}).get("rules") or [] for ref in rule.get("backendRefs") or [])
        if mentions_user_service:
            return (f"HTTPRoute {route_name} sends Service {context.service} traffic directly, which Paved cannot "
                    f"split; {wanted}")
        return f"HTTPRoute {route_name} does not reference Service {context.service} ({stable}/{canary}); {wanted}"
    for index in rules:
        refs = route["spec"]["rules"][index].get("backendRefs") or []
        for name in (stable, canary):
            matching = [ref for ref in refs if refers_to(ref, name, context.namespace, route_ns)]
            if len(matching) != 1:
                what = "does not list" if not matching else "lists more than once"
                return f"HTTPRoute {route_name} rule {index} {what} Service {name}; {wanted}"
            if matching[0].get("port") not in (None, context.port):
                return (f"HTTPRoute {route_name} rule {index} sends {name} to port {matching[0].get('port')}, "
                        f"not spec.service.port {context.port}")
    return None


def rule_weights(route: Mapping[str, Any], context: RolloutContext) -> list[Weights]:
    """The stable/canary split of each managed rule, in percent (relative weights of the two
    refs; an unset weight is 1, as Gateway API says)."""
    route_ns = (route.get("metadata") or {}).get("namespace") or context.namespace
    result = []
    for index in managed_rules(route, context):
        refs = route["spec"]["rules"][index].get("backendRefs") or []
        raw = {}
        for role in (STABLE, CANARY):
            ref = next((r for r in refs if refers_to(r, context.service_name(role), context.namespace, route_ns)), None)
            raw[role] = 0 if ref is None else int(ref.get("weight", DEFAULT_WEIGHT))
        total = raw[STABLE] + raw[CANARY]
        if total <= 0:
            result.append(INCOHERENT)
            continue
        canary = round(100 * raw[CANARY] / total)
        result.append(Weights(100 - canary, canary))
    return result


def combined(weights: Sequence[Weights]) -> Weights | None:
    """One split for the route: the rules' common split; INCOHERENT when they disagree."""
    if not weights:
        return None
    first = weights[0]
    return first if all(w == first for w in weights) else INCOHERENT


def with_weights(route: Mapping[str, Any], context: RolloutContext, weights: Weights) -> list[Json]:
    """The route's rules with only the weights of the stable/canary refs replaced. Pure:
    every other byte of every rule (order, filters, matches, other backends) is kept."""
    route_ns = (route.get("metadata") or {}).get("namespace") or context.namespace
    rules = copy.deepcopy(list((route.get("spec") or {}).get("rules") or []))
    for index in managed_rules(route, context):
        for ref in rules[index].get("backendRefs") or []:
            if refers_to(ref, context.service_name(STABLE), context.namespace, route_ns):
                ref["weight"] = weights.stable
            elif refers_to(ref, context.service_name(CANARY), context.namespace, route_ns):
                ref["weight"] = weights.canary
    return rules


def handed_back(route: Mapping[str, Any], context: RolloutContext) -> list[Json]:
    """The rules with the stable/canary refs replaced by one ref to the user's Service (where
    the stable ref was, keeping its filters): traffic keeps flowing after the rollout and its
    Services are deleted. Pure."""
    route_ns = (route.get("metadata") or {}).get("namespace") or context.namespace
    rules = copy.deepcopy(list((route.get("spec") or {}).get("rules") or []))
    for index in managed_rules(route, context):
        refs = []
        for ref in rules[index].get("backendRefs") or []:
            if refers_to(ref, context.service_name(STABLE), context.namespace, route_ns):
                ref = {**ref, "name": context.service, "port": context.port}
                ref.pop("weight", None)
            elif refers_to(ref, context.service_name(CANARY), context.namespace, route_ns):
                continue
            refs.append(ref)
        rules[index]["backendRefs"] = refs
    return rules


def apply_body(route: Mapping[str, Any], rules: list[Json]) -> Json:
    """The server-side apply body: only spec.rules, guarded by the resourceVersion read."""
    metadata = route.get("metadata") or {}
    return {
        "apiVersion": route.get("apiVersion") or API_VERSION,
        "kind": KIND,
        "metadata": {"name": metadata["name"], "namespace": metadata["namespace"],
                     "resourceVersion": metadata["resourceVersion"]},
        "spec": {"rules": rules},
    }


# --- I/O ------------------------------------------------------------------------------------


class RouteConflict(Exception):
    """The route changed between our read and our write (HTTP 409): read again."""


class GatewayAPIRouter:
    name = NAME

    def __init__(self, context: RolloutContext, settings: Mapping[str, Any], *, kube: KubePort | None = None,
                 workloads: Workloads | None = None) -> None:
        self.context = context
        self.route_name = str(settings.get("httpRoute") or "")
        self.route_namespace = str(settings.get("namespace") or context.namespace)
        self.kube = kube or ApiKube()
        self.workloads = workloads or Workloads(context, self.kube)

    def _route(self) -> Json | None:
        return self.kube.get(API_VERSION, KIND, self.route_name, self.route_namespace)

    def _apply(self, body: Mapping[str, Any]) -> Json:
        """The undecorated SSA request as `paved-rollout` (KubePort.apply_fields). Not
        KubePort.apply: that labels its objects as Paved's, gives them an ownerReference to the
        intent (the garbage collector would delete the user's route with the rollout) and drops
        metadata.resourceVersion (the precondition this write relies on). Here the body is the
        user's route's own fields, nothing added."""
        try:
            return self.kube.apply_fields(body, field_manager=ROUTE_FIELD_MANAGER)
        except ApiError as error:
            if error.status == 409:
                raise RouteConflict(error.message) from None
            raise

    def _read(self) -> Json:
        route = self._route()
        problem = route_problem(route, self.context, self.route_name)
        if problem:
            raise RouterError(problem, retryable=False, field="spec.trafficRouting.gatewayAPI.httpRoute")
        assert route is not None  # noqa: S101
        return route

    def reconcile(self) -> None:
        self.workloads.ensure_services()
        self._read()

    def get_weights(self) -> Weights | None:
        return combined(rule_weights(self._read(), self.context))

    def set_weights(self, weights: Weights) -> None:
        if weights.stable < 0 or weights.canary < 0 or weights.stable + weights.canary != 100:
            raise RouterError(f"weights {weights.stable}/{weights.canary} do not add up to 100", retryable=False)

        def rules_of(route: Json) -> list[Json]:
            if all(w == weights for w in rule_weights(route, self.context)):
                return list((route.get("spec") or {}).get("rules") or [])  # same split: leave Git's spelling
            return with_weights(route, self.context, weights)

        stored = self._write(rules_of)
        seen = rule_weights(stored, self.context)
        if any(w != weights for w in seen):
            raise RouterError(f"HTTPRoute {self.route_name} reads back "
                              f"{', '.join(f'{w.stable}/{w.canary}' for w in seen)} after setting "
                              f"{weights.stable}/{weights.canary} (stable/canary)")

    def finalize(self) -> None:
        route = self._route()
        if route is None or not managed_rules(route, self.context):
            return
        self._write(lambda live: handed_back(live, self.context))

    def _write(self, rules_of: Callable[[Json], list[Json]]) -> Json:
        """Read, replace, apply with the resourceVersion read; on 409 start over. Returns the
        route as stored (the API server's answer to the write, or the read when nothing had
        to change): that is the read-back the caller verifies."""
        retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(RouteConflict),
                                     wait=tenacity.wait_random_exponential(multiplier=0.05, max=0.5),
                                     stop=tenacity.stop_after_attempt(WRITE_ATTEMPTS), reraise=True)
        try:
            return retrying(self._write_once, rules_of)
        except RouteConflict as exc:
            raise RouterError(f"HTTPRoute {self.route_name} kept changing while Paved wrote its weights "
                              f"({WRITE_ATTEMPTS} attempts): {exc}") from None

    def _write_once(self, rules_of: Callable[[Json], list[Json]]) -> Json:
        route = self._route()
        if route is None:
            raise RouterError(f"HTTPRoute {self.route_name} not found", retryable=False,
                              field="spec.trafficRouting.gatewayAPI.httpRoute")
        rules = rules_of(route)
        if rules == (route.get("spec") or {}).get("rules"):
            return route  # already so: no write, no new resourceVersion
        return self._apply(apply_body(route, rules))

