"""The demo's canary: a ProgressiveRollout a newcomer can watch promote and roll back.

There is no data plane in the local cluster (kwok pods have fake IPs), so, as in the e2e
tests, "the stable and the canary version" of `shop/checkout` are two loopback HTTP apps
(paved.dev.apps.VersionedApp) that count requests by version and status code. The demo
starts, detached and recorded in its state dir:

- the *traffic* process (``python -m paved.dev.demo_canary``): the two apps, and a load
  generator sending them `RATE` requests per second in the ratio the HTTPRoute
  `shop/checkout` says (re-read every second). Each app behaves like the image its copy
  runs (`checkout-stable`, `checkout-canary`): an image whose tag ends in ``-broken``
  answers 500 to half of its requests;
- Debian's Prometheus (paved.dev.prometheus) scraping both apps every second.

The example rollout (examples/04-progressive-rollout/rollout.yaml) is applied at demo
tempo (`at_demo_tempo`): its analysis points at that Prometheus, pauses are 10 s instead of
a minute, measurements every 2 s over 8 s windows (and 8 s of warmup per step), so one
rollout takes about a minute and a broken version is rolled back about 10 s after it gets
traffic.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paved.dev.processes import (
    PortTaken,
    ProcessRecord,
    free_port,
    is_alive,
    log_tail,
    port_in_use,
    port_taken,
    read_record,
    start_detached,
    start_with_free_port,
    stop_all,
)

__all__ = ["BROKEN_SUFFIX", "CanaryDemo", "at_demo_tempo", "canary_commands", "canary_state", "error_rate_for",
           "start_demo_canary", "stop_demo_canary"]

NAMESPACE, ROLLOUT, ROUTE, CONTAINER = "shop", "checkout", "checkout", "app"
IMAGE = "registry.example/checkout"
BROKEN_SUFFIX = "-broken"
BROKEN_ERROR_RATE = 0.5
RATE = 50.0  # requests per second asked (a loaded machine manages less): at 5%, about 10 canary requests per window

PAUSE = "10s"
INTERVAL = "2s"
WINDOW = "8s"
SUCCESS_RATE = {
    "name": "success-rate",
    "query": f'sum(rate(http_requests_total{{version="canary",code!~"5.."}}[{WINDOW}]))'
             f' / sum(rate(http_requests_total{{version="canary"}}[{WINDOW}]))',
    "successCondition": "result >= 0.95",
    "failureCondition": "result < 0.8",
    "failureLimit": 2,
    "minSamples": 5,
    "samplesQuery": f'sum(increase(http_requests_total{{version="canary"}}[{WINDOW}]))',
    # A step's first measurement waits one window: the window then holds only this version's
    # requests, never those of the version just rolled back (the apps' counters are per role).
    "warmup": WINDOW,
}
Log = Callable[[str], None]


def error_rate_for(image: str | None) -> float:
    """The share of requests a version answers with 500: by its image's tag."""
    tag = (image or "").rpartition("/")[2].partition(":")[2]
    return BROKEN_ERROR_RATE if tag.endswith(BROKEN_SUFFIX) else 0.0


def at_demo_tempo(objects: list[dict[str, Any]], prometheus_url: str, log: Log) -> None:
    """The example rollout, pointed at the demo's Prometheus and sped up (module docstring)."""
    for obj in objects:
        meta = obj.get("metadata") or {}
        if obj.get("kind") != "ProgressiveRollout" or (meta.get("namespace"), meta.get("name")) != (NAMESPACE, ROLLOUT):
            continue
        spec = obj["spec"]
        spec["steps"] = [step if "setWeight" in step else {"pause": {"duration": PAUSE}} for step in spec["steps"]]
        spec["analysis"] = {**spec["analysis"], "prometheus": {"address": prometheus_url}, "interval": INTERVAL,
                            "metrics": [dict(SUCCESS_RATE)]}
        log(f"rollout {NAMESPACE}/{ROLLOUT} at demo tempo: {PAUSE} pauses, measured every {INTERVAL} "
            f"by the demo's Prometheus {prometheus_url}")


def canary_commands(kubectl: str, paved: str) -> list[tuple[str, str]]:
    """(what, command) for the newcomer: watch, a healthy version, a failing one. Each run
    of a `set image` names a new tag (the time), so each starts a new rollout."""
    return [
        ("watch it: weight, each metric, the reason", f"{paved} rollout status {ROLLOUT} -n {NAMESPACE} --watch"),
        ("a healthy version (promoted step by step in about a minute)",
         f"{kubectl} -n {NAMESPACE} set image deployment/{ROLLOUT} {CONTAINER}={IMAGE}:$(date +%s)"),
        (f"a failing version (a tag ending in {BROKEN_SUFFIX} fails half its requests: rolled back in seconds)",
         f"{kubectl} -n {NAMESPACE} set image deployment/{ROLLOUT} {CONTAINER}={IMAGE}:$(date +%s){BROKEN_SUFFIX}"),
    ]


# --- the processes ------------------------------------------------------------------------------


@dataclass
class CanaryDemo:
    prometheus_url: str
    traffic: ProcessRecord


def start_demo_canary(workdir: Path, state_dir: Path, log: Log) -> CanaryDemo | None:
    """Start (or find running) the traffic process and Prometheus; None if Prometheus is missing."""
    from paved.dev.prometheus import PrometheusError, PrometheusProcess, start_prometheus

    traffic = read_record(workdir / "traffic.pid")
    prometheus = PrometheusProcess.find(workdir / "prometheus")
    if traffic is not None and is_alive(traffic) and prometheus is not None:
        log(f"canary demo apps and Prometheus already running ({prometheus.url})")
        return CanaryDemo(prometheus.url, traffic)
    stop_demo_canary(workdir)
    try:
        traffic, ports = start_with_free_port(lambda port: _start_traffic(workdir, state_dir, port))
    except (PortTaken, TrafficError) as error:
        log(f"the demo apps did not start, the canary demo is off: {error}")
        return None
    try:
        prometheus = start_prometheus(workdir / "prometheus", [f"127.0.0.1:{port}" for port in ports],
                                      die_with_parent=False)
    except PrometheusError as error:
        stop_all([traffic])
        log(f"Prometheus did not start, the canary demo is off: {error}")
        return None
    log(f"canary demo: apps stable 127.0.0.1:{ports[0]}, canary 127.0.0.1:{ports[1]} ({RATE:g} req/s, log "
        f"{workdir / 'traffic.log'}); Prometheus {prometheus.url} scrapes them")
    return CanaryDemo(prometheus.url, traffic)


def stop_demo_canary(workdir: Path) -> list[str]:
    from paved.dev.prometheus import PrometheusProcess

    stopped = []
    traffic = read_record(workdir / "traffic.pid")
    if traffic is not None and is_alive(traffic):
        stop_all([traffic])
        stopped.append("canary demo apps")
    (workdir / "traffic.pid").unlink(missing_ok=True)
    prometheus = PrometheusProcess.find(workdir / "prometheus")
    if prometheus is not None:
        prometheus.stop()
        stopped.append("prometheus")
    return stopped


def canary_state(workdir: Path) -> str:
    from paved.dev.prometheus import PrometheusProcess

    traffic = read_record(workdir / "traffic.pid")
    prometheus = PrometheusProcess.find(workdir / "prometheus")
    if traffic is None or not is_alive(traffic) or prometheus is None:
        return "not running"
    return f"apps and traffic running (pid {traffic.pid}, log {traffic.log}), Prometheus at {prometheus.url}"


# --- the traffic process --------------------------------------------------------------------------


def route_weights(route: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(stable, canary) weights of the rule listing `checkout-stable`, None without one."""
    for rule in ((route or {}).get("spec") or {}).get("rules") or []:
        refs = {ref.get("name"): int(ref.get("weight", 1)) for ref in rule.get("backendRefs") or []}
        if f"{ROLLOUT}-stable" in refs:
            return refs[f"{ROLLOUT}-stable"], refs.get(f"{ROLLOUT}-canary", 0)
    return None


def image_of(deployment: Mapping[str, Any] | None) -> str | None:
    containers = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    return next((c.get("image") for c in containers if c.get("name") == CONTAINER), None)


class TrafficError(RuntimeError):
    """The traffic process exited or did not serve; the message holds its log's tail."""


def _start_traffic(workdir: Path, state_dir: Path, stable_port: int,
                   timeout: float = 15.0) -> tuple[ProcessRecord, tuple[int, int]]:
    """The traffic process serving on `stable_port` and another free port, once both answer."""
    canary_port = free_port(avoid=lambda port: port == stable_port)
    argv = [sys.executable, "-m", "paved.dev.demo_canary", "--state-dir", str(state_dir),
            "--stable-port", str(stable_port), "--canary-port", str(canary_port)]
    log_file = workdir / "traffic.log"
    traffic = start_detached("demo-traffic", argv, log_file, workdir / "traffic.pid")
    deadline = time.monotonic() + timeout
    while not (port_in_use(stable_port) and port_in_use(canary_port)):
        if not is_alive(traffic) or time.monotonic() > deadline:
            stop_all([traffic])
            tail = log_tail(log_file)
            if port_taken(tail):
                raise PortTaken(f"demo traffic: port {stable_port} or {canary_port} taken")
            raise TrafficError(f"the traffic process did not serve; log {log_file}:\n{tail}")
        time.sleep(0.1)
    return traffic, (stable_port, canary_port)


def serve_traffic(state_dir: Path, stable_port: int, canary_port: int) -> None:
    """Run the two apps and the load generator until killed (the traffic process)."""
    from paved.dev.apps import LoadGenerator, VersionedApp, WeightReader
    from paved.dev.controlplane import ControlPlane

    plane = ControlPlane(state_dir)
    apps = {"stable": VersionedApp("stable", port=stable_port), "canary": VersionedApp("canary", port=canary_port)}
    for app in apps.values():
        app.loopback.start()

    def read() -> tuple[int, int] | None:
        for role, app in apps.items():
            app.error_rate = error_rate_for(image_of(plane.get_json(
                f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{ROLLOUT}-{role}")))
        return route_weights(plane.get_json(
            f"/apis/gateway.networking.k8s.io/v1/namespaces/{NAMESPACE}/httproutes/{ROUTE}"))

    reader = WeightReader(read, period=1.0).start()
    load = LoadGenerator(apps["stable"].url, apps["canary"].url, lambda: reader.current, rate=RATE,
                         max_requests=sys.maxsize, max_seconds=float("inf")).start()
    print(f"serving stable on {apps['stable'].url}, canary on {apps['canary'].url}", flush=True)
    while True:
        time.sleep(60)
        print(f"requests so far: {load.sent}; weights {reader.current}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--stable-port", type=int, required=True)
    parser.add_argument("--canary-port", type=int, required=True)
    args = parser.parse_args(argv)
    serve_traffic(args.state_dir, args.stable_port, args.canary_port)


if __name__ == "__main__":
    main()
