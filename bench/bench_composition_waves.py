"""Benchmark Composition rollout waves: a Composition change over many intents.

    .venv/bin/python bench/bench_composition_waves.py                 # what `scripts/bench composition-waves` runs
    .venv/bin/python bench/bench_composition_waves.py --quick         # a few minutes

Two parts, printed as two tables:

1. In memory, at --planned intents (default 1,000): the pure planner (paved.render.waves) over
   a simulated rollout where a moved intent is Ready at the next look, and the render of every
   intent through the RDS Composition's old and new revision (paved.render.render_intent, the
   reconcile's render). Figures: planner steps and CPU time for the whole rollout, render CPU
   per intent, and, with failing intents injected, how many intents the rollout still moved
   after the first failure (goal: at most maxInFlight - 1, the rest of the wave that found it).
2. End to end, at --size intents (default 100, a few minutes; --size 1000 --max-in-flight 50
   --fail-every 100 takes about 12 minutes on a 2-core machine): real parts (bench/harness.py: a control plane, moto, `paved run`
   as deploy/'s ServiceAccount). N DatabaseIntents (examples/01-database/orders-db.yaml, every
   --fail-every'th one of size medium) are rendered through a copy of the RDS Composition
   with spec.rollout.maxInFlight --max-in-flight. Then:
   a. the Composition's small instance class changes (db.t3.micro -> db.t3.small): seconds
      from the edit until the Composition's status shows every intent Ready on the new
      revision, and AWS calls per intent during that rollout (paved_provider_api_calls_total
      of the RDS, subnet group and security group providers, as bench_database.py counts
      them), modify_db_instance included;
   b. an injected failure: the next edit drops the medium instance class, so the intents of
      size medium fail (RenderFailed naming spec.size). Figures: seconds until the rollout is
      Halted, intents on the new revision then, and how many moved after the first failing
      one in key order (the order the rollout moves them) — goal: at most maxInFlight - 1 —
      and that the intents left behind are untouched (their instance class unchanged on moto).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path
from typing import Any

from bench_database import aws_counters
from harness import BenchEnv, create_objects, delta, load_example, log, print_table

from paved.api.kinds import kind_info
from paved.dev.demo import use_cluster_network
from paved.providers.aws.tags import TAG_NAME
from paved.render import render_intent
from paved.render.waves import IntentOnRevision, plan_wave, revision_labels, revision_name, revision_spec

SEED = load_example("01-database/orders-db.yaml")
ALLOWED_NAMESPACE = "orders-app"
NAMESPACE = "bench-waves"
BASE_COMPOSITION = "postgres-aws-rds"
COMPOSITION = "bench-waves-rds"


def intent_name(index: int) -> str:
    return f"db-{index:04d}"


def sizes(count: int, fail_every: int) -> list[str]:
    """Size per intent: every `fail_every`'th (from index fail_every // 2) medium, the others small."""
    return ["medium" if fail_every and index % fail_every == fail_every // 2 else "small" for index in range(count)]


def intents(namespace: str, count: int, fail_every: int) -> list[dict[str, Any]]:
    bodies = []
    for index, size in enumerate(sizes(count, fail_every)):
        body = copy.deepcopy(SEED)
        body["metadata"] = {"name": intent_name(index), "namespace": namespace}
        body["spec"].update(size=size, deletionPolicy="Delete", driftCheckInterval="1h",
                            compositionRef={"name": COMPOSITION})
        bodies.append(body)
    return bodies


def edited(composition: dict[str, Any], *, small: str, drop_medium: bool = False) -> dict[str, Any]:
    result = copy.deepcopy(composition)
    classes = result["spec"]["parameters"]["instanceClasses"]
    classes["small"] = small
    if drop_medium:
        classes.pop("medium", None)
    return result


# --------------------------------------------------------------------------- in memory


def in_memory(base: dict[str, Any], count: int, max_in_flight: int, fail_every: int) -> list[tuple[Any, ...]]:
    """The planner over a simulated rollout, and renders through both revisions (part 1)."""
    old = {**base, "metadata": {"name": COMPOSITION}}
    new = edited(old, small="db.t3.small")
    failing = edited(old, small="db.t3.large", drop_medium=True)
    revisions = {revision_name(c): {"metadata": {"name": revision_name(c), "labels": revision_labels(c)},
                                    "spec": {"revision": n, "compositionSpec": revision_spec(c)}}
                 for n, c in enumerate((old, new, failing), start=1)}
    bodies = intents("bench", count, fail_every)
    info = kind_info("DatabaseIntent")
    rows = []

    started = time.process_time()
    for index, body in enumerate(bodies):
        body["metadata"]["uid"] = f"00000000-0000-0000-0000-{index:012d}"
        body["status"] = {"composition": COMPOSITION, "compositionRevision": revision_name(old)}
        rendering = render_intent(body, [new], spec=info.parse_spec(body["spec"]), namespace_labels={},
                                  allowed=None, revisions=revisions, move=True)
        assert rendering.error is None, rendering.error
    render_ms = (time.process_time() - started) * 1000 / count

    for label, target, fails in (("change", new, set()), ("injected failure", failing,
                                                         {intent_name(i) for i, s in enumerate(sizes(count, fail_every)) if s == "medium"})):
        latest = revision_name(target)
        state = {intent_name(i): IntentOnRevision(f"bench/{intent_name(i)}", revision_name(old), True, True)
                 for i in range(count)}
        steps, moved_order = 0, []
        started = time.process_time()
        while True:
            wave = plan_wave(latest, state.values(), max_in_flight=max_in_flight, max_failures=1)
            steps += 1
            if not wave.move:
                break
            for key in wave.move:  # the engine moves them one by one; each is Ready (or failing) at once
                name = key.split("/", 1)[1]
                moved_order.append(name)
                failure = "spec.size: not offered" if name in fails else None
                state[name] = IntentOnRevision(key, latest, True, failure is None, failure)
        cpu_ms = (time.process_time() - started) * 1000
        first_failure = next((i for i, name in enumerate(moved_order) if name in fails), None)
        after = len(moved_order) - first_failure - 1 if first_failure is not None else 0
        rows.append((label, count, max_in_flight, steps, cpu_ms, render_ms, len(moved_order),
                     after if first_failure is not None else "-", "halted" if wave.halted else "rolled out"))
    return rows


# --------------------------------------------------------------------------- end to end


def composition_status(env: BenchEnv) -> dict[str, Any]:
    from kubernetes import client

    body = client.CustomObjectsApi(env.api).get_cluster_custom_object("paved.dev", "v1alpha1", "compositions", COMPOSITION)
    return dict(body.get("status") or {})


def rolled_out_condition(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "RolledOut"), {})


def wait_until(check: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.5)
    log(f"timed out after {timeout:.0f}s waiting for {what}")
    return math.nan


def apply_composition(env: BenchEnv, body: dict[str, Any]) -> None:
    import json

    env.plane.kubectl("apply", "-f", "-", input=json.dumps(body))


def end_to_end(env: BenchEnv, args: argparse.Namespace) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    from kubernetes import client

    custom = client.CustomObjectsApi(env.api)
    base = custom.get_cluster_custom_object("paved.dev", "v1alpha1", "compositions", BASE_COMPOSITION)
    composition = {"apiVersion": "paved.dev/v1alpha1", "kind": "Composition", "metadata": {"name": COMPOSITION},
                   "spec": {**copy.deepcopy(base["spec"]), "default": False,
                            "rollout": {"maxInFlight": args.max_in_flight, "maxFailures": 1}}}
    apply_composition(env, composition)
    env.create_namespace(NAMESPACE)
    count = args.size
    create_objects(env.api, intents(NAMESPACE, count, args.fail_every))

    def all_ready_on(revision: str | None) -> bool:
        status = composition_status(env)
        return (status.get("updatedIntents") == count and rolled_out_condition(status).get("status") == "True"
                and (revision is None or status.get("latestRevision") == revision))
    created = wait_until(lambda: all_ready_on(None), args.timeout, "every intent Ready")
    log(f"{count} intents Ready on the first revision after {created:.0f}s")
    rows = []

    change = edited(composition, small="db.t3.small")
    before = aws_counters(env)
    apply_composition(env, change)
    seconds = wait_until(lambda: all_ready_on(revision_name(change)), args.timeout, "the change rolled out")
    calls = delta(aws_counters(env), before)
    rows.append(("change (small class)", count, args.max_in_flight, seconds, sum(calls.values()) / count,
                 calls.get("modify_db_instance", 0.0) / count, count, "-", "rolled out"))
    log(f"change: {seconds:.1f}s, AWS calls {calls}")

    failing = edited(change, small="db.t3.large", drop_medium=True)
    before = aws_counters(env)
    apply_composition(env, failing)
    seconds = wait_until(lambda: rolled_out_condition(composition_status(env)).get("reason") == "Halted", args.timeout,
                         "the rollout halted")
    time.sleep(12)  # two of the engine's steps: a halted rollout moves nothing more
    calls = delta(aws_counters(env), before)
    items = custom.list_namespaced_custom_object("paved.dev", "v1alpha1", NAMESPACE, "databaseintents")["items"]
    latest = revision_name(failing)
    on_new = sorted(i["metadata"]["name"] for i in items if (i.get("status") or {}).get("compositionRevision") == latest)
    failed = sorted(name for name, size in zip((intent_name(i) for i in range(count)), sizes(count, args.fail_every))
                    if size == "medium" and name in on_new)
    after = len([name for name in on_new if failed and name > failed[0]])
    behind = {intent_name(i): size for i, size in enumerate(sizes(count, args.fail_every)) if intent_name(i) not in on_new}
    untouched = untouched_instances(env, behind)
    rows.append(("injected failure", count, args.max_in_flight, seconds, sum(calls.values()) / count,
                 calls.get("modify_db_instance", 0.0) / count, len(on_new), after, "halted" if failed else "?"))
    extra = {"left behind": count - len(on_new), "left behind with their instance class unchanged": untouched,
             "condition": rolled_out_condition(composition_status(env)).get("message", "")[:300]}
    log(f"injected failure: halted after {seconds:.1f}s; {len(on_new)} on the new revision, {after} after the first failure")
    env.delete_namespace(NAMESPACE, timeout=args.timeout)
    return rows, extra


def untouched_instances(env: BenchEnv, names: dict[str, str]) -> int:
    """How many of the intents `names` (name -> size) still have the previous revision's
    instance class for their size on moto (small: db.t3.small, medium: db.t3.medium)."""
    assert env.moto is not None
    previous = {"small": "db.t3.small", "medium": "db.t3.medium"}
    classes = {}
    for page in env.moto.client("rds").get_paginator("describe_db_instances").paginate():
        for instance in page["DBInstances"]:
            tags = {t["Key"]: t["Value"] for t in instance.get("TagList") or []}
            classes[tags.get(TAG_NAME)] = instance["DBInstanceClass"]
    return sum(1 for name, size in names.items() if classes.get(name) == previous[size])


MEMORY_HEADERS = ("rollout", "N", "maxInFlight", "planner steps", "planner CPU ms (whole rollout)",
                  "render CPU ms per intent", "moved", "moved after 1st failure", "end")
E2E_HEADERS = ("rollout", "N", "maxInFlight", "s until all on new rev. (or halted)", "AWS calls per intent",
               "modify_db_instance per intent", "moved", "moved after 1st failure", "end")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--planned", type=int, default=1000, help="intents in the in-memory part (default 1000)")
    parser.add_argument("--size", type=int, default=100, help="intents end to end (default 100)")
    parser.add_argument("--max-in-flight", type=int, default=10, help="spec.rollout.maxInFlight (default 10)")
    parser.add_argument("--fail-every", type=int, default=25, help="every n-th intent is of size medium (default 25)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up waiting after this (s)")
    parser.add_argument("--state-dir", type=Path, help="reuse the control plane of this state dir (left running)")
    parser.add_argument("--in-memory-only", action="store_true", help="skip the end-to-end part")
    parser.add_argument("--quick", action="store_true", help="--size 20 --fail-every 10 --max-in-flight 4")
    args = parser.parse_args()
    if args.quick:
        args.size, args.fail_every, args.max_in_flight = 20, 10, 4

    base = load_example("../compositions/postgres-aws-rds.yaml")
    base["spec"]["parameters"]["network"]["subnetIds"] = ["subnet-a", "subnet-b"]  # renders offline as on a cluster
    planned = in_memory(base, args.planned, args.max_in_flight, args.fail_every)
    print(f"\nComposition rollout waves in memory (paved.render.waves planner; render_intent through the RDS Composition), "
          f"N={args.planned}, maxFailures 1")
    print_table(MEMORY_HEADERS, planned)
    if args.in_memory_only:
        return 0
    with BenchEnv.start(state_dir=args.state_dir, moto=True) as env:
        assert env.moto is not None
        use_cluster_network(env.plane, env.moto.cluster_network())
        env.create_namespace(ALLOWED_NAMESPACE)
        rows, extra = end_to_end(env, args)
    print(f"\nComposition rollout waves end to end (control plane, moto, `paved run`), N={args.size}, maxFailures 1")
    print_table(E2E_HEADERS, rows)
    for key, value in extra.items():
        print(f"  {key}: {value}")
    return 0 if all(not math.isnan(row[3]) for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
