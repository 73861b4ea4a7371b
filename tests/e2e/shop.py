"""A namespace with a user's rollout world, for the e2e tests that run canaries: the user's
Deployment, Service and HTTPRoute (examples/04-progressive-rollout), two loopback apps
(`stable`, `canary`) scraped by a real Prometheus, and helpers to drive and read a
ProgressiveRollout. The `shop` fixture (tests/e2e/conftest.py) builds one per test."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from paved.dev.apps import LoadGenerator, VersionedApp, WeightReader
from fixtures.cluster import Kubectl
from fixtures.prometheus import PrometheusServer

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
        # managedFields too: kubectl hides them unless asked, and tests read who wrote what.
        return json.loads(self.kubectl("get", kind, name, "-n", self.namespace, "-o", "json", "--show-managed-fields").stdout)

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
