"""ProgressiveRollout end to end, against real parts only.

- the real control plane with kwok (Deployments become Available) and the Gateway API CRDs;
- `paved run` as deploy/'s ServiceAccount (the `operator` fixture);
- a real Prometheus (Debian package) scraping two loopback apps, `stable` and `canary`,
  that count requests by version and status code (tests/e2e/apps);
- a bounded load generator in the test that sends the apps traffic in the ratio the
  HTTPRoute says, re-reading the route's weights from the API server every second.

The canary steps 5 -> 20 -> 50 -> 100 with short pauses and a 2 s analysis interval, so a
whole rollout takes well under a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.apps import LoadGenerator, VersionedApp, WeightReader
from fixtures.cluster import Kubectl, wait_for
from fixtures.operator import OperatorProcess
from fixtures.prometheus import PrometheusServer

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

ROUTE_FIELD_MANAGER = "paved-rollout"
INTERVAL_S = 2.0
WARMUP_S = 2.0
REPLAY_STEP_S = 0.05  # resolution at which the rollback test replays the operator's queries
SUCCESS_RATE = {
    "name": "success-rate",
    "query": 'sum(rate(http_requests_total{version="canary",code!~"5.."}[10s]))'
             ' / sum(rate(http_requests_total{version="canary"}[10s]))',
    "successCondition": "result >= 0.95",
    "failureCondition": "result < 0.8",
    "failureLimit": 2,
    "minSamples": 5,
    "samplesQuery": 'sum(increase(http_requests_total{version="canary"}[10s]))',
    "warmup": f"{WARMUP_S:g}s",
}


def seed_steps(pause: str = "2s") -> list[dict[str, Any]]:
    """The seed's 5 -> 20 -> 50 -> 100 canary with short pauses."""
    return [{"setWeight": 5}, {"pause": {"duration": pause}}, {"setWeight": 20}, {"pause": {"duration": pause}},
            {"setWeight": 50}, {"pause": {"duration": pause}}, {"setWeight": 100}, {"pause": {"duration": pause}}]


@dataclass
class Shop:
    """One namespace with the user's objects (Deployment, Service, HTTPRoute) and the apps."""

    namespace: str
    kubectl: Kubectl
    prometheus: str  # the address, for specs
    server: PrometheusServer
    stable: VersionedApp
    canary: VersionedApp
    kubeconfig: Path

    def apply(self, *documents: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", kind, name, "-n", self.namespace, "-o", "json").stdout)

    def exists(self, kind: str, name: str) -> bool:
        return self.kubectl("get", kind, name, "-n", self.namespace, check=False).returncode == 0

    def status(self, name: str = "checkout") -> dict[str, Any]:
        return self.get("progressiverollout", name).get("status") or {}

    def condition(self, type_: str, name: str = "checkout") -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == type_), {})

    def route_weights(self, route: str = "checkout") -> tuple[int, int] | None:
        rules = self.get("httproute", route)["spec"]["rules"]
        for rule in rules:
            refs = {ref["name"]: ref.get("weight", 1) for ref in rule.get("backendRefs") or []}
            if "checkout-stable" in refs:
                return refs["checkout-stable"], refs.get("checkout-canary", 0)
        return None

    def rollout(self, name: str = "checkout", **spec: Any) -> dict[str, Any]:
        body = {
            "targetRef": {"name": "checkout"},
            "service": {"name": "checkout", "port": 80},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "checkout"}},
            "steps": seed_steps(),
            "analysis": {"prometheus": {"address": self.prometheus}, "interval": f"{INTERVAL_S:g}s",
                         "metrics": [SUCCESS_RATE]},
        }
        body.update(spec)
        return {"apiVersion": "paved.dev/v1alpha1", "kind": "ProgressiveRollout",
                "metadata": {"name": name, "namespace": self.namespace}, "spec": body}

    def new_version(self, tag: str) -> None:
        """The user changes the pod template (as a GitOps sync would): a rollout starts."""
        self.kubectl("set", "image", "deployment/checkout", f"app=example.com/checkout:{tag}", "-n", self.namespace)

    def wait_status(self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60.0,
                    name: str = "checkout") -> dict[str, Any]:
        """Poll the rollout's status until `predicate` holds; fail with its last message."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(name)
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; phase {status.get('phase')}: "
                            f"{status.get('message')}; history {status.get('analysisHistory')}")
            time.sleep(0.25)

    def wait_phase(self, phase: str, timeout: float = 60.0, name: str = "checkout") -> dict[str, Any]:
        return self.wait_status(lambda s: s.get("phase") == phase, f"phase {phase}", timeout, name)

    def wait_promoted(self, timeout: float = 90.0) -> dict[str, Any]:
        return self.wait_status(lambda s: s.get("phase") == "Succeeded" and s.get("message", "").startswith("promoted"),
                                "promotion", timeout)

    def wait_scraped(self, timeout: float = 30.0) -> None:
        """Prometheus has scraped both apps at least twice (rate() has two points)."""
        self.server.wait_for('count(count_over_time(http_requests_total{code="200"}[1m]) >= 2)',
                             lambda result: bool(result) and float(result[0]["value"][1]) >= 2, timeout=timeout)

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        items = json.loads(self.kubectl("get", "events", "-n", self.namespace, "-o", "json").stdout)["items"]
        return [e for e in items if e["involvedObject"]["kind"] == "ProgressiveRollout"
                and (reason is None or e["reason"] == reason)]

    def traffic(self, **options: Any) -> tuple[WeightReader, LoadGenerator]:
        reader = WeightReader(lambda: self.route_weights(), period=0.5).start()
        load = LoadGenerator(self.stable.url, self.canary.url, lambda: reader.current, **options).start()
        return reader, load


EXAMPLE = Path(__file__).resolve().parents[2] / "examples/04-progressive-rollout"


def user_objects(namespace: str) -> list[dict[str, Any]]:
    """What an app team keeps in Git (examples/04-progressive-rollout/checkout.yaml): a
    native Deployment (2 replicas here), its Service, an HTTPRoute listing the stable/canary
    Services Paved maintains (weights 100/0 at rest) next to an unrelated rule with a filter
    that Paved must leave alone."""
    documents = [doc for doc in yaml.safe_load_all((EXAMPLE / "checkout.yaml").read_text()) if doc]
    for doc in documents:
        doc["metadata"]["namespace"] = namespace
        if doc["kind"] == "Deployment":
            doc["spec"]["replicas"] = 2
            doc["spec"]["template"]["spec"]["containers"][0]["image"] = "example.com/checkout:v1"
    return documents


@pytest.fixture
def shop(operator: OperatorProcess, kubectl: Kubectl, namespace: str, control_plane: Any,
         prometheus: Callable[..., PrometheusServer]) -> Iterator[Shop]:
    with VersionedApp("stable") as stable, VersionedApp("canary") as canary:
        server = prometheus([stable.address, canary.address], scrape_interval="1s")
        world = Shop(namespace, kubectl, str(server), server, stable, canary, Path(control_plane.kubeconfig))
        world.apply(*user_objects(namespace))
        yield world
        if operator.alive():  # the finalizer needs the operator: delete while it runs
            kubectl("delete", "progressiverollouts", "--all", "-n", namespace, "--wait=true", "--timeout=30s",
                    check=False)


def start(shop: Shop, **spec: Any) -> None:
    """Apply the rollout, wait until Paved took over the stable version, and set canary errors."""
    shop.apply(shop.rollout(**spec))
    shop.wait_scraped()
    status = shop.wait_phase("Succeeded", timeout=60)
    assert status["message"].startswith("stable at revision"), status["message"]
    assert shop.condition("Ready")["status"] == "True"


def canary_weights(reader: WeightReader) -> list[int]:
    return [seen.canary for seen in reader.history]


# --- the cases --------------------------------------------------------------------------------


def test_healthy_canary_is_promoted_step_by_step(shop: Shop) -> None:
    start(shop)
    reader, load = shop.traffic()
    try:
        began = time.monotonic()
        shop.new_version("v2")
        status = shop.wait_promoted()
        took = time.monotonic() - began
        reader.poll_once()
    finally:
        load.stop()
        reader.stop()
    # The route went 5 -> 20 -> 50 -> 100 and back to stable (which now runs v2), never backwards.
    weights = canary_weights(reader)
    assert [w for w in weights if w] == [5, 20, 50, 100], weights
    assert weights[-1] == 0 and shop.route_weights() == (100, 0)
    assert load.sent["canary"] > 0
    print(f"\npromoted in {took:.1f}s; requests stable={load.sent['stable']} canary={load.sent['canary']}")
    # The stable copy runs the new template; the canary is scaled down; the user's Deployment is untouched.
    stable = shop.get("deployment", "checkout-stable")
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == "example.com/checkout:v2"
    assert shop.get("deployment", "checkout-canary")["spec"]["replicas"] == 0
    target = shop.get("deployment", "checkout")
    assert {entry["manager"] for entry in target["metadata"].get("managedFields") or []}.isdisjoint(
        {"paved", ROUTE_FIELD_MANAGER})
    # Explained: analysis history with verdicts, events for every step, conditions.
    assert any(h["verdict"] == "Successful" for h in status["analysisHistory"])
    assert shop.condition("Ready")["status"] == "True"
    started = [e["message"] for e in shop.events("StepStarted")]
    assert len(started) == len(set(started)) >= 4, started


def test_canary_with_errors_is_rolled_back_within_one_interval(shop: Shop) -> None:
    start(shop)
    shop.canary.error_rate = 0.3
    reader = WeightReader(lambda: shop.route_weights(), period=0.25).start()  # finer, for the timing
    load = LoadGenerator(shop.stable.url, shop.canary.url, lambda: reader.current).start()
    try:
        shop.new_version("v2-broken")
        status = shop.wait_phase("RolledBack", timeout=60)
        reader.poll_once()
    finally:
        load.stop()
        reader.stop()
    assert load.first_canary_at is not None, "the canary never got traffic"
    back = reader.first(lambda seen: seen.canary == 0 and seen.at > load.first_canary_at)
    assert back is not None, canary_weights(reader)
    # The breach: the first moment Prometheus answers the metric with enough samples and a
    # value meeting the failure condition. One interval later at most, traffic is back.
    wall = time.time() - time.monotonic()  # monotonic -> wall clock
    # The replay ends one step after traffic was seen back: the operator's instant query ran
    # between two replay steps, so the step that shows what it saw may fall just after back.at.
    breach = first_breach(shop.server, load.first_canary_at + wall - 1, back.at + wall + REPLAY_STEP_S)
    assert breach is not None, "Prometheus never showed the breach"
    elapsed = back.at + wall - breach
    print(f"\nfirst canary request -> breach visible {breach - wall - load.first_canary_at:.1f}s -> 100% stable "
          f"{elapsed:.1f}s later; {status['message']}")
    # How fast is a figure for bench/bench_rollout.py (part B), not a wall-clock assertion here;
    # "at once" is the reason below: the failure condition, not failureLimit, ended the canary.
    assert max(canary_weights(reader)) == 5  # never reached the next step
    assert "success-rate" in status["message"] and "failure condition met" in status["message"]
    assert status["message"].startswith("rolled back at step ") and "(5%)" in status["message"]
    assert shop.route_weights() == (100, 0)
    assert shop.condition("Ready")["reason"] == "RolledBack"
    failed = [h for h in status["analysisHistory"] if h["verdict"] == "Failed"]
    assert failed and failed[-1]["value"] < 0.8
    wait_for(lambda: shop.get("deployment", "checkout-canary")["spec"]["replicas"] == 0, timeout=10,
             what="canary scaled down after the rollback")


def first_breach(server: PrometheusServer, start: float, end: float, step: float = REPLAY_STEP_S) -> float | None:
    """The first moment in [start, end] (wall clock) at which Prometheus would have answered the
    metric with at least minSamples samples and a value meeting the failure condition: the
    instant queries the operator makes, replayed over the window with query_range."""
    def series(query: str) -> dict[float, float]:
        result = server.api("query_range", query=query, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step}")["result"]
        return {float(t): float(v) for t, v in result[0]["values"]} if result else {}

    values, samples = series(SUCCESS_RATE["query"]), series(SUCCESS_RATE["samplesQuery"])
    for moment in sorted(values):
        # The operator counts samples as round(increase(...)): increase() extrapolates to fractions.
        if values[moment] < 0.8 and round(samples.get(moment, 0.0)) >= SUCCESS_RATE["minSamples"]:
            return moment
    return None


def test_canary_without_traffic_holds_instead_of_failing(shop: Shop) -> None:
    analysis = {"prometheus": {"address": shop.prometheus}, "interval": f"{INTERVAL_S:g}s",
                "metrics": [{**SUCCESS_RATE, "maxHolds": 3}]}
    start(shop, analysis=analysis)
    reader, load = shop.traffic(canary_gets_traffic=False)
    try:
        shop.new_version("v2-idle")
        status = shop.wait_phase("Paused", timeout=60)
        time.sleep(INTERVAL_S * 2)  # still paused, still no verdict against the canary
        status = shop.status()
    finally:
        load.stop()
        reader.stop()
    assert status["phase"] == "Paused", status["message"]
    assert "samples < minSamples" in status["message"] and "maxHolds" in status["message"], status["message"]
    assert status["canaryWeight"] == 5 and shop.route_weights() == (95, 5)
    assert all(h["verdict"] == "Inconclusive" for h in status["analysisHistory"]), status["analysisHistory"]
    assert not shop.events("RolledBack")
    # The user decides: abort through the CLI rolls back with the reason.
    cli = subprocess.run([str(Path(sys.executable).with_name("paved")), "rollout", "abort", "checkout", "-n",
                          shop.namespace], capture_output=True, text=True, check=False,
                         env={"KUBECONFIG": str(shop.kubeconfig), "PATH": "/usr/bin:/bin"})
    assert cli.returncode == 0, cli.stderr
    status = shop.wait_phase("RolledBack", timeout=30)
    assert "aborted by the user" in status["message"]
    assert shop.route_weights() == (100, 0)


def test_operator_killed_mid_rollout_resumes_at_the_same_step(shop: Shop, operator: OperatorProcess) -> None:
    start(shop, steps=seed_steps(pause="6s"))
    reader, load = shop.traffic()
    try:
        shop.new_version("v3")
        wait_for(lambda: shop.status().get("canaryWeight") == 20, timeout=60, interval=0.2, what="20%")
        operator.kill()  # SIGKILL in the middle of the 20% pause
        time.sleep(2)
        operator.start()
        status = shop.wait_promoted(timeout=120)
        reader.poll_once()
    finally:
        load.stop()
        reader.stop()
    weights = canary_weights(reader)
    assert [w for w in weights if w] == [5, 20, 50, 100], weights  # never a step backwards
    assert weights[-1] == 0
    started = [e["message"] for e in shop.events("StepStarted")]
    assert len(started) == len(set(started)), started  # no step acted twice
    assert status["message"].startswith("promoted")


def test_bad_input_gets_a_condition_naming_the_field_and_moves_no_traffic(shop: Shop) -> None:
    # Weights outside 0-100: the CRD schema refuses the object.
    bad_weight = shop.rollout("too-heavy", steps=[{"setWeight": 120}])
    refused = shop.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad_weight), check=False)
    assert refused.returncode != 0 and "spec.steps[0].setWeight" in refused.stderr, refused.stderr

    # A route that sends the Service's traffic straight to it (nothing Paved can split).
    direct = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
              "metadata": {"name": "direct", "namespace": shop.namespace},
              "spec": {"rules": [{"backendRefs": [{"name": "checkout", "port": 80}]}]}}
    shop.apply(direct)
    direct_before = shop.get("httproute", "direct")["metadata"]["resourceVersion"]

    cases = {
        "no-target": ({"targetRef": {"name": "missing"}}, "TargetNotFound", "spec.targetRef.name"),
        "no-ref": ({"trafficRouting": {"gatewayAPI": {"httpRoute": "direct"}}}, "RoutingInvalid",
                   "spec.trafficRouting.gatewayAPI.httpRoute"),
        "bad-query": ({"analysis": {"prometheus": {"address": shop.prometheus}, "metrics": [
            {**SUCCESS_RATE, "query": "sum(rate(http_requests_total[1m]"}]}}, "QueryRejected",
            "spec.analysis.metrics[0].query"),
        "bad-cel": ({"analysis": {"prometheus": {"address": shop.prometheus}, "metrics": [
            {**SUCCESS_RATE, "successCondition": "result >= "}]}}, "InvalidSpec",
            "spec.analysis.metrics[0].successCondition"),
    }
    for name, (spec, _, _) in cases.items():
        shop.apply(shop.rollout(name, **spec))
    for name, (_, reason, field) in cases.items():
        condition = wait_for(lambda n=name: (c := shop.condition("Ready", n)).get("reason") and c, timeout=30,
                             what=f"a Ready condition on {name}")
        assert condition["status"] == "False" and condition["reason"] == reason, (name, condition)
        assert condition["message"].startswith(field), (name, condition["message"])
        status = shop.status(name)
        assert "no traffic moved" in status["message"], status["message"]
        assert not status.get("canaryWeight"), status
        assert [e for e in shop.events(reason) if e["involvedObject"]["name"] == name], name
    # Nothing moved: no Paved workload for the refused rollouts, the routes untouched.
    assert not shop.exists("deployment", "checkout-canary")
    assert shop.get("httproute", "direct")["metadata"]["resourceVersion"] == direct_before
    assert shop.route_weights() == (100, 0)
    assert shop.get("httproute", "checkout")["metadata"]["generation"] == 1


def test_paved_never_calls_the_metadata_endpoint_or_the_api_server_for_a_tenant(shop: Shop, control_plane: Any) -> None:
    """A tenant's URLs that point at the cloud metadata endpoint or at the API server itself,
    however spelled, are refused before any request, naming the field; nothing moves."""
    api_port = control_plane.server.rsplit(":", 1)[1]
    hook = {"name": "notify", "type": "rollout"}
    cases = {  # rollout -> (its spec, the field named, what the message says)
        "imds": ({"analysis": {"prometheus": {"address": "http://169.254.169.254/latest/meta-data/iam?x="},
                               "metrics": [SUCCESS_RATE]}}, "spec.analysis.prometheus.address", "link-local"),
        "imds-decimal": ({"webhooks": [{**hook, "url": "http://2852039166/latest/api/token"}]},
                         "spec.webhooks[0].url", "resolves to 169.254.169.254"),
        "api-server": ({"analysis": {"prometheus": {"address": control_plane.server}, "metrics": [SUCCESS_RATE]}},
                       "spec.analysis.prometheus.address", "Kubernetes API server"),
        "api-server-by-name": ({"webhooks": [{**hook, "url": f"https://localhost:{api_port}/api/v1/secrets"}]},
                               "spec.webhooks[0].url", "Kubernetes API server"),
        "api-server-service": ({"webhooks": [{**hook, "url": "https://kubernetes.default.svc/api"}]},
                               "spec.webhooks[0].url", "Kubernetes API server"),
    }
    for name, (spec, _, _) in cases.items():
        shop.apply(shop.rollout(name, **spec))
    for name, (_, field, says) in cases.items():
        condition = wait_for(lambda n=name: (c := shop.condition("Ready", n)).get("reason") and c, timeout=30,
                             what=f"a Ready condition on {name}")
        assert (condition["status"], condition["reason"]) == ("False", "EndpointRefused"), (name, condition)
        assert condition["message"].startswith(f"{field}: ") and says in condition["message"], (name, condition["message"])
        assert "AnyEndpoint" in condition["message"]
        status = shop.status(name)
        assert "no traffic moved" in status["message"] and not status.get("canaryWeight"), status
    assert not shop.exists("deployment", "checkout-canary") and not shop.exists("deployment", "checkout-stable")
    assert shop.route_weights() == (100, 0)
    assert shop.get("httproute", "checkout")["metadata"]["generation"] == 1
