"""Benchmark spec.originalScaleDown: pods running before, during and after a rollout.

    .venv/bin/python bench/bench_rollout_scale_down.py                # N=4 replicas, all three choices
    .venv/bin/python bench/bench_rollout_scale_down.py --replicas 2 --skip model

Goal: after a promotion (and after a rollback) the app runs the user's replica count N in
all, not 2N. Two parts:

A. Model (pure, instant): `paved.rollout.simulate` with the seed canary (Gateway API, the
   stable copy at full scale, the canary at ceil(weight x N)); pods the three Deployments ask
   for at each moment.

B. Real parts (bench/harness.py: a control plane whose kwok node runs the pods, `paved run`
   as deploy/'s ServiceAccount): the user's Deployment (N replicas), Service and HTTPRoute of
   examples/04-progressive-rollout, a rollout pausing at 50% until promoted or aborted.
   Pods running (phase Running, not terminating) with the app's label, counted once they
   settle: before the rollout, after Paved's bootstrap, at 50%, after the promotion, at 50%
   of the next version, after its abort (rollback), and after the rollout is deleted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))

from harness import BenchEnv, log, print_table  # noqa: E402

from e2e.shop import user_objects  # noqa: E402
from paved.rollout.simulate import Sample, Scenario, example_spec, simulate  # noqa: E402

CHOICES = ("Never", "OnSuccess", "Progressively")
MOMENTS = ("before", "bootstrapped", "at 50%", "promoted", "next at 50%", "rolled back", "deleted")


def model_rows(replicas: int) -> list[list[Any]]:
    rows = []
    for choice in CHOICES:
        healthy = simulate(example_spec(originalScaleDown=choice),
                           Scenario(metrics={"success-rate": lambda t, w: Sample(0.99, 600)}, replicas=replicas))
        broken = simulate(example_spec(originalScaleDown=choice),
                          Scenario(metrics={"success-rate": lambda t, w: Sample(0.99 if t < 61 else 0.5, 600)},
                                   replicas=replicas))
        bootstrapped = [tick.pods for tick in healthy.ticks if tick.t < 0][-1]
        at_50 = next(tick.pods for tick in healthy.ticks if tick.decision.status.get("canaryWeight") == 50)
        rows.append([choice, replicas, bootstrapped, at_50, healthy.ticks[-1].pods, broken.ticks[-1].pods])
    return rows


class Namespace:
    """One namespace with the user's objects, driven through kubectl."""

    def __init__(self, env: BenchEnv, name: str, replicas: int) -> None:
        self.env, self.name = env, name
        env.create_namespace(name)
        objects = user_objects(name)
        for body in objects:
            if body["kind"] == "Deployment":
                body["spec"]["replicas"] = replicas
        self.apply(*objects)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = self.env.plane.kubectl(*args, "-n", self.name, input=input, check=False)
        if result.returncode:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr}")
        return str(result.stdout)

    def apply(self, *documents: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in documents))

    def status(self) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "progressiverollout", "checkout", "-o", "json")).get("status") or {}

    def wait(self, predicate: Any, what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {what} not reached in {timeout:.0f}s")
            time.sleep(0.25)

    def running(self) -> int:
        pods = json.loads(self.kubectl("get", "pods", "-l", "app=checkout", "-o", "json"))["items"]
        return sum(1 for pod in pods if (pod.get("status") or {}).get("phase") == "Running"
                   and not pod["metadata"].get("deletionTimestamp"))

    def settled(self, settle: float = 3.0) -> int:
        """The running pod count once it stayed the same for `settle` seconds."""
        last, since = self.running(), time.monotonic()
        while time.monotonic() - since < settle:
            time.sleep(0.5)
            now = self.running()
            if now != last:
                last, since = now, time.monotonic()
        return last

    def command(self, kind: str) -> None:
        self.kubectl("annotate", "progressiverollout", "checkout", "--overwrite", f"paved.dev/command={kind}",
                     f"paved.dev/command-id={uuid.uuid4().hex}")

    def new_version(self, tag: str) -> None:
        self.kubectl("set", "image", "deployment/checkout", f"app=example.com/checkout:{tag}")


def real_run(env: BenchEnv, choice: str, replicas: int) -> list[Any]:
    ns = Namespace(env, f"scale-{choice.lower()}-{uuid.uuid4().hex[:5]}", replicas)
    counts = [ns.settled()]
    rollout = {"apiVersion": "paved.dev/v1alpha1", "kind": "ProgressiveRollout",
               "metadata": {"name": "checkout", "namespace": ns.name},
               "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"},
                        "service": {"name": "checkout", "port": 80},
                        "trafficRouting": {"gatewayAPI": {"httpRoute": "checkout"}},
                        "steps": [{"setWeight": 50}, {"pause": {}}], "originalScaleDown": choice}}
    ns.apply(rollout)
    ns.wait(lambda: ns.status().get("phase") == "Succeeded", "the bootstrap")
    counts.append(ns.settled())
    for tag, finish, phase in (("v2", "promote", "Succeeded"), ("v3", "abort", "RolledBack")):
        ns.new_version(tag)
        ns.wait(lambda: ns.status().get("phase") == "Paused", f"{tag} at 50%")
        counts.append(ns.settled())
        ns.command(finish)
        ns.wait(lambda p=phase: ns.status().get("phase") == p and ns.status().get("canaryWeight") == 0, phase)
        counts.append(ns.settled())
    ns.kubectl("delete", "progressiverollout", "checkout", "--wait=true", "--timeout=60s")
    counts.append(ns.settled())
    env.delete_namespace(ns.name)
    return [choice, replicas, *counts]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=4, help="the user's Deployment's replicas (N)")
    parser.add_argument("--quick", action="store_true", help="N=2")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: model, real")
    parser.add_argument("--state-dir", type=Path, help="reuse a control plane state dir")
    args = parser.parse_args()
    replicas = 2 if args.quick else args.replicas
    skip = set(filter(None, args.skip.split(",")))

    if "model" not in skip:
        print(f"\nA. model: pods the three Deployments ask for (N={replicas}, Gateway API; simulated)")
        print_table(["originalScaleDown", "N", "bootstrapped", "at 50%", "promoted", "rolled back"], model_rows(replicas))
    if "real" in skip:
        return 0
    with BenchEnv.start(state_dir=args.state_dir) as env:
        rows = []
        for choice in CHOICES:
            log(f"{choice}: N={replicas}")
            rows.append(real_run(env, choice, replicas))
    print(f"\nB. real parts: pods running (kwok), N={replicas}; goal after the promotion and the rollback: N, not 2N")
    print_table(["originalScaleDown", "N", *MOMENTS], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
