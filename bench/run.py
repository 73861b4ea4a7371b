"""The benchmark runner (`scripts/bench`, `make bench`): run scenarios, print their tables.

    scripts/bench                      # every scenario, full size
    scripts/bench identity --quick     # one scenario, small sizes
    scripts/bench identity --sizes 1,100 --idle 30    # options after the names go to the scenarios

Each scenario starts its own real parts (a control plane in a temporary state dir, the
operator through paved.dev.operator, moto/OpenBao where needed) and stops them at the end.
Scenarios: identity (bench_identity.py, on bench/harness.py), identity-expiry
(bench_identity_expiry.py: Vault + AWS parts, expiry-to-revocation, idle writes), database (bench_database.py),
secrets (bench_secrets.py: provider calls per cycle, in process), secrets-scale (bench_secrets_scale.py:
ExternalSecretRef cold start, refresh after a restart, apply->Secret latency), secrets-isolation
(bench_secrets_isolation.py: other stores' refresh lateness while one store hangs, in process),
policy (bench_policy.py), rollout (bench_rollout.py: canary step latency and cost), rollout-scale-down
(bench_rollout_scale_down.py: pods before/during/after a rollout for each spec.originalScaleDown), failover
(bench_failover.py: SIGKILLs and SIGTERMs of the leader under mixed load), hostile (bench_hostile.py:
670 hostile cases by stopping point, crashes, partial resources, the batch's duration), demo (bench_demo.py:
time from a bad version to 100% stable in `make demo`'s canary), composition-waves
(bench_composition_waves.py: a Composition change over many intents in waves, and a halted one).
The exit status is non-zero if any scenario failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# name -> (script, extra arguments for --quick)
SCENARIOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "identity": ("bench_identity.py", ("--quick",)),
    "identity-expiry": ("bench_identity_expiry.py", ("--quick",)),
    "database": ("bench_database.py", ("--sizes", "1,20", "--idle", "30", "--drift-interval", "5s")),
    "secrets": ("bench_secrets.py", ("--quick",)),
    "secrets-scale": ("bench_secrets_scale.py", ("--quick",)),
    "secrets-isolation": ("bench_secrets_isolation.py", ("--quick",)),
    "policy": ("bench_policy.py", ("--quick",)),
    "rollout": ("bench_rollout.py", ("--quick",)),
    "rollout-scale-down": ("bench_rollout_scale_down.py", ("--quick",)),
    "failover": ("bench_failover.py", ("--quick",)),
    "hostile": ("bench_hostile.py", ("--quick",)),
    "demo": ("bench_demo.py", ("--quick",)),
    "composition-waves": ("bench_composition_waves.py", ("--quick",)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description="Run Paved's benchmarks.",
        epilog="Options not listed here are passed to every scenario.",
    )
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"some of: {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, short idle windows")
    args, passthrough = parser.parse_known_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    failed = []
    for name in args.scenarios or list(SCENARIOS):
        script, quick = SCENARIOS[name]
        command = [sys.executable, str(BENCH / script), *(quick if args.quick else ()), *passthrough]
        print(f"\n===== {name}: {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        code = subprocess.call(command)
        print(f"===== {name}: exit {code} after {time.monotonic() - started:.0f}s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
