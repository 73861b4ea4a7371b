"""ProgressiveRollout end to end, against real parts only.

- the real control plane with kwok (Deployments become Available) and the Gateway API CRDs;
- `paved run` as deploy/'s ServiceAccount (the `operator` fixture);
- a real Prometheus (Debian package) scraping two loopback apps, `stable` and `canary`,
  that count requests by version and status code (paved.dev.apps);
- a bounded load generator in the test that sends the apps traffic in the ratio the
  HTTPRoute says, re-reading the route's weights from the API server every second
  (tests/e2e/shop.py and the `shop` fixture, shared with the HA tests).

The canary steps 5 -> 20 -> 50 -> 100 with short pauses and a 2 s analysis interval, so a
whole rollout takes well under a minute.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from paved.dev.apps import LoadGenerator, WeightReader
from e2e.shop import (
    INTERVAL_S, REPLAY_STEP_S, ROUTE_FIELD_MANAGER, SUCCESS_RATE, Shop, canary_weights, seed_steps, start,
)
from fixtures.cluster import wait_for
from fixtures.operator import OperatorProcess
from fixtures.prometheus import PrometheusServer

# The session's operator runs these rollouts: `shop` does not start it, because the HA
# module shares `shop` with replicas of its own.
pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.usefixtures("operator")]


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
    managers = {entry["manager"] for entry in target["metadata"]["managedFields"]}
    assert managers and managers.isdisjoint({"paved", ROUTE_FIELD_MANAGER}), managers
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
