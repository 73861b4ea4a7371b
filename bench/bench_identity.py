"""Benchmark AgentIdentities: apply->Ready latency, operator RSS, API writes at rest.

    .venv/bin/python bench/bench_identity.py --sizes 1,100,1000     # what `scripts/bench identity` runs
    .venv/bin/python bench/bench_identity.py --quick                # sizes 1,100; 15 s idle

Real parts only (bench/harness.py): a fresh control plane in a temporary state dir and
`paved run` authenticated as deploy/'s ServiceAccount (the shared launcher).

For each size N, in a fresh namespace ``bench-identity-N`` (the previous size's namespace is
deleted first, so "existing" means exactly N):
1. apply->Ready: N copies of examples/02-agent-identity/pod-reader.yaml are created through
   the API (8 concurrent creates, the same request `kubectl apply` makes for a new object).
   Per object: from just before its create request to the watch event that shows it
   Ready=True (one watch over the namespace, no polling). p50/p95/max, and the wall time
   from the first create to the last Ready.
2. Peak RSS of the operator process (and any children) during that batch, sampled every 0.2 s.

At the largest size, with all N Ready:
3. one more: ``--probes`` single identities created one at a time (each waited for), p50/max.
4. at rest: mutating requests during an ``--idle`` window (default 60 s), counted twice:
   by the API server (apiserver_request_total for the resources only the operator writes
   here: paved.dev objects and their status, ServiceAccounts, Roles, RoleBindings, Events),
   and by the operator (paved_provider_api_calls_total{provider="kubernetes"}, its own client's
   calls; Kopf's own patches are only in the API server's count).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    BenchEnv,
    ReadyWatcher,
    apiserver_writes,
    create_objects,
    delta,
    latencies,
    load_example,
    log,
    operator_counters,
    print_table,
    summarize,
)

TEMPLATE = load_example("02-agent-identity/pod-reader.yaml")
GROUP, VERSION = TEMPLATE["apiVersion"].split("/")
PLURAL = "agentidentities"
OPERATOR_WRITTEN = {("", "serviceaccounts"), ("rbac.authorization.k8s.io", "roles"),
                    ("rbac.authorization.k8s.io", "rolebindings"), ("", "events"),
                    ("events.k8s.io", "events")}
READ_OPERATIONS = {"get", "list", "watch", "read"}


@dataclass
class SizeRow:
    size: int
    p50: float = math.nan
    p95: float = math.nan
    max: float = math.nan
    total: float = math.nan
    create_s: float = math.nan
    not_ready: int = 0
    peak_rss_mb: float = math.nan


def bodies(namespace: str, prefix: str, count: int) -> list[dict[str, Any]]:
    result = []
    for index in range(count):
        body = copy.deepcopy(TEMPLATE)
        body["metadata"] = {"name": f"{prefix}-{index:04d}", "namespace": namespace}
        result.append(body)
    return result


def operator_written(labels: dict[str, str]) -> bool:
    return labels.get("group") == GROUP or (labels.get("group", ""), labels.get("resource", "")) in OPERATOR_WRITTEN


def run_size(env: BenchEnv, size: int, timeout: float) -> tuple[SizeRow, str]:
    namespace = f"bench-identity-{size}"
    env.create_namespace(namespace)
    env.rss.reset()
    row = SizeRow(size)
    with ReadyWatcher(env.api, GROUP, VERSION, PLURAL, namespace) as watcher:
        first = time.monotonic()
        started = create_objects(env.api, bodies(namespace, "agent", size))
        row.create_s = time.monotonic() - first
        ready = watcher.wait(started, timeout)
    summary = summarize(latencies(started, ready))
    row.p50, row.p95, row.max = summary.p50, summary.p95, summary.max
    row.not_ready = size - len(ready)
    row.total = (max(ready.values()) - first) if ready else math.nan
    row.peak_rss_mb = env.rss.peak_mb
    log(f"N={size}: {len(ready)}/{size} Ready, p50 {row.p50:.3f}s, total {row.total:.1f}s, peak RSS {row.peak_rss_mb:.0f} MB")
    return row, namespace


def one_more(env: BenchEnv, namespace: str, probes: int, timeout: float) -> list[float]:
    """apply->Ready of single new identities, one at a time, next to the existing ones."""
    result = []
    with ReadyWatcher(env.api, GROUP, VERSION, PLURAL, namespace) as watcher:
        for index in range(probes):
            started = create_objects(env.api, bodies(namespace, f"probe{index}", 1))
            result.extend(latencies(started, watcher.wait(started, timeout)))
            time.sleep(0.5)
    return result


def idle_writes(env: BenchEnv, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    """(API server mutating requests by verb/resource, operator's own non-read kube calls) in ``seconds``.

    bench_identity_expiry.py measures its idle window with this too.
    """
    time.sleep(5)  # let the last status patches of the probes land
    server_before = apiserver_writes(env.plane, operator_written)
    own_before = operator_counters(env.operator, "paved_provider_api_calls_total", "operation", provider="kubernetes")
    time.sleep(seconds)
    server = delta(apiserver_writes(env.plane, operator_written), server_before)
    own = delta(operator_counters(env.operator, "paved_provider_api_calls_total", "operation", provider="kubernetes"), own_before)
    log(f"API server: {sum(server_before.values()):.0f} such writes since start (the counter works)")
    return server, {k: v for k, v in own.items() if k not in READ_OPERATIONS}


def run(env: BenchEnv, sizes: list[int], idle: float, probes: int) -> int:
    rows: list[SizeRow] = []
    namespace = None
    for size in sizes:
        if namespace is not None:
            log(f"deleting {namespace} (its identities and their children)")
            took = env.delete_namespace(namespace)
            log(f"deleted in {took:.1f}s")
        row, namespace = run_size(env, size, timeout=max(120.0, size * 0.5))
        rows.append(row)

    print("\nAgentIdentity apply->Ready (operator as deploy/'s ServiceAccount; latency per object from its create request to Ready=True)")
    print_table(
        ("N", "create s", "p50 s", "p95 s", "max s", "all Ready s", "not Ready", "peak RSS MB"),
        [(r.size, r.create_s, r.p50, r.p95, r.max, r.total, r.not_ready, r.peak_rss_mb) for r in rows],
    )
    failed = any(r.not_ready for r in rows)
    if namespace is None:
        return 1 if failed else 0

    largest = sizes[-1]
    if probes:
        probe = summarize(one_more(env, namespace, probes, timeout=60))
        print(f"\nOne new AgentIdentity with {largest} existing ({probe.count} probes, one at a time): "
              f"p50 {probe.p50:.3f}s, max {probe.max:.3f}s")
    if idle:
        existing = largest + probes
        log(f"idle window: {idle:.0f}s with {existing} Ready identities")
        server, own = idle_writes(env, idle)
        print(f"\nAt rest: mutating API requests in {idle:.0f}s with {existing} Ready identities")
        print(f"  API server (apiserver_request_total, paved.dev + SA/Role/RoleBinding/Event): "
              f"{sum(server.values()):.0f} {dict(sorted(server.items())) or ''}")
        print(f"  operator's own client (paved_provider_api_calls_total{{provider=\"kubernetes\"}}, non-read): "
              f"{sum(own.values()):.0f} {dict(sorted(own.items())) or ''}")
    now_mb = env.rss.sample() / 2**20
    print(f"\nOperator RSS now: {now_mb:.0f} MB; peak over the run: "
          f"{max(now_mb, *(r.peak_rss_mb for r in rows)):.0f} MB")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,100,1000", help="comma-separated N (default 1,100,1000)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of the at-rest window (0: skip)")
    parser.add_argument("--probes", type=int, default=5, help="single new identities at the largest size (0: skip)")
    parser.add_argument("--quick", action="store_true", help="sizes 1,100, 15 s idle, 3 probes")
    parser.add_argument("--state-dir", type=Path, help="use this (running or not) control plane instead of a fresh one")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.idle, args.probes = "1,100", min(args.idle, 15.0), min(args.probes, 3)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    with BenchEnv.start(state_dir=args.state_dir) as own:
        return run(own, sizes, args.idle, args.probes)


if __name__ == "__main__":
    sys.exit(main())
