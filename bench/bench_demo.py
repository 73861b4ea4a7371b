"""Benchmark the demo's canary: time from a bad version to 100% stable, as a newcomer sees it.

    python bench/bench_demo.py              # 3 rounds
    python bench/bench_demo.py --quick      # 1 round

`paved dev demo` in a temporary state dir (control plane, moto, OpenBao, the operator, the
canary demo's apps, traffic and Prometheus: paved.dev.demo_canary), then per round:

1. a healthy version (`kubectl set image`, as the demo prints it): seconds to promotion;
2. a failing version (tag ending in -broken: half its requests fail): seconds from the
   `set image` to the HTTPRoute back at 100/0 (100% of traffic on stable), and from the
   first canary weight above 0 to that moment. The route is read from the API server every
   0.1 s, so figures are +-0.1 s.

Prints one table; `paved dev down --purge` at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from harness import log, print_table, summarize  # noqa: E402

from paved.dev.controlplane import ControlPlane  # noqa: E402
from paved.dev.demo import run_demo, stop_demo  # noqa: E402
from paved.dev.demo_canary import BROKEN_SUFFIX, CONTAINER, IMAGE, NAMESPACE, ROLLOUT, ROUTE, route_weights  # noqa: E402

POLL = 0.1


def rollout_status(plane: ControlPlane) -> dict[str, Any]:
    body = plane.get_json(f"/apis/paved.dev/v1alpha1/namespaces/{NAMESPACE}/progressiverollouts/{ROLLOUT}") or {}
    return dict(body.get("status") or {})


def weights(plane: ControlPlane) -> tuple[int, int] | None:
    return route_weights(plane.get_json(f"/apis/gateway.networking.k8s.io/v1/namespaces/{NAMESPACE}/httproutes/{ROUTE}"))


def wait(what: str, check: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"no {what} within {timeout:.0f}s")
        time.sleep(POLL)
    return time.monotonic()


def set_image(plane: ControlPlane, tag: str) -> float:
    plane.kubectl("-n", NAMESPACE, "set", "image", f"deployment/{ROLLOUT}", f"{CONTAINER}={IMAGE}:{tag}")
    return time.monotonic()


def one_round(plane: ControlPlane, index: int) -> tuple[float, float, float]:
    began = set_image(plane, f"healthy-{index}-{int(time.time())}")
    promoted = wait("promotion", lambda: (s := rollout_status(plane)).get("phase") == "Succeeded"
                    and str(s.get("message", "")).startswith("promoted"), 180)
    bad = set_image(plane, f"bad-{index}-{int(time.time())}{BROKEN_SUFFIX}")
    canary_seen: list[float] = []

    def back_on_stable() -> bool:
        current = weights(plane)
        if current and current[1] > 0 and not canary_seen:
            canary_seen.append(time.monotonic())
        return bool(canary_seen) and current == (100, 0)

    stable = wait("100% stable", back_on_stable, 180)
    phase = rollout_status(plane).get("phase")
    log(f"round {index + 1}: promoted in {promoted - began:.1f}s; bad version -> 100% stable in {stable - bad:.1f}s "
        f"({stable - canary_seen[0]:.1f}s after it got traffic); phase {phase}")
    return promoted - began, stable - bad, stable - canary_seen[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="paved-bench-demo-") as state:
        plane = ControlPlane(Path(state))
        try:
            started = time.monotonic()
            run_demo(plane, wait=60.0, log=log)
            log(f"demo up in {time.monotonic() - started:.0f}s")
            wait("the stable take-over", lambda: rollout_status(plane).get("phase") == "Succeeded", 120)
            results = [one_round(plane, index) for index in range(rounds)]
        finally:
            stop_demo(plane)
            plane.down(purge=True)
    columns = list(zip(*results, strict=True))
    rows = []
    for name, values in zip(("healthy version -> promoted (s)", "bad version -> 100% stable (s)",
                             "bad version's first traffic -> 100% stable (s)"), columns, strict=True):
        summary = summarize(values)
        rows.append((name, summary.count, summary.p50, summary.max))
    print_table(("time in the demo", "rounds", "p50", "max"), rows)


if __name__ == "__main__":
    main()
