"""ExternalSecretRefs at scale, on real parts: cold start, the refresh after a restart, apply->Secret.

    .venv/bin/python bench/bench_secrets_scale.py            # 5,000 refs cold, 1,000 existing for latency
    .venv/bin/python bench/bench_secrets_scale.py --quick    # 200 refs cold, 50 existing, 20 s refresh
    .venv/bin/python bench/bench_secrets_scale.py --refs 5000 --existing 1000 --refresh 1m --probes 30
    .venv/bin/python bench/bench_secrets_scale.py --cold-only  # phase 2 alone (about 3 minutes), for A/B runs

Real parts only (bench/harness.py): a fresh control plane, a moto server holding `--secrets`
distinct Secrets Manager secrets (JSON with `username` and `password`), one SecretStore on it
(examples/03-external-secret/aws-store.yaml) and `paved run` as deploy/'s ServiceAccount.
Every ref is a copy of examples/03-external-secret/db-credentials.yaml on that store, reading
both properties of secret `i mod --secrets`, with `--refresh` as refreshInterval.

The operator runs with `--webhook-failure-policy Ignore`: with the default (Fail) the API server
refuses every paved.dev create while the operator, which serves the webhook, is stopped, and
phase 2 creates refs exactly then. Nothing else about the operator changes.

1. apply->Secret (`--existing` refs): the refs are created with the operator running and waited
   for (that time is printed too); then `--probes` new refs are created one at a time, spread
   over one refresh interval so that some land during a refresh of the existing ones. Per
   probe: from just before its create request to the watch event that shows its target
   Secret (one watch on Secrets), and to its Ready=True. The namespace is deleted afterwards.
2. cold start (`--refs` refs): the operator is stopped, the refs are created (never synced),
   the operator is started. Seconds from the start command to the last Ready=True (one watch),
   the operator's peak RSS over that time, and provider calls per second.
3. restart: with every ref Ready, a `--window` (default: two refresh intervals) of the running
   operator as a baseline, then the operator is restarted and the same window measured.

Provider calls are the operator's own count, `paved_provider_api_calls_total` of every provider
but `kubernetes`, read from its /metrics once a second (harness.CounterSampler). "max/s" is
the largest increase between two reads; "mean/s" is all calls of the window over its length.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

from harness import (
    BenchEnv,
    CounterSampler,
    ReadyWatcher,
    create_objects,
    delta,
    exists,
    latencies,
    load_example,
    log,
    operator_counters,
    print_table,
    summarize,
)
from paved.api.common import parse_duration
from paved.providers.secretstores import SERVICE_ACCOUNT_TOKENS_LABEL

REF_TEMPLATE = load_example("03-external-secret/db-credentials.yaml")
STORE_TEMPLATE = load_example("03-external-secret/aws-store.yaml")
GROUP, VERSION = REF_TEMPLATE["apiVersion"].split("/")
REF_PLURAL, STORE_PLURAL = "externalsecretrefs", "secretstores"
CALLS_METRIC = "paved_provider_api_calls_total"
LATENCY_NAMESPACE, COLD_NAMESPACE = "bench-esr-latency", "bench-esr-cold"
CYCLE_LINE = re.compile(r"^secret sync cycle: (\d+) ref\(s\)", re.M)  # logged by paved.engines.secretsync


# ------------------------------------------------------------------------------ objects


def remote_key(index: int) -> str:
    return f"bench/scale-{index:03d}"


def ref_bodies(namespace: str, prefix: str, count: int, distinct: int, refresh: str, first: int = 0) -> list[dict[str, Any]]:
    """``count`` refs named ``prefix-NNNNN`` (target Secret: the same name), spread over the remote keys."""
    bodies = []
    for index in range(first, first + count):
        body = copy.deepcopy(REF_TEMPLATE)
        name = f"{prefix}-{index:05d}"
        body["metadata"] = {"name": name, "namespace": namespace}
        body["spec"]["storeRef"] = {"name": STORE_TEMPLATE["metadata"]["name"]}
        body["spec"]["refreshInterval"] = refresh
        body["spec"]["target"] = {"name": name}
        for item in body["spec"]["data"]:
            item["remoteRef"]["key"] = remote_key(index % distinct)
        bodies.append(body)
    return bodies


def fill_moto(env: BenchEnv, distinct: int) -> None:
    """The remote secrets; the values are random and never printed."""
    assert env.moto is not None
    client = env.moto.client("secretsmanager")
    for index in range(distinct):
        client.create_secret(Name=remote_key(index),
                             SecretString=json.dumps({"username": f"app-{index}", "password": secrets.token_urlsafe(16)}))


def create_store(env: BenchEnv, namespace: str) -> None:
    """The namespace, the ServiceAccount the example store acts as, and the SecretStore on moto
    (the operator's PAVED_AWS_ENDPOINT_URL, whose STS accepts the account's token), Ready."""
    assert env.moto is not None
    # The store authenticates as a ServiceAccount: the namespace opts in (deploy/token-policy.yaml).
    env.create_namespace(namespace, labels={SERVICE_ACCOUNT_TOKENS_LABEL: "allowed"})
    store = copy.deepcopy(STORE_TEMPLATE)
    store["metadata"] = {"name": store["metadata"]["name"], "namespace": namespace}
    store["spec"]["provider"]["aws"]["region"] = env.moto.region
    account = store["spec"]["provider"]["aws"]["auth"]["serviceAccountRef"]["name"]
    env.plane.apply_objects([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}}])
    with ReadyWatcher(env.api, GROUP, VERSION, STORE_PLURAL, namespace) as watcher:
        started = create_objects(env.api, [store])
        if not watcher.wait(started, 60):
            raise SystemExit(f"SecretStore in {namespace} not Ready after 60s (operator log: {env.operator.log_path})")


def create_and_wait(env: BenchEnv, bodies: list[dict[str, Any]], timeout: float) -> float:
    """Create refs with the operator running; seconds from the first create to the last Ready."""
    namespace = bodies[0]["metadata"]["namespace"]
    with ReadyWatcher(env.api, GROUP, VERSION, REF_PLURAL, namespace) as watcher:
        first = time.monotonic()
        ready = watcher.wait(create_objects(env.api, bodies), timeout)
    if len(ready) < len(bodies):
        raise SystemExit(f"{len(bodies) - len(ready)} of {len(bodies)} refs in {namespace} not Ready after {timeout:.0f}s "
                         f"(operator log: {env.operator.log_path})")
    return max(ready.values()) - first


# ------------------------------------------------------------------------------ call rates


def provider_calls(env: BenchEnv) -> float:
    """The operator's calls to secret backends so far (every provider but the Kubernetes API)."""
    return sum(n for provider, n in operator_counters(env.operator, CALLS_METRIC, "provider").items() if provider != "kubernetes")


def kube_calls(env: BenchEnv) -> dict[str, float]:
    return operator_counters(env.operator, CALLS_METRIC, "operation", provider="kubernetes")


def nonzero(counts: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in sorted(counts.items()) if value}


@dataclass
class Window:
    label: str
    seconds: float
    calls: float
    max_per_second: float
    kube_calls: float  # the operator's own Kubernetes API calls in the window, for context
    cycles: list[int]  # refs taken by each sync-engine cycle in the window

    @property
    def mean_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else math.nan

    @property
    def ratio(self) -> float:
        return self.max_per_second / self.mean_per_second if self.mean_per_second else math.nan


def window(label: str, calls: CounterSampler, since: float, until: float, kube: float, cycles: list[int]) -> Window:
    steps = calls.increases(since, until)
    total = sum(increase for _, _, increase in steps)
    peak = max((increase for _, _, increase in steps), default=math.nan)
    return Window(label, until - since, total, peak, kube, cycles)


def log_offset(env: BenchEnv) -> int:
    """Where the operator's log (kept across restarts) ends now."""
    return env.operator.log_path.stat().st_size


def engine_cycles(env: BenchEnv, since_offset: int) -> list[int]:
    """Refs taken by each sync-engine cycle the operator logged after ``since_offset``."""
    with env.operator.log_path.open("rb") as operator_log:
        operator_log.seek(since_offset)
        return [int(refs) for refs in CYCLE_LINE.findall(operator_log.read().decode(errors="replace"))]


def describe_cycles(cycles: list[int]) -> str:
    if len(cycles) <= 4:
        return f"{len(cycles)} ({', '.join(map(str, cycles))} refs)" if cycles else "0"
    return f"{len(cycles)} ({min(cycles)}-{max(cycles)} refs)"


# ------------------------------------------------------------------------------ phases


@dataclass
class Latency:
    existing: int
    existing_ready_s: float
    secret: list[float]
    ready: list[float]
    probes: int


def latency_phase(env: BenchEnv, args: argparse.Namespace) -> Latency:
    create_store(env, LATENCY_NAMESPACE)
    log(f"creating {args.existing} refs with the operator running")
    took = create_and_wait(env, ref_bodies(LATENCY_NAMESPACE, "ref", args.existing, args.secrets, args.refresh), args.timeout)
    log(f"{args.existing} refs Ready in {took:.1f}s; {args.probes} probes over one refresh interval ({args.refresh_s:.0f}s)")
    secret_times: dict[str, float] = {}
    ready_times: dict[str, float] = {}
    started: dict[str, float] = {}
    with ReadyWatcher(env.api, "", "v1", "secrets", LATENCY_NAMESPACE, ready=exists) as secrets_seen, \
            ReadyWatcher(env.api, GROUP, VERSION, REF_PLURAL, LATENCY_NAMESPACE) as refs_ready:
        base = time.monotonic()
        for index, body in enumerate(ref_bodies(LATENCY_NAMESPACE, "probe", args.probes, args.secrets, args.refresh)):
            time.sleep(max(0.0, base + index * args.refresh_s / args.probes - time.monotonic()))
            one = create_objects(env.api, [body])
            started.update(one)
            secret_times.update(secrets_seen.wait(one, 60))  # the target Secret has the ref's name
            ready_times.update(refs_ready.wait(one, 60))
    missing = args.probes - len(secret_times)
    if missing:
        log(f"{missing} probe(s) got no Secret within 60s")
    log(f"deleting {LATENCY_NAMESPACE}")
    log(f"deleted in {env.delete_namespace(LATENCY_NAMESPACE):.1f}s")
    return Latency(args.existing, took, latencies(started, secret_times), latencies(started, ready_times), args.probes)


@dataclass
class ColdStart:
    refs: int
    create_s: float
    start_s: float  # the start command until /healthz answers
    all_ready_s: float
    peak_rss_mb: float
    calls: Window
    operations: dict[str, float]  # provider calls by operation (Secrets Manager)
    kube_operations: dict[str, float]  # the operator's own Kubernetes API calls by operation
    quartiles: tuple[float, ...]  # seconds after the start command until 25/50/75 % were Ready


def cold_start(env: BenchEnv, args: argparse.Namespace, calls: CounterSampler) -> ColdStart:
    create_store(env, COLD_NAMESPACE)
    env.stop_operator()
    offset = log_offset(env)
    log(f"operator stopped; creating {args.refs} refs")
    first = time.monotonic()
    names = create_objects(env.api, ref_bodies(COLD_NAMESPACE, "ref", args.refs, args.secrets, args.refresh))
    create_s = time.monotonic() - first
    log(f"created in {create_s:.1f}s; starting the operator")
    with ReadyWatcher(env.api, GROUP, VERSION, REF_PLURAL, COLD_NAMESPACE) as watcher:
        start = time.monotonic()
        env.start_operator()
        start_s = time.monotonic() - start
        ready = watcher.wait(names, args.timeout)
    if len(ready) < args.refs:
        raise SystemExit(f"cold start: {args.refs - len(ready)} of {args.refs} refs not Ready after {args.timeout:.0f}s "
                         f"(operator log: {env.operator.log_path})")
    done = max(ready.values())
    kube = nonzero(kube_calls(env))  # the new process counts from zero: all of them are the cold start's
    cold = ColdStart(
        args.refs, create_s, start_s, done - start, env.rss.peak_mb,
        window("cold start, until all Ready", calls, start, done, sum(kube.values()), engine_cycles(env, offset)),
        nonzero(operator_counters(env.operator, CALLS_METRIC, "operation", provider="aws-secretsmanager")), kube,
        ready_quartiles(sorted(ready.values()), start),
    )
    log(f"cold start: all {args.refs} Ready {cold.all_ready_s:.1f}s after the start command, peak RSS {cold.peak_rss_mb:.0f} MB")
    return cold


def ready_quartiles(times: list[float], start: float) -> tuple[float, ...]:
    """Where the time goes: start-up before the first, or a slow tail."""
    return tuple(times[min(len(times) - 1, len(times) * q // 4)] - start for q in (1, 2, 3))


def ready_progress(cold: ColdStart) -> str:
    return (f"  after the start command: /healthz {cold.start_s:.1f}s; Ready 25% {cold.quartiles[0]:.1f}s, "
            f"50% {cold.quartiles[1]:.1f}s, 75% {cold.quartiles[2]:.1f}s, 100% {cold.all_ready_s:.1f}s")


def restart(env: BenchEnv, args: argparse.Namespace, calls: CounterSampler) -> tuple[list[Window], float]:
    """Baseline window of the running operator, then the same window from a restart; and the RSS peak after it."""
    log(f"baseline: {args.window_s:.0f}s of the running operator")
    kube_before, offset = kube_calls(env), log_offset(env)
    since = time.monotonic()
    time.sleep(args.window_s)
    windows = [window("running (baseline)", calls, since, time.monotonic(), sum(delta(kube_calls(env), kube_before).values()),
                      engine_cycles(env, offset))]
    log(f"restarting the operator; measuring {args.window_s:.0f}s")
    since, offset = time.monotonic(), log_offset(env)
    env.stop_operator()
    env.start_operator()
    time.sleep(max(0.0, since + args.window_s - time.monotonic()))
    # The new process counts from zero: its total is the window's.
    windows.append(window("after a restart", calls, since, time.monotonic(), sum(kube_calls(env).values()),
                          engine_cycles(env, offset)))
    return windows, env.rss.peak_mb


# ------------------------------------------------------------------------------ report


def met(value: float, limit: float) -> str:
    return "-" if math.isnan(value) else "yes" if value <= limit else "NO"


def by_operation(counts: dict[str, float]) -> str:
    return ", ".join(f"{op} {n:g}" for op, n in counts.items()) or "none"


def cold_rows(cold: ColdStart) -> list[tuple[str, float, str, str]]:
    return [(f"cold start: {cold.refs} refs all Ready after the start command (s)", cold.all_ready_s, "< 60", met(cold.all_ready_s, 60)),
            ("cold start: peak operator RSS (MB)", cold.peak_rss_mb, "< 250", met(cold.peak_rss_mb, 250))]


def report(args: argparse.Namespace, latency: Latency, cold: ColdStart, windows: list[Window], rest_rss: float) -> None:
    secret = summarize(latency.secret)
    ready = summarize(latency.ready)
    baseline, restart = windows
    burst = restart.max_per_second / baseline.max_per_second if baseline.max_per_second else math.nan
    print(f"\nExternalSecretRef at scale: refs over {args.secrets} AWS Secrets Manager secrets (moto), one SecretStore, "
          f"refreshInterval {args.refresh}; operator as deploy/'s ServiceAccount")
    print_table(
        ("figure", "measured", "target", "met"),
        [
            *cold_rows(cold),
            ("after a restart: provider calls, max in one second / mean per second *", restart.ratio, "<= 3", met(restart.ratio, 3)),
            ("after a restart: max calls in one second / the same while running *", burst, "-", "-"),
            (f"apply->Secret p50 with {latency.existing} existing refs (s)", secret.p50, "< 1", met(secret.p50, 1)),
            (f"apply->Secret p95 with {latency.existing} existing refs (s)", secret.p95, "-", "-"),
        ],
    )

    print(f"\nProvider calls per second (the operator's paved_provider_api_calls_total, read every second; "
          f"window --window {args.window_s:.0f}s)")
    print_table(
        ("window", "s", "calls", "max/s", "mean/s", "max/mean", "engine cycles", "kube API calls"),
        [(w.label, w.seconds, int(w.calls), w.max_per_second, w.mean_per_second, w.ratio, describe_cycles(w.cycles),
          int(w.kube_calls))
         for w in [cold.calls, *windows]],
    )
    print("  * Paved batches: all refs of a store and interval refresh in ONE cycle on a per-store grid\n"
          "    (paved.secretsync.schedule), one burst of ceil(secrets/10) ListSecrets per refresh interval, so max/mean\n"
          "    is about the window's length over the number of refreshes in it, restart or not. A restart storm shows\n"
          "    as a busiest second after the restart above the running operator's (second row).")
    for label, counts in (("provider", cold.operations), ("kube API (operator's own client)", cold.kube_operations)):
        print(f"  cold start {label} calls by operation: {by_operation(counts)}")

    print(f"\nCold start: {cold.refs} refs created in {cold.create_s:.1f}s with the operator stopped; "
          f"the start command took {cold.start_s:.1f}s to /healthz; peak RSS after the restart: {rest_rss:.0f} MB")
    print(ready_progress(cold))
    print(f"\napply->Secret with {latency.existing} existing refs ({latency.existing} created with the operator running: "
          f"all Ready in {latency.existing_ready_s:.1f}s); {latency.probes} probes one at a time over one refresh interval")
    print_table(
        ("from create to", "probes", "p50 s", "p95 s", "max s"),
        [("target Secret exists", secret.count, secret.p50, secret.p95, secret.max),
         ("Ready=True", ready.count, ready.p50, ready.p95, ready.max)],
    )


def report_cold(cold: ColdStart) -> None:
    print_table(("figure", "measured", "target", "met"), cold_rows(cold))
    print(f"  engine cycles: {describe_cycles(cold.calls.cycles)}; provider calls: {int(cold.calls.calls)}")
    print(ready_progress(cold))
    print(f"  kube API (operator's own client) calls by operation: {by_operation(cold.kube_operations)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refs", type=int, default=5000, help="refs of the cold start (default 5000)")
    parser.add_argument("--existing", type=int, default=1000, help="existing refs of the latency probes (default 1000)")
    parser.add_argument("--secrets", type=int, default=100, help="distinct remote secrets (default 100)")
    parser.add_argument("--refresh", default="1m", help="refreshInterval of every ref (default 1m)")
    parser.add_argument("--probes", type=int, default=30, help="new refs created one at a time (default 30)")
    parser.add_argument("--window", type=float, help="seconds of the baseline and after-restart windows (default: two refresh intervals)")
    parser.add_argument("--timeout", type=float, help="seconds to wait for a batch of refs to be Ready (default: 300 + N/10)")
    parser.add_argument("--quick", action="store_true", help="200 refs, 50 existing, 20 secrets, 10 probes, 20s refresh")
    parser.add_argument("--cold-only", action="store_true", help="only the cold start (phase 2)")
    args = parser.parse_args(argv)
    if args.quick:
        args.refs, args.existing, args.secrets, args.probes, args.refresh = 200, 50, 20, 10, "20s"
    args.refresh_s = parse_duration(args.refresh, "--refresh").total_seconds()
    args.window_s = args.window or 2 * args.refresh_s
    args.timeout = args.timeout or 300 + max(args.refs, args.existing) / 10
    with BenchEnv.start(moto=True, extra_args=("--webhook-failure-policy", "Ignore")) as env:
        fill_moto(env, args.secrets)
        if args.cold_only:
            with CounterSampler(lambda: provider_calls(env), source=lambda: env.operator.pid) as calls:
                report_cold(cold_start(env, args, calls))
            return 0
        latency = latency_phase(env, args)
        # Started while the operator is up: a window's first step needs a sample before it.
        with CounterSampler(lambda: provider_calls(env), source=lambda: env.operator.pid) as calls:
            cold = cold_start(env, args, calls)
            windows, rest_rss = restart(env, args, calls)
        report(args, latency, cold, windows, rest_rss)
    return 0


if __name__ == "__main__":
    sys.exit(main())
