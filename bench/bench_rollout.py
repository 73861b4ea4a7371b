"""Benchmark ProgressiveRollouts: time to rollback, step timing precision, cost of N rollouts.

    .venv/bin/python bench/bench_rollout.py                 # N=200, 10 s analysis interval
    .venv/bin/python bench/bench_rollout.py --quick         # N=10, 2 s interval, short pauses
    .venv/bin/python bench/bench_rollout.py --rollouts 50 --interval 5s --state-dir /tmp/pd

Three parts:

A. Model (pure, instant): `paved.rollout.simulate` plays the state machine over synthetic
   time for the seed spec (interval 30 s / 1 m, failureLimit 2 / 5), with the metric turning
   bad in the middle of a step. Reported: seconds from the first bad measurement to 100% of
   traffic on stable, for a severe breach (`failureCondition`) and for a plain miss of the
   `successCondition` (counted up to failureLimit), next to Flagger's documented
   `interval x threshold` for the same settings.

B. Rollback, real parts (bench/harness.py: a control plane, `paved run` as deploy/'s
   ServiceAccount; a real Prometheus scraping the loopback apps of paved.dev.apps; a load
   generator following the HTTPRoute's weights). A canary serving 30% errors, with and
   without a failureCondition. Reported: first bad measurement (its `at` in
   status.analysisHistory) -> the route read back at 100/0 (polled every 0.1 s).

C. N concurrent rollouts (same parts): N Deployments (1 replica), Services, HTTPRoutes and
   rollouts (setWeight 10, pause P, setWeight 50, pause P, 100, promote; the success-rate
   analysis of part B on every step), bootstrapped, then all triggered at once. Reported:
   wall time until all are promoted; step precision = stepStartedAt of the step after a
   timed pause minus that pause's pauseUntil (from status, polled with one LIST every
   0.5 s; how long those LISTs take, and the machine's load average, tell how busy the API
   server and the machine were); the operator's own `paved_rollout_tick_lateness_seconds` (a tick's start after the time
   the machine asked for) and `paved_rollout_tick_duration_seconds` (bucket bounds); operator CPU seconds and CPU% (psutil) during the rollouts and in
   an idle window after them; peak RSS.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))

from harness import BenchEnv, log, percentile, print_table  # noqa: E402

from paved.dev.apps import LoadGenerator, VersionedApp, WeightReader  # noqa: E402
from fixtures.prometheus import start_prometheus  # noqa: E402
from paved.api.common import parse_duration, parse_rfc3339  # noqa: E402
from paved.rollout.simulate import Sample, Scenario, example_spec, simulate  # noqa: E402

QUERY = ('sum(rate(http_requests_total{version="canary",code!~"5.."}[10s]))'
         ' / sum(rate(http_requests_total{version="canary"}[10s]))')
SAMPLES_QUERY = 'sum(increase(http_requests_total{version="canary"}[10s]))'


def metric(interval: str, *, severe: bool = True, failure_limit: int = 2) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "success-rate", "query": QUERY, "successCondition": "result >= 0.95",
                            "failureLimit": failure_limit, "minSamples": 5, "samplesQuery": SAMPLES_QUERY,
                            "interval": interval}
    if severe:
        body["failureCondition"] = "result < 0.8"
    return body


def epoch(text: str) -> float:
    moment = parse_rfc3339(text)
    assert moment is not None, text
    return moment.timestamp()


# ------------------------------------------------------------------------------ A: model


def model_rows() -> list[list[Any]]:
    rows = []
    for interval in ("30s", "1m"):
        seconds = parse_duration(interval).total_seconds()
        for limit in (2, 5):
            row: list[Any] = [interval, limit]
            for severe in (True, False):
                spec = example_spec()
                for step in spec["steps"]:  # long pauses: the failures accumulate inside one step
                    if "pause" in step:
                        step["pause"]["duration"] = "10m"
                spec["analysis"]["interval"] = interval
                spec["analysis"]["metrics"][0]["failureLimit"] = limit
                if not severe:
                    spec["analysis"]["metrics"][0].pop("failureCondition")
                bad_from = 100.0  # in the middle of the 5% step's pause

                def source(t: float, weight: int, bad_from: float = bad_from) -> Sample:
                    return Sample(0.7 if t >= bad_from else 0.99, 500)

                result = simulate(spec, Scenario(metrics={"success-rate": source}, until=3600))
                assert result.phase == "RolledBack", result.status.get("message")
                first_bad = next(t for t, a in ((tick.t, tick) for tick in result.ticks)
                                 if any(h["verdict"] == "Failed" for h in a.decision.status.get("analysisHistory") or []))
                back = next(tick.t for tick in result.ticks if tick.t >= first_bad and tick.route.canary == 0)
                row.append(back - first_bad)
            row.append(seconds * limit)
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------ B/C: real parts


@dataclass
class Cluster:
    env: BenchEnv
    prometheus: str
    stable: VersionedApp
    canary: VersionedApp
    list_seconds: list[float] = field(default_factory=list)  # how long the API server takes to LIST

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = self.env.plane.kubectl(*args, input=input, check=False)
        if result.returncode:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr}")
        return str(result.stdout)

    def apply(self, documents: list[dict[str, Any]]) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=bench", "-f", "-",
                     input="\n---\n".join(json.dumps(d) for d in documents))

    def list_rollouts(self, namespace: str) -> dict[str, dict[str, Any]]:
        from kubernetes import client

        started = time.monotonic()
        items = client.CustomObjectsApi(self.env.api).list_namespaced_custom_object(
            "paved.dev", "v1alpha1", namespace, "progressiverollouts")["items"]
        self.list_seconds.append(time.monotonic() - started)
        return {item["metadata"]["name"]: item.get("status") or {} for item in items}

    def route_weights(self, namespace: str, name: str) -> tuple[int, int] | None:
        from kubernetes import client

        route = client.CustomObjectsApi(self.env.api).get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", name)
        for rule in route["spec"]["rules"]:
            refs = {ref["name"]: ref.get("weight", 1) for ref in rule.get("backendRefs") or []}
            if f"{name}-stable" in refs:
                return refs[f"{name}-stable"], refs.get(f"{name}-canary", 0)
        return None


def app_objects(namespace: str, name: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                  "template": {"metadata": {"labels": {"app": name}},
                               "spec": {"containers": [{"name": "app", "image": "example.com/app:v1"}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
         "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name, "namespace": namespace},
         "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
             {"name": f"{name}-stable", "port": 80, "weight": 100}, {"name": f"{name}-canary", "port": 80, "weight": 0}]}]}},
        {"apiVersion": "paved.dev/v1alpha1", "kind": "ProgressiveRollout", "metadata": {"name": name, "namespace": namespace},
         "spec": {"targetRef": {"name": name}, "service": {"name": name, "port": 80},
                  "trafficRouting": {"gatewayAPI": {"httpRoute": name}}, **spec}},
    ]


def trigger(cluster: Cluster, namespace: str, names: list[str], tag: str) -> None:
    """A new pod template on every target, 8 at a time (as a GitOps sync of many apps would)."""
    from concurrent.futures import ThreadPoolExecutor

    from kubernetes import client

    apps = client.AppsV1Api(cluster.env.api)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": f"example.com/app:{tag}"}]}}}}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: apps.patch_namespaced_deployment(name, namespace, patch), names))


def wait_all(cluster: Cluster, namespace: str, names: list[str], done: Any, timeout: float,
             observe: Any = None, period: float = 0.5) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = cluster.list_rollouts(namespace)
        if observe:
            observe(statuses)
        if all(done(statuses.get(name) or {}) for name in names):
            return statuses
        if time.monotonic() > deadline:
            stuck = {n: (statuses.get(n) or {}).get("message") for n in names if not done(statuses.get(n) or {})}
            raise RuntimeError(f"{len(stuck)} rollouts not done after {timeout:.0f}s, e.g. {list(stuck.items())[:3]}")
        time.sleep(period)


def bootstrapped(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Succeeded"


def promoted(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Succeeded" and str(status.get("message", "")).startswith("promoted")


def rollback_runs(cluster: Cluster, interval: str) -> list[list[Any]]:
    """Part B: a 30%-error canary, with and without a failureCondition."""
    rows = []
    seconds = parse_duration(interval).total_seconds()
    for severe, limit in ((True, 2), (False, 2), (False, 3)):
        namespace = f"bench-rollback-{'severe' if severe else 'limit'}-{limit}-{int(time.time()) % 100000}"
        cluster.env.create_namespace(namespace)
        steps = [{"setWeight": 20}, {"pause": {"duration": "10m"}}]
        spec = {"steps": steps, "analysis": {"prometheus": {"address": cluster.prometheus}, "interval": interval,
                                             "metrics": [metric(interval, severe=severe, failure_limit=limit)]}}
        cluster.apply(app_objects(namespace, "shop", spec))
        wait_all(cluster, namespace, ["shop"], bootstrapped, 120)
        cluster.canary.error_rate = 0.3
        reader = WeightReader(lambda ns=namespace: cluster.route_weights(ns, "shop"), period=0.1).start()
        load = LoadGenerator(cluster.stable.url, cluster.canary.url, lambda: reader.current, rate=40).start()
        try:
            trigger(cluster, namespace, ["shop"], "broken")
            status = wait_all(cluster, namespace, ["shop"], lambda s: s.get("phase") == "RolledBack",
                              timeout=seconds * (limit + 4) + 60)["shop"]
            reader.poll_once()
        finally:
            load.stop()
            reader.stop()
            cluster.canary.error_rate = 0.0
        wall = time.time() - time.monotonic()
        failed = [epoch(h["at"]) for h in status.get("analysisHistory") or [] if h["verdict"] == "Failed"]
        back = next((seen.at + wall for seen in reader.history if seen.canary == 0 and failed and seen.at + wall > failed[0]),
                    math.nan)
        first_bad = failed[0] if failed else math.nan
        flagger = seconds * limit
        rows.append([interval, "failureCondition" if severe else "successCondition", limit, back - first_bad,
                     flagger, status.get("message", "")[:90]])
        cluster.env.delete_namespace(namespace)
    return rows


@dataclass
class StepTimes:
    """stepStartedAt / pauseUntil per (rollout, step index), as seen in status."""

    seen: dict[tuple[str, int], tuple[str | None, str | None]] = field(default_factory=dict)

    def observe(self, statuses: dict[str, dict[str, Any]]) -> None:
        for name, status in statuses.items():
            index = status.get("currentStepIndex")
            if index is None or status.get("phase") not in ("Progressing", "Paused", "Promoting"):
                continue
            self.seen[(name, int(index))] = (status.get("stepStartedAt"), status.get("pauseUntil"))

    def lateness(self) -> list[float]:
        """For every timed pause: the start of the next step seen after it - the pause's end
        (a setWeight step and the pause after it start in the same tick, so the step right
        after a pause is not always seen on its own)."""
        late = []
        for (name, index), (_, pause_until) in self.seen.items():
            later = sorted(i for (n, i) in self.seen if n == name and i > index)
            following = self.seen[(name, later[0])] if later else None
            if pause_until and following and following[0]:
                late.append(epoch(following[0]) - epoch(pause_until))
        return late


def histogram_quantiles(text: str, name: str) -> tuple[float, float, int]:
    """(p50, p99) upper bucket bounds and the count of a Prometheus histogram."""
    buckets = [(float("inf") if le == "+Inf" else float(le), float(v))
               for le, v in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M)]
    if not buckets:
        return math.nan, math.nan, 0
    total = buckets[-1][1]

    def quantile(q: float) -> float:
        return next((le for le, count in buckets if count >= q * total), math.nan)

    return quantile(0.5), quantile(0.99), int(total)


def concurrency_run(cluster: Cluster, count: int, interval: str, pause: str, idle: float) -> list[Any]:
    """Part C: `count` rollouts at once."""
    namespace = f"bench-rollouts-{count}-{int(time.time()) % 100000}"
    cluster.env.create_namespace(namespace)
    names = [f"app-{i:03d}" for i in range(count)]
    spec = {"steps": [{"setWeight": 10}, {"pause": {"duration": pause}}, {"setWeight": 50}, {"pause": {"duration": pause}}],
            "analysis": {"prometheus": {"address": cluster.prometheus}, "interval": interval,
                         "metrics": [metric(interval)]}}
    documents = [doc for name in names for doc in app_objects(namespace, name, spec)]
    started = time.monotonic()
    for chunk in range(0, len(documents), 200):
        cluster.apply(documents[chunk:chunk + 200])
    wait_all(cluster, namespace, names, bootstrapped, timeout=120 + count)
    bootstrap = time.monotonic() - started
    log(f"{count} rollouts bootstrapped in {bootstrap:.1f}s")
    process = psutil.Process(cluster.env.operator.pid or 0)
    cluster.env.rss.reset()
    before_metrics = cluster.env.operator.metrics()
    cpu_before = sum(process.cpu_times()[:2])
    times = StepTimes()
    cluster.list_seconds.clear()
    started = time.monotonic()
    trigger(cluster, namespace, names, "v2")
    wait_all(cluster, namespace, names, promoted, timeout=300 + 2 * count, observe=times.observe)
    wall = time.monotonic() - started
    cpu = sum(process.cpu_times()[:2]) - cpu_before
    log(f"{count} rollouts promoted in {wall:.1f}s")
    after_metrics = cluster.env.operator.metrics()
    p50, p99, ticks = histogram_quantiles(after_metrics, "paved_rollout_tick_lateness_seconds")
    d50, d99, _ = histogram_quantiles(after_metrics, "paved_rollout_tick_duration_seconds")
    _, _, ticks_before = histogram_quantiles(before_metrics, "paved_rollout_tick_lateness_seconds")
    idle_cpu = math.nan
    if idle > 0:
        cpu_idle_before = sum(process.cpu_times()[:2])
        time.sleep(idle)
        idle_cpu = (sum(process.cpu_times()[:2]) - cpu_idle_before) / idle * 100
    late = times.lateness()
    listing = list(cluster.list_seconds)
    row = [count, bootstrap, wall, len(late), percentile(late, 50), percentile(late, 95), max(late, default=math.nan),
           p50, p99, ticks - ticks_before, d50, d99, cpu, cpu / wall * 100, idle_cpu, cluster.env.rss.peak_mb,
           percentile(listing, 50), percentile(listing, 95), psutil.getloadavg()[0]]
    cluster.env.delete_namespace(namespace, timeout=300 + count)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", default="200", help="comma-separated N for part C (default 200)")
    parser.add_argument("--interval", default="10s", help="analysis interval for parts B and C (default 10s)")
    parser.add_argument("--pause", default="20s", help="pause steps in part C (default 20s)")
    parser.add_argument("--idle", type=float, default=30.0, help="idle window after part C, seconds (0: skip)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: model,rollback,concurrency")
    parser.add_argument("--quick", action="store_true", help="N=10, 2 s interval, 5 s pauses, 10 s idle")
    parser.add_argument("--state-dir", type=Path, help="use this (running or not) control plane")
    args = parser.parse_args()
    if args.quick:
        args.rollouts, args.interval, args.pause, args.idle = "10", "2s", "5s", 10.0
    skip = set(filter(None, args.skip.split(",")))

    if "model" not in skip:
        print("\nA. model: first bad measurement -> 100% on stable (seconds; simulated, stable at full scale)")
        print_table(["interval", "limit", "paved failureCondition", "paved successCondition", "flagger"], model_rows())
    if {"rollback", "concurrency"} <= skip:
        return 0

    with BenchEnv.start(state_dir=args.state_dir) as env, \
            VersionedApp("stable") as stable, VersionedApp("canary") as canary:
        server = start_prometheus(env.workdir / "prometheus", [stable.address, canary.address], "1s")
        cluster = Cluster(env, str(server), stable, canary)
        try:
            if "rollback" not in skip:
                rows = rollback_runs(cluster, args.interval)
                print("\nB. real parts: canary with 30% errors, first bad measurement -> route at 100/0 (seconds)")
                print_table(["interval", "judged by", "limit", "paved", "flagger", "message"], rows)
            if "concurrency" not in skip:
                background = LoadGenerator(stable.url, canary.url, lambda: (50, 50), rate=40, max_requests=10**6,
                                           max_seconds=3600).start()
                rows = []
                try:
                    for count in (int(n) for n in args.rollouts.split(",")):
                        rows.append(concurrency_run(cluster, count, args.interval, args.pause, args.idle))
                finally:
                    background.stop()
                print(f"\nC. real parts: N concurrent rollouts (steps 10%, pause {args.pause}, 50%, pause, 100%; "
                      f"analysis every {args.interval})")
                print_table(["N", "bootstrap s", "all promoted s", "pauses", "step late p50", "p95", "max",
                             "tick late p50<=", "p99<=", "ticks", "tick dur p50<=", "p99<=", "cpu s", "cpu %", "idle cpu %", "peak RSS MB", "LIST p50 s", "p95", "load1"], rows)
        finally:
            server.process.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
