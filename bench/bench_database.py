"""Benchmark DatabaseIntents: apply->Ready latency, operator RSS, AWS calls in steady state.

    .venv/bin/python bench/bench_database.py --sizes 1,100,500     # what `scripts/bench database` runs
    .venv/bin/python bench/bench_database.py --sizes 1,20 --idle 30 --drift-interval 5s   # quick

Real parts only (bench/harness.py): a fresh control plane in a temporary state dir (or
--state-dir), a moto server, and `paved run` authenticated as deploy/'s ServiceAccount and
pointed at moto through PAVED_AWS_ENDPOINT_URL.

For each size N, in a fresh namespace ``bench-db-N``:
1. apply->Ready: N copies of examples/01-database/orders-db.yaml (deletionPolicy Delete) are
   created through the API (8 concurrent creates). Per intent: from just before its create
   to the watch event that shows it Ready=True. p50/p95/max, and the wall time from the
   first create to the last Ready. Each intent is, on moto, a DB subnet group in the VPC
   that stands for the cluster's (paved.dev.moto.MotoServer.cluster_network, given to the RDS
   Composition as `paved dev demo` does), a client and a database security group and an RDS
   instance; in the cluster a connection Secret and a SecurityGroupPolicy in orders-app.
2. Peak RSS of the operator process during the batch (sampled every 0.2 s).
3. Steady state: every intent checks its cloud resources every --drift-interval (default
   "auto": N/5 s, at least 5 s, so that the checks stay at <= 5 per second on a small
   machine). After 2.2 intervals of warm-up (the first check of an intent is spread over up
   to two intervals), paved_provider_api_calls_total is read from /metrics before and after an
   --idle window (at least 1.5 intervals). AWS calls per intent per hour are normalised to
   the default 10 min interval (the calls per check do not depend on the interval); the
   target is at most 6 describe_db_instances and 0 modify_db_instance. The operator's own
   Kubernetes API calls are shown alongside, normalised the same way. A second table gives
   the AWS calls per intent per drift interval at rest, by operation, the network's included
   (target: one describe per cloud resource, i.e. describe_db_instances 1,
   describe_db_subnet_groups 1, describe_security_groups 2, plus list_tags_for_resource 1 for
   the subnet group's owner tag, and no write at all); the
   jitter that spreads checks stretches each interval by up to 10 %, so a figure a little
   under 1 is one describe per check.
4. Deleting the namespace (every intent's finalizer deletes its instance): seconds until gone.
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
    create_objects,
    delta,
    latencies,
    load_example,
    log,
    operator_counters,
    print_table,
    summarize,
)

from paved.api.common import parse_duration
from paved.dev.demo import use_cluster_network

SEED = load_example("01-database/orders-db.yaml")
GROUP, VERSION = SEED["apiVersion"].split("/")
PLURAL = "databaseintents"
ALLOWED_NAMESPACE = "orders-app"  # the seed's allowFrom
DEFAULT_INTERVAL_S = 600.0
COUNTER = "paved_provider_api_calls_total"
AWS_PROVIDERS = ("aws-rds", "aws-db-subnet-group", "aws-security-group")
# What a check at rest may call: one describe per cloud resource (and the subnet group's tags). Anything else is a write.
DESCRIBES = ("describe_db_instances", "describe_db_subnet_groups", "describe_security_groups", "list_tags_for_resource")


@dataclass
class Row:
    size: int
    p50: float = math.nan
    p95: float = math.nan
    max: float = math.nan
    total: float = math.nan
    not_ready: int = 0
    peak_rss_mb: float = math.nan
    interval: str = ""
    describe_h: float = math.nan
    modify_h: float = math.nan
    other_aws_h: float = math.nan
    kube_h: float = math.nan
    delete_s: float = math.nan
    per_check: dict[str, float] | None = None  # AWS operation -> calls per intent per drift interval at rest


def drift_interval_for(size: int, requested: str) -> str:
    """`requested`, or for "auto" an interval giving at most 5 drift checks per second in total."""
    return requested if requested != "auto" else f"{max(5, round(size / 5))}s"


def bodies(namespace: str, count: int, interval: str) -> list[dict[str, Any]]:
    result = []
    for index in range(count):
        body = copy.deepcopy(SEED)
        body["metadata"] = {"name": f"db-{index:04d}", "namespace": namespace}
        body["spec"].update(driftCheckInterval=interval, deletionPolicy="Delete")
        result.append(body)
    return result


def run_size(env: BenchEnv, size: int, args: argparse.Namespace) -> Row:
    row = Row(size, interval=drift_interval_for(size, args.drift_interval))
    namespace = f"bench-db-{size}"
    env.create_namespace(namespace)
    env.rss.reset()
    with ReadyWatcher(env.api, GROUP, VERSION, PLURAL, namespace) as watcher:
        started = create_objects(env.api, bodies(namespace, size, row.interval))
        ready = watcher.wait(started, timeout=args.timeout)
    summary = summarize(latencies(started, ready))
    row.p50, row.p95, row.max = summary.p50, summary.p95, summary.max
    row.total = max(ready.values(), default=math.nan) - min(started.values())
    row.not_ready = size - len(ready)
    row.peak_rss_mb = env.rss.peak_mb
    log(f"N={size}: {len(ready)}/{size} Ready, p50 {row.p50:.2f}s, max {row.max:.2f}s, peak RSS {row.peak_rss_mb:.0f} MB")

    interval_s = parse_duration(row.interval).total_seconds()
    time.sleep(2.2 * interval_s)
    window = max(args.idle, 1.5 * interval_s)
    aws_before = aws_counters(env)
    kube_before = operator_counters(env.operator, COUNTER, "operation", provider="kubernetes")
    time.sleep(window)
    aws = delta(aws_counters(env), aws_before)
    kube = delta(operator_counters(env.operator, COUNTER, "operation", provider="kubernetes"), kube_before)
    per_check = interval_s / window / size
    row.per_check = {operation: aws.get(operation, 0.0) * per_check for operation in DESCRIBES}
    row.per_check["writes"] = sum(count for operation, count in aws.items() if operation not in DESCRIBES) * per_check
    per_intent_hour = 3600.0 / window / size * (interval_s / DEFAULT_INTERVAL_S)
    row.describe_h = aws.pop("describe_db_instances", 0.0) * per_intent_hour
    row.modify_h = aws.pop("modify_db_instance", 0.0) * per_intent_hour
    row.other_aws_h = sum(aws.values()) * per_intent_hour
    row.kube_h = sum(kube.values()) * per_intent_hour
    log(f"N={size}: steady state over {window:.0f}s at {row.interval}: {row.describe_h:.2f} describes and "
        f"{row.modify_h:.2f} modifies per intent-hour at 10m; other AWS calls {aws}; Kubernetes calls {kube}")

    row.delete_s = env.delete_namespace(namespace, timeout=args.timeout)
    return row


HEADERS = ("N", "p50 s", "p95 s", "max s", "all Ready s", "not Ready", "peak RSS MB", "drift every",
           "describe/int/h", "modify/int/h", "other AWS/int/h", "k8s/int/h", "delete all s")


def aws_counters(env: BenchEnv) -> dict[str, float]:
    """AWS calls so far by operation, over every provider of a database's cloud resources."""
    counts: dict[str, float] = {}
    for provider in AWS_PROVIDERS:
        for operation, count in operator_counters(env.operator, COUNTER, "operation", provider=provider).items():
            counts[operation] = counts.get(operation, 0.0) + count
    return counts


CHECK_HEADERS = ("N", "drift every", *DESCRIBES, "writes")


def check_rows(rows: list[Row]) -> list[tuple[Any, ...]]:
    return [(r.size, r.interval, *((r.per_check or {}).get(name, math.nan) for name in (*DESCRIBES, "writes"))) for r in rows]


def table_rows(rows: list[Row]) -> list[tuple[Any, ...]]:
    return [(r.size, r.p50, r.p95, r.max, r.total, r.not_ready, r.peak_rss_mb, r.interval,
             r.describe_h, r.modify_h, r.other_aws_h, r.kube_h, r.delete_s) for r in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,100,500", help="comma-separated numbers of intents (default 1,100,500)")
    parser.add_argument("--state-dir", type=Path, help="reuse the control plane of this state dir (left running)")
    parser.add_argument("--drift-interval", default="auto", help='spec.driftCheckInterval during the run (default "auto": N/5 s, at least 5s)')
    parser.add_argument("--idle", type=float, default=60.0, help="steady-state window in seconds, at least 1.5 intervals (default 60)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up waiting for Ready or deletion after this (s)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]

    rows: list[Row] = []
    with BenchEnv.start(state_dir=args.state_dir, moto=True) as env:
        assert env.moto is not None
        use_cluster_network(env.plane, env.moto.cluster_network())
        env.create_namespace(ALLOWED_NAMESPACE)
        for size in sizes:
            rows.append(run_size(env, size, args))
    print("\nDatabaseIntent (moto backend; AWS and Kubernetes calls per intent per hour at the default 10m drift interval)")
    print_table(HEADERS, table_rows(rows))
    print("\nAWS calls per intent per drift interval at rest (target: 1 describe per cloud resource, 0 writes)")
    print_table(CHECK_HEADERS, check_rows(rows))
    return 0 if all(row.not_ready == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
