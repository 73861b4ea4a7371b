"""Analysis templates end to end (issue 18): a ProgressiveRollout measuring the metrics of an
AnalysisTemplate and a ClusterAnalysisTemplate, with arguments, against the real control plane
(CRDs, the admission webhook, `paved run` as deploy/'s ServiceAccount) and a real Prometheus
scraping the two loopback apps (the `shop` fixture).

Missing templates and an argument without a value are refused naming the field while the stable
version keeps all traffic; a template that could not be substituted safely is refused at
admission; a template edited while a canary runs does not change that run.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.cluster import Cluster
from e2e.shop import INTERVAL_S, SUCCESS_RATE, WARMUP_S, Shop
from fixtures.cluster import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.usefixtures("operator")]


def success_rate_template(shop: Shop, condition: str = "result >= 0.95") -> dict[str, Any]:
    """The shop's success rate with the version label as an argument (no default)."""
    metric = {**SUCCESS_RATE, "successCondition": condition,
              "query": SUCCESS_RATE["query"].replace('version="canary"', 'version="{{args.version}}"'),
              "samplesQuery": SUCCESS_RATE["samplesQuery"].replace('version="canary"', 'version="{{args.version}}"')}
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "AnalysisTemplate",
            "metadata": {"name": "success-rate", "namespace": shop.namespace},
            "spec": {"args": [{"name": "version"}], "metrics": [metric]}}


def traffic_template(name: str, query: str = 'sum(increase(http_requests_total{version=~"{{args.version}}"}[10s]))'
                     ) -> dict[str, Any]:
    """A platform-wide check: the canary receives requests at all (a regex matcher: the value is regex-escaped)."""
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "ClusterAnalysisTemplate", "metadata": {"name": name},
            "spec": {"args": [{"name": "version"}],
                     "metrics": [{"name": "canary-traffic", "query": query, "successCondition": "result > 0.0",
                                  "warmup": f"{WARMUP_S:g}s"}]}}


def templated_rollout(shop: Shop, cluster_template: str, traffic_args: list[dict[str, str]]) -> dict[str, Any]:
    return shop.rollout(analysis={
        "prometheus": {"address": shop.prometheus}, "interval": f"{INTERVAL_S:g}s",
        "templates": [{"templateName": "success-rate", "args": [{"name": "version", "value": "canary"}]},
                      {"templateName": cluster_template, "clusterScope": True, "args": traffic_args}]})


def refused_on(shop: Shop, field: str) -> dict[str, Any]:
    """Wait for Ready=False AnalysisTemplateInvalid naming `field`; the stable version keeps all traffic."""
    condition = wait_for(lambda: (c := shop.condition("Ready")).get("message", "").startswith(field + ":") and c,
                         timeout=30, what=f"Ready=False naming {field} (last: {shop.condition('Ready')})")
    assert (condition["status"], condition["reason"]) == ("False", "AnalysisTemplateInvalid"), condition
    assert "no traffic moved" in shop.status()["message"]
    assert shop.route_weights() == (100, 0)
    assert not shop.exists("deployment", "checkout-canary")
    return condition


def test_templates_with_arguments_refusals_and_a_run_that_keeps_its_snapshot(shop: Shop, cluster: Cluster) -> None:
    cluster_template = f"{shop.namespace}-traffic"  # cluster-scoped: one name per test namespace
    try:
        # Referenced before they exist (as a GitOps sync may apply them): admitted, refused naming the field.
        shop.apply(templated_rollout(shop, cluster_template, []))
        condition = refused_on(shop, "spec.analysis.templates[0].templateName")
        assert condition["message"] == (
            f"spec.analysis.templates[0].templateName: AnalysisTemplate {shop.namespace}/success-rate not found; "
            f"spec.analysis.templates[1].templateName: ClusterAnalysisTemplate {cluster_template} not found")

        # An argument outside a quoted string could inject PromQL: the API server refuses the template.
        unsafe = traffic_template(cluster_template, query="sum(up) > {{args.version}}")
        refused = cluster.refused(unsafe)
        assert "spec.metrics[0].query: an argument may only stand inside a quoted string" in refused.stderr

        # Both exist, but the ClusterAnalysisTemplate's argument has no default and no value.
        shop.apply(success_rate_template(shop), traffic_template(cluster_template))
        refused_on(shop, "spec.analysis.templates[1].args")

        shop.apply(templated_rollout(shop, cluster_template, [{"name": "version", "value": "canary"}]))
        shop.wait_scraped()
        shop.wait_status(lambda s: s.get("phase") == "Succeeded" and s["message"].startswith("stable at revision"),
                         "the bootstrap")
        assert shop.condition("Ready")["status"] == "True"

        reader, load = shop.traffic()
        try:
            shop.new_version("v2")
            running = shop.wait_status(lambda s: s.get("analysisTemplates") and (s.get("canaryWeight") or 0) > 0,
                                       "a canary run with its snapshot")
            # An impossible condition: had the running canary taken it, it would roll back.
            shop.apply(success_rate_template(shop, condition="result >= 2.0"))
            status = shop.wait_promoted()
        finally:
            load.stop()
            reader.stop()
    finally:
        shop.kubectl("delete", "clusteranalysistemplate", cluster_template, "--ignore-not-found")

    snapshot = status["analysisTemplates"]
    assert snapshot == running["analysisTemplates"]
    assert [(t["kind"], t["name"], t["generation"]) for t in snapshot["templates"]] == [
        ("AnalysisTemplate", "success-rate", 1), ("ClusterAnalysisTemplate", cluster_template, 1)]
    assert [m["successCondition"] for m in snapshot["metrics"]] == ["result >= 0.95", "result > 0.0"]
    assert 'version="canary"' in snapshot["metrics"][0]["query"]
    assert shop.get("analysistemplate", "success-rate")["metadata"]["generation"] == 2
    verdicts = {(h["metric"], h["verdict"]) for h in status["analysisHistory"]}
    assert {("success-rate", "Successful"), ("canary-traffic", "Successful")} <= verdicts, verdicts
    assert not any(v == "Failed" for _, v in verdicts), verdicts
