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
3. The status requests the API server served on agentidentities/status during that batch,
   by verb (APPLY: server-side apply; PATCH: merge or JSON patch), all writers together
   (the reconcile and the policy audit's PolicyCompliant).

At the largest size, with all N Ready:
4. one more: ``--probes`` single identities created one at a time (each waited for), p50/max.
5. at rest: mutating requests during an ``--idle`` window (default 60 s), counted twice:
   by the API server (apiserver_request_total for the resources only the operator writes
   here: paved.dev objects and their status, ServiceAccounts, Roles, RoleBindings, Events),
   and by the operator (paved_provider_api_calls_total{provider="kubernetes"}, its own client's
   calls; Kopf's own patches are only in the API server's count).
6. a restart (``--restart``): the operator is stopped and started again, and resumes every
   Ready identity: each resume is an idle reconcile. Status requests until it has
   reconciled them all (paved_reconcile_total), plus a few seconds for trailing writes.
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
    status_requests: dict[str, float] | None = None


def bodies(namespace: str, prefix: str, count: int) -> list[dict[str, Any]]:
    result = []
    for index in range(count):
        body = copy.deepcopy(TEMPLATE)
        body["metadata"] = {"name": f"{prefix}-{index:04d}", "namespace": namespace}
        result.append(body)
    return result


def operator_written(labels: dict[str, str]) -> bool:
    return labels.get("group") == GROUP or (labels.get("group", ""), labels.get("resource", "")) in OPERATOR_WRITTEN


def identity_status(labels: dict[str, str]) -> bool:
    return (labels.get("group"), labels.get("resource"), labels.get("subresource")) == (GROUP, PLURAL, "status")


def status_cell(requests: dict[str, float] | None) -> str:
    """e.g. "APPLY 200, PATCH 100" (the verbs of the agentidentities/status requests)."""
    if not requests:
        return "0"
    return ", ".join(f"{key.split()[0]} {value:.0f}" for key, value in sorted(requests.items()))


def run_size(env: BenchEnv, size: int, timeout: float) -> tuple[SizeRow, str]:
    namespace = f"bench-identity-{size}"
    env.create_namespace(namespace)
    env.rss.reset()
    row = SizeRow(size)
    status_before = apiserver_writes(env.plane, identity_status)
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
    time.sleep(3)  # the last PolicyCompliant writes
    row.status_requests = delta(apiserver_writes(env.plane, identity_status), status_before)
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


def restart(env: BenchEnv, existing: int, timeout: float) -> tuple[dict[str, float], float, float]:
    """Restart the operator with `existing` Ready identities: (status requests by verb, seconds
    until it had reconciled them all, reconciles counted)."""
    env.stop_operator()
    before = apiserver_writes(env.plane, identity_status)
    started = time.monotonic()
    env.start_operator()
    reconciled = 0.0
    while time.monotonic() - started < timeout:
        try:
            reconciled = sum(operator_counters(env.operator, "paved_reconcile_total", "result", kind="AgentIdentity").values())
        except OSError:  # metrics not served yet
            reconciled = 0.0
        if reconciled >= existing:
            break
        time.sleep(0.5)
    took = time.monotonic() - started
    time.sleep(5)  # trailing writes (the audit's first full pass)
    return delta(apiserver_writes(env.plane, identity_status), before), took, reconciled


def run(env: BenchEnv, sizes: list[int], idle: float, probes: int, restarts: bool = True) -> int:
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
        ("N", "create s", "p50 s", "p95 s", "max s", "all Ready s", "not Ready", "peak RSS MB", "status requests"),
        [(r.size, r.create_s, r.p50, r.p95, r.max, r.total, r.not_ready, r.peak_rss_mb, status_cell(r.status_requests))
         for r in rows],
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
    if restarts:
        existing = largest + probes
        log(f"restart: the operator resumes {existing} Ready identities")
        requests, took, reconciled = restart(env, existing, timeout=max(120.0, existing * 0.5))
        print(f"\nRestart with {existing} Ready identities (each resume an idle reconcile): {reconciled:.0f} reconciled "
              f"in {took:.1f}s; status requests: {status_cell(requests)}")
    now_mb = env.rss.sample() / 2**20
    print(f"\nOperator RSS now: {now_mb:.0f} MB; peak over the run: "
          f"{max(now_mb, *(r.peak_rss_mb for r in rows)):.0f} MB")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,100,1000", help="comma-separated N (default 1,100,1000)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of the at-rest window (0: skip)")
    parser.add_argument("--probes", type=int, default=5, help="single new identities at the largest size (0: skip)")
    parser.add_argument("--no-restart", dest="restart", action="store_false",
                        help="skip the restart at the largest size (status requests of idle reconciles)")
    parser.add_argument("--quick", action="store_true", help="sizes 1,100, 15 s idle, 3 probes")
    parser.add_argument("--state-dir", type=Path, help="use this (running or not) control plane instead of a fresh one")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.idle, args.probes = "1,100", min(args.idle, 15.0), min(args.probes, 3)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    with BenchEnv.start(state_dir=args.state_dir) as own:
        return run(own, sizes, args.idle, args.probes, args.restart)


if __name__ == "__main__":
    sys.exit(main())
