"""Benchmark hostile input: 670 hostile cases against a fresh control plane, webhook and operator.

    .venv/bin/python bench/bench_hostile.py            # every case of tests/support/hostile.py
    .venv/bin/python bench/bench_hostile.py --quick    # the same (the batch takes about a minute)
    scripts/bench hostile

Real parts only: a fresh control plane, `paved run` as deploy/'s ServiceAccount with moto as
its AWS and an OpenBao dev server as its Vault (the operator's own policy; Kubernetes auth
against the real API server), IAM roles enabled in the default AgentIdentity composition.
The cases and the way they are applied and judged are the e2e test's
(tests/e2e/test_hostile_input.py; support.hostile, support.hostile_run).

Printed:
1. cases by attack category and stopping point (schema: the API server refused it; webhook:
   Paved's admission webhook did; handler: accepted, then Ready=False naming the field;
   handled: accepted and harmless), and how many refusals named the attacked field;
2. the operator: restarts (pid changes), longest time not ready, log lines of unexpected
   errors, partial cloud resources (moto, OpenBao) and Kubernetes objects left for refused
   cases, Secrets holding a value outside the namespace's prefix;
3. time: from the first request until every case settled, and the admission answer latency
   per category (p50/p95/max), the slowest answers;
4. the sandbox's and CEL's budgets as the defaults use them: steps of the default
   AgentIdentity composition and CEL units of the default policies for the largest intents
   the API admits (computed offline, the figures the limits' docstrings quote).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import yaml  # noqa: E402
from harness import BenchEnv, log, print_table, summarize  # noqa: E402

from paved.dev.moto import FAKE_AWS_ENV  # noqa: E402
from paved.dev.openbao import configure_kubernetes_auth, start_openbao  # noqa: E402
from support.hostile import World, hostile_cases  # noqa: E402
from support.hostile_run import Batch, Kube, prepare_backends, run_batch  # noqa: E402

ISSUER = "oidc.paved.bench/id/HOSTILE"


def largest_agent() -> dict[str, Any]:
    """The largest AgentIdentity the API admits, in the shape the default composition loops over most."""
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": "a", "namespace": "n", "uid": "u"},
            "spec": {"capabilities": [{"apiGroups": [f"g{k}" for k in range(8)], "resources": [f"r{j}" for j in range(32)],
                                       "verbs": ["get", "list", "watch"], "namespaces": [f"ns-{i}-{k}" for k in range(8)]}
                                      for i in range(32)],
                     "secrets": [{"path": f"secret/data/x{i}/*", "capabilities": ["read", "list"]} for i in range(32)]}}


def budgets() -> list[tuple[str, str, int, int]]:
    """(what, by what, used, limit) for the default composition and policies on the largest intent."""
    import time

    from paved.api.kinds import with_defaults
    from paved.policy import cel
    from paved.policy.compile import compile_policies
    from paved.policy.evaluate import evaluate
    from paved.render import render, select_composition
    from paved.render.sandbox import MAX_STEPS, budget

    compositions = [yaml.safe_load(path.read_text()) for path in sorted((ROOT / "compositions").glob("*.yaml"))]
    agent = with_defaults(largest_agent())
    rows = []
    with budget() as used:
        started = time.perf_counter()
        render(select_composition(agent, compositions, {}), agent, allowed={})
        seconds = time.perf_counter() - started
    rows.append((f"render, default AgentIdentity composition ({seconds:.2f}s)", "steps", MAX_STEPS - used.left, MAX_STEPS))
    policies = [doc for path in sorted((ROOT / "compositions" / "policies").glob("*.yaml"))
                for doc in yaml.safe_load_all(path.read_text()) if doc]
    compiled, _ = compile_policies(policies)
    spent: list[Any] = []
    original = cel._Cost

    class Recorded(original):  # type: ignore[misc, valid-type]
        def __init__(self, limit: int) -> None:
            super().__init__(limit)
            spent.append(self)

    cel._Cost = Recorded  # type: ignore[misc]
    try:
        started = time.perf_counter()
        verdicts = evaluate(compiled, agent, now=datetime.now(timezone.utc), memo=None)
        seconds = time.perf_counter() - started
    finally:
        cel._Cost = original  # type: ignore[misc]
    for verdict, cost in zip(verdicts, spent, strict=False):
        rows.append((f"CEL {verdict.policy}/{verdict.rule} ({seconds / max(len(verdicts), 1):.2f}s)", "units",
                     cel.MAX_COST - cost.left, cel.MAX_COST))
    return rows


def report(batch: Batch, every_case: bool) -> None:
    run, watch = batch.run, batch.watch
    print("\n== cases by stopping point (named: refusals naming the attacked field / refusals)")
    print(run.table())
    print("\n== the operator during the batch")
    print_table(("restarts", "alive", "longest outage s", "unexpected log lines", "partial cloud", "objects of refused",
                 "victim leaks", "batch s"),
                [(len(watch.pids) - 1, batch.alive, watch.longest_outage, len(watch.unexpected_errors()),
                  len(batch.partial()), len(batch.children), len(batch.leaked), run.batch_seconds)])
    print("\n== admission answer latency by category (s)")
    rows = []
    for attack in dict.fromkeys(case.attack for case in run.cases):
        summary = summarize([o.admission_seconds for o in run.outcomes.values() if o.case.attack == attack])
        rows.append((attack, summary.count, summary.p50, summary.p95, summary.max))
    print_table(("attack", "cases", "p50", "p95", "max"), rows)
    print("\n== slowest")
    print("\n".join(run.slowest()))
    if every_case:
        print("\n== every case")
        print("\n".join(o.describe() for o in run.outcomes.values()))
    wrong = run.unexpected()
    if wrong:
        print(f"\n== {len(wrong)} cases did not stop as expected")
        print("\n".join(o.describe() for o in wrong))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="accepted for scripts/bench; the batch is the same")
    parser.add_argument("--cases", action="store_true", help="also print every case's outcome and message")
    args = parser.parse_args(argv)
    print("== budgets on the largest intents the API admits (offline)")
    print_table(("what", "unit", "used", "limit"), budgets())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop everything started below on `kill`
    with tempfile.TemporaryDirectory(prefix="paved-bench-bao-") as tmp:
        server = start_openbao(Path(tmp))
        log(f"OpenBao at {server.addr}")
        try:
            with BenchEnv.start(moto=True, operator_env=server.operator_env()) as env:
                assert env.moto is not None
                vault = server.client()
                configure_kubernetes_auth(vault, env.plane, mount="kubernetes")
                env.plane.kubectl("patch", "composition", "agent-identity-default", "--type=merge", "-p",
                                  '{"spec": {"parameters": {"aws": {"oidcIssuer": "%s"}}}}' % ISSUER)
                world = World.new(vault_addr=server.addr, aws_endpoint=env.moto.endpoint_url, aws_region=env.moto.region)
                cases = hostile_cases(world)
                log(f"{len(cases)} cases")
                token = prepare_backends(world, vault, env.moto, env.plane)
                batch = run_batch(Kube(env.api, timeout=90), env.operator, env.moto, vault, world, cases,
                                  vault_ca=Path(server.ca_cert).read_text(), vault_token=token,
                                  aws_keys=(FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"], FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"]))
                report(batch, args.cases)
                return 1 if batch.run.unexpected() else 0
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
