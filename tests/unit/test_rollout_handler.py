"""The ProgressiveRollout tick loop (paved.engines.rollout) with in-memory fakes.

The rollout is held in memory (status written by server-side apply, as the API server does it);
the target Deployment and the copies are in tests/support's FakeKube (copies become ready the
moment they are applied); the router is a fake; FakeMetrics answers the queries. The real loop runs against the real
control plane in tests/e2e/test_progressive_rollout.py.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from support.kube import FakeKube

from paved.engines.rollout import (
    REASON_ENDPOINT_REFUSED, REASON_INVALID_SPEC, REASON_QUERY_REJECTED, REASON_ROUTING_INVALID, REASON_TARGET_NOT_FOUND,
    ROLLOUT_STATUS, RolloutRunner, command_of,
)
from paved.api.platform import nothing_allowed
from paved.kube.apply import MANAGED_BY, MANAGED_BY_LABEL
from paved.rollout import conditions_for
from paved.providers import metrics as metric_providers
from paved.providers.metrics import QueryResult
from paved.providers.metrics.fake import FakeMetrics
from paved.providers.routing import COMMAND_ANNOTATION, COMMAND_ID_ANNOTATION, RolloutContext, RouterError
from paved.providers.routing.workloads import Workloads
from paved.rollout import Command, CommandKind, Event, Weights

QUERY = "success_rate"
SAMPLES = "requests"


def target(image: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "checkout", "namespace": "shop", "uid": "t-uid"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "checkout"}},
                     "template": {"metadata": {"labels": {"app": "checkout"}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}}


def ready_at_once(deployment: dict[str, Any]) -> None:
    """Paved's copies are ready the moment they are written (kwok-like); the user's target is left alone."""
    if (deployment["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
        return
    replicas = deployment["spec"]["replicas"]
    deployment["status"] = {"observedGeneration": deployment["metadata"]["generation"], "replicas": replicas,
                            "updatedReplicas": replicas, "readyReplicas": replicas}


def cluster() -> FakeKube:
    """The target Deployment and the user's Service; Deployments Paved writes are ready at once."""
    kube = FakeKube([target("v1"), {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "checkout", "namespace": "shop"},
                                    "spec": {"selector": {"app": "checkout"}, "ports": [{"port": 80}]}}])
    kube.react("Deployment", ready_at_once)
    return kube


class FakeRouter:
    name = "fake"

    def __init__(self, workloads: Workloads, problem: RouterError | None = None) -> None:
        self.workloads = workloads
        self.weights: Weights | None = None
        self.history: list[Weights] = []
        self.problem = problem

    def reconcile(self) -> None:
        if self.problem:
            raise self.problem

    def get_weights(self) -> Weights | None:
        return self.weights

    def set_weights(self, weights: Weights) -> None:
        self.weights = weights
        self.history.append(weights)

    def finalize(self) -> None:
        self.weights = None


class World(RolloutRunner):
    """A RolloutRunner whose cluster is in memory."""

    def __init__(self, spec: dict[str, Any], router_problem: RouterError | None = None) -> None:
        super().__init__("shop", "checkout", "uid-1")
        self.body: dict[str, Any] | None = {
            "apiVersion": "paved.dev/v1alpha1", "kind": "ProgressiveRollout",
            "metadata": {"name": "checkout", "namespace": "shop", "uid": "uid-1", "generation": 1, "annotations": {}},
            "spec": spec}
        self.kube = cluster()
        self.router_problem = router_problem
        self.fake_router: FakeRouter | None = None
        self.events: list[Event] = []
        self.writes = 0

    def read(self) -> dict[str, Any] | None:
        return copy.deepcopy(self.body)

    def write_status(self, shown: Any, status: Any) -> dict[str, Any] | None:
        """Server-side apply as the API server does it: the rollout's part replaces what it
        applied before, other writers' conditions stay."""
        assert self.body is not None
        if not ROLLOUT_STATUS.changed(shown.get("status"), status):
            return None
        self.writes += 1
        live = self.body.get("status") or {}
        applied = ROLLOUT_STATUS.owned(copy.deepcopy(dict(status)))
        others = [c for c in live.get("conditions") or [] if c["type"] not in ROLLOUT_STATUS.conditions]
        self.body["status"] = {**applied, "conditions": applied.get("conditions", []) + others}
        return copy.deepcopy(self.body)

    def post(self, owner: Any, event: Event) -> None:
        self.events.append(event)

    def emit(self, owner: Any, event: Event) -> None:
        self.post(owner, event)  # synchronously, so the test sees them in order

    def router(self, spec: Any, context: RolloutContext) -> Any:
        if self.fake_router is None:
            self.fake_router = FakeRouter(Workloads(context, self.kube), self.router_problem)
        self.fake_router.workloads.refresh()
        return self.fake_router

    @property
    def status(self) -> dict[str, Any]:
        assert self.body is not None
        return self.body.get("status") or {}

    def until(self, predicate: Any, ticks: int = 60, seconds: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        for _ in range(ticks):
            result = self.tick()
            if predicate(self.status):
                return self.status
            if time.monotonic() > deadline:
                break
            time.sleep(min(result.requeue_after or 0.0, 0.2))
        pytest.fail(f"not reached; phase {self.status.get('phase')}: {self.status.get('message')}")


def spec(**overrides: Any) -> dict[str, Any]:
    body = {
        "targetRef": {"name": "checkout"},
        "service": {"name": "checkout", "port": 80},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "checkout"}},
        "steps": [{"setWeight": 20}, {"setWeight": 60}],
        "analysis": {"prometheus": {"address": "http://prometheus.test:9090"}, "interval": "1s",
                     "metrics": [{"name": "success-rate", "query": QUERY, "samplesQuery": SAMPLES,
                                  "minSamples": 10, "successCondition": "result >= 0.95",
                                  "failureCondition": "result < 0.8"}]},
    }
    body.update(overrides)
    return body


@pytest.fixture
def metrics() -> Any:
    fake = FakeMetrics({QUERY: 0.99, SAMPLES: 100}).install()
    yield fake
    metric_providers.METRICS.unregister("prometheus")


def succeeded(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Succeeded"


def test_bootstrap_then_a_healthy_rollout_is_promoted(metrics: FakeMetrics) -> None:
    world = World(spec())
    status = world.until(succeeded)
    assert status["message"].startswith("stable at revision")
    assert world.fake_router and world.fake_router.weights == Weights(100, 0)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and status["observedGeneration"] == 1

    world.kube.put(target("v2"))
    status = world.until(lambda s: succeeded(s) and s["message"].startswith("promoted"))
    assert [w.canary for w in world.fake_router.history] == [0, 20, 60, 100, 0]
    stable = world.kube.obj("Deployment", "checkout-stable", "shop")
    assert stable is not None
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == "v2"
    assert world.kube.obj("Deployment", "checkout-canary", "shop")["spec"]["replicas"] == 0  # type: ignore[index]
    assert {h["verdict"] for h in status["analysisHistory"]} == {"Successful"}
    assert any(e.reason == "Promoted" for e in world.events)


def test_an_idle_tick_writes_nothing(metrics: FakeMetrics) -> None:
    world = World(spec())
    world.until(succeeded)
    writes = world.writes
    world.tick()
    world.tick()
    assert world.writes == writes


def test_a_breach_rolls_back_in_the_same_tick_as_the_measurement(metrics: FakeMetrics) -> None:
    world = World(spec())
    world.until(succeeded)
    metrics.answers[QUERY] = 0.5
    world.kube.put(target("v2"))
    status = world.until(lambda s: s.get("phase") == "RolledBack")
    assert status["message"] == ("rolled back at step 1 (20%): success-rate 0.5 < 0.8, failure condition met; "
                                 "100 samples")
    assert world.fake_router.weights == Weights(100, 0)
    assert max(w.canary for w in world.fake_router.history) == 20
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RolledBack")


def test_commands_are_read_from_annotations_once(metrics: FakeMetrics) -> None:
    world = World(spec(steps=[{"setWeight": 10}, {"pause": {}}]))
    world.until(succeeded)
    world.kube.put(target("v2"))
    world.until(lambda s: s.get("phase") == "Paused")
    assert world.body is not None
    world.body["metadata"]["annotations"] = {COMMAND_ANNOTATION: "abort", COMMAND_ID_ANNOTATION: "a1"}
    status = world.until(lambda s: s.get("phase") == "RolledBack")
    assert "aborted by the user" in status["message"]
    assert status["progress"]["lastCommand"] == "a1"


@pytest.mark.parametrize(("overrides", "reason", "field"), [
    ({"analysis": {"prometheus": {"address": "http://p:9090"}, "metrics": [
        {"name": "m", "query": QUERY, "successCondition": "result >= "}]}},
     REASON_INVALID_SPEC, "spec.analysis.metrics[0].successCondition"),
    ({"steps": [{"setWeight": 50}, {"setWeight": 20}]}, REASON_INVALID_SPEC, "spec.steps[1].setWeight"),
    ({"analysis": {"prometheus": {"address": "http://p:9090"}, "metrics": [
        {"name": "m", "query": "rejected", "successCondition": "result > 0.0"}]}},
     REASON_QUERY_REJECTED, "spec.analysis.metrics[0].query"),
    ({"targetRef": {"name": "missing"}}, REASON_TARGET_NOT_FOUND, "spec.targetRef.name"),
    ({"analysis": {"prometheus": {"address": "http://169.254.169.254/latest/meta-data?q="}, "metrics": [
        {"name": "m", "query": QUERY, "successCondition": "result > 0.0"}]}},
     REASON_ENDPOINT_REFUSED, "spec.analysis.prometheus.address"),
    ({"webhooks": [{"name": "ok", "type": "rollout", "url": "http://hooks.test/x"},
                   {"name": "imds", "type": "rollout", "url": "http://2852039166/latest/api/token"}]},
     REASON_ENDPOINT_REFUSED, "spec.webhooks[1].url"),
    ({"analysis": {"metrics": [{"name": "m", "query": QUERY, "successCondition": "result > 0.0"}]}},
     REASON_INVALID_SPEC, "spec.analysis.prometheus.address"),
], ids=["cel", "weights-backwards", "query", "target", "metadata-prometheus", "metadata-webhook", "no-address"])
def test_bad_input_is_refused_with_the_field_and_moves_nothing(
        metrics: FakeMetrics, overrides: dict[str, Any], reason: str, field: str) -> None:
    metrics.answers["rejected"] = QueryResult(error="bad_data: parse error", rejected=True)
    world = World(spec(**overrides))
    result = world.tick()
    assert result.requeue_after is not None
    status = world.status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert ready["message"].startswith(field), ready["message"]
    assert "no traffic moved" in status["message"] and "phase" not in status
    assert world.kube.obj("Deployment", "checkout-stable", "shop") is None
    assert world.fake_router is None or world.fake_router.history == []
    world.tick()
    assert [e.reason for e in world.events] == [reason]  # said once, not every tick


def test_an_endpoint_refusal_asks_prometheus_nothing_and_an_allowance_lifts_it(metrics: FakeMetrics) -> None:
    forbidden = spec(analysis={**spec()["analysis"], "prometheus": {"address": "http://[::ffff:169.254.169.254]:80"}})
    world = World(forbidden)
    world.tick()
    ready = next(c for c in world.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == REASON_ENDPOINT_REFUSED and "link-local" in ready["message"]
    assert "AnyEndpoint to ProgressiveRollouts in namespace shop" in ready["message"]
    assert metrics.queries == []
    world.allowances = lambda kind, namespace: ({**nothing_allowed(), "anyEndpoint": ["platform"]}
                                                if (kind, namespace) == ("ProgressiveRollout", "shop") else nothing_allowed())
    world.until(succeeded)
    assert metrics.queries  # the platform allowed it: the same address is used


def test_an_unusable_route_is_refused_before_any_traffic_moves(metrics: FakeMetrics) -> None:
    problem = RouterError("HTTPRoute checkout does not reference Service checkout", retryable=False,
                          field="spec.trafficRouting.gatewayAPI.httpRoute")
    world = World(spec(), router_problem=problem)
    world.tick()
    ready = next(c for c in world.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == REASON_ROUTING_INVALID
    assert ready["message"].startswith("spec.trafficRouting.gatewayAPI.httpRoute: HTTPRoute checkout")
    assert world.fake_router is not None and world.fake_router.history == []


def test_the_rollout_status_is_applied_as_stored() -> None:
    old = {"phase": "Progressing", "progress": {"stage": "StepRun", "pendingMeasure": {"id": "x"}},
           "analysisHistory": [{"metric": "m", "verdict": "Inconclusive"}]}
    same = {"phase": "Progressing", "progress": {"stage": "StepRun", "pendingMeasure": {"id": "x"}, "withdrawal": None},
            "analysisHistory": [{"metric": "m", "value": None, "verdict": "Inconclusive"}], "pauseUntil": None}
    assert ROLLOUT_STATUS.changed(old, same) == frozenset()  # an idle tick writes nothing
    changed = {**same, "progress": {"stage": "StepRun", "pendingMeasure": None}, "phase": "Paused",
               "analysisHistory": same["analysisHistory"] + [{"metric": "m", "value": None, "verdict": "Failed"}]}
    assert ROLLOUT_STATUS.changed(old, changed) == {"phase", "progress", "analysisHistory"}
    applied = ROLLOUT_STATUS.owned(changed)
    assert applied["progress"] == {"stage": "StepRun"}  # left out: removed, as the machine's None means
    assert applied["analysisHistory"][-1] == {"metric": "m", "verdict": "Failed"}  # no nulls in list items
    assert ROLLOUT_STATUS.changed({"message": "x"}, {"message": None}) == {"message"}
    assert "message" not in ROLLOUT_STATUS.owned({"message": None})


def test_command_of_and_conditions_for() -> None:
    assert command_of({"annotations": {COMMAND_ANNOTATION: "Promote", COMMAND_ID_ANNOTATION: "7"}}) == Command(
        CommandKind.PROMOTE, "7")
    assert command_of({"annotations": {COMMAND_ANNOTATION: "retry"}}) == Command(CommandKind.RETRY, "retry")
    assert command_of({"annotations": {COMMAND_ANNOTATION: "fly"}}) is None
    assert command_of({}) is None
    ready, progressing = conditions_for({"phase": "Paused", "message": "why"})
    assert ready == ("Ready", False, "Paused", "why") and progressing == ("Progressing", True, "Paused", "why")
    assert conditions_for({"phase": "Succeeded"})[0][1] is True


# --- analysis templates ---------------------------------------------------------------------------

TEMPLATE_QUERY = 'rate{service="{{args.service}}"}'


class TemplatedWorld(World):
    """A World whose rollout uses an AnalysisTemplate kept in `templates` (None: absent)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.templates: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.template_reads = 0

    def read_template(self, kind: str, name: str) -> dict[str, Any] | None:
        self.template_reads += 1
        return copy.deepcopy(self.templates.get((kind, name)))

    def put_template(self, query: str, generation: int) -> None:
        self.templates[("AnalysisTemplate", "rate")] = {
            "metadata": {"name": "rate", "generation": generation},
            "spec": {"args": [{"name": "service"}],
                     "metrics": [{"name": "rate", "query": query, "successCondition": "result >= 0.95",
                                  "failureCondition": "result < 0.8"}]}}


def templated_spec(*args: dict[str, str]) -> dict[str, Any]:
    return spec(analysis={"prometheus": {"address": "http://prometheus.test:9090"}, "interval": "1s",
                          "templates": [{"templateName": "rate", "args": list(args)}]})


def test_a_template_edited_mid_run_changes_the_next_run_only(metrics: FakeMetrics) -> None:
    metrics.answers.update({'rate{service="checkout"}': 0.99, 'edited{service="checkout"}': 0.1})
    world = TemplatedWorld(templated_spec({"name": "service", "value": "checkout"}))
    world.put_template(TEMPLATE_QUERY, 1)
    world.until(succeeded)
    world.kube.put(target("v2"))
    world.until(lambda s: s.get("canaryWeight") == 20)
    world.put_template('edited{service="{{args.service}}"}', 2)
    reads = world.template_reads
    status = world.until(lambda s: succeeded(s) and s["message"].startswith("promoted"))
    assert world.template_reads == reads  # the run measured its snapshot, reading nothing
    assert set(metrics.queries) == {'rate{service="checkout"}'}
    assert status["analysisTemplates"]["templates"] == [
        {"kind": "AnalysisTemplate", "name": "rate", "generation": 1, "metrics": ["rate"]}]

    world.kube.put(target("v3"))  # the next run takes the edited template, and rolls back on it
    status = world.until(lambda s: s.get("phase") == "RolledBack")
    assert 'edited{service="checkout"}' in metrics.queries
    assert status["analysisTemplates"]["templates"][0]["generation"] == 2


@pytest.mark.parametrize(("args", "present", "field"), [
    ([{"name": "service", "value": "checkout"}], False, "spec.analysis.templates[0].templateName"),
    ([], True, "spec.analysis.templates[0].args"),
], ids=["missing-template", "unset-argument"])
def test_a_missing_template_or_an_unset_argument_moves_no_traffic(
        metrics: FakeMetrics, args: list[dict[str, str]], present: bool, field: str) -> None:
    world = TemplatedWorld(templated_spec(*args))
    if present:
        world.put_template(TEMPLATE_QUERY, 1)
    world.tick()
    ready = next(c for c in world.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "AnalysisTemplateInvalid")
    assert ready["message"].startswith(field + ": "), ready["message"]
    assert "no traffic moved" in world.status["message"]
    assert world.fake_router is None and metrics.queries == []
