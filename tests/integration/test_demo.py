"""`paved dev demo` (what `make demo` runs), for real, in its own state dir.

Its own control plane, not the session's: the demo starts its own operator, and two operators
must never reconcile the same objects. One start (~10 s of control plane, moto and operator
start-ups), a second run to prove it is idempotent, the canary a newcomer watches (the two
printed `set image` commands, run as printed: one version promoted, one rolled back), `paved
dev status`, then `paved dev down --purge`, which must stop everything the demo started.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from paved.dev.controlplane import ControlPlane
from paved.dev.demo_canary import BROKEN_SUFFIX
from paved.dev.moto import MotoServer
from paved.dev.operator import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.aws]

PAVED = str(Path(sys.executable).with_name("paved"))


def paved(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PAVED, *args], capture_output=True, text=True, timeout=timeout, check=False)


def row(table: str, kind: str, name: str) -> list[str]:
    for line in table.splitlines():
        cells = line.split()
        if cells[:1] == [kind] and name in cells:
            return cells
    raise AssertionError(f"no row for {kind} {name} in:\n{table}")


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("demo")
    try:
        yield path
    finally:
        paved("dev", "down", "--purge", "--state-dir", str(path), timeout=120)


def test_demo_brings_up_everything_and_reports_every_intent(state_dir: Path) -> None:
    first = paved("dev", "demo", "--state-dir", str(state_dir), "--wait", "60")
    assert first.returncode == 0, first.stderr + first.stdout
    out = first.stdout
    assert "KIND" in out and "READY" in out and "REASON" in out
    # the seed, through the real aws-rds provider on moto, and the agent identity
    assert row(out, "DatabaseIntent", "orders-db")[1:4] == ["orders", "orders-db", "True"], out
    assert row(out, "AgentIdentity", "pod-reader")[1:4] == ["orders-app", "pod-reader", "True"], out
    assert "paved dev down" in out and "dev env" in out
    assert "as ServiceAccount paved-system/paved-operator" in first.stderr

    # idempotent: the control plane and moto are reused, the operator restarted
    moto = MotoServer.find(state_dir / "demo" / "moto")
    assert moto is not None
    second = paved("dev", "demo", "--state-dir", str(state_dir), "--wait", "30")
    assert second.returncode == 0, second.stderr + second.stdout
    assert "control plane already running" in second.stderr
    assert f"moto (fake AWS) already running at {moto.endpoint_url}" in second.stderr
    assert row(second.stdout, "AgentIdentity", "pod-reader")[3] == "True"

    watch_canary_promote_and_roll_back(state_dir, first.stdout)

    status = paved("dev", "status", "--state-dir", str(state_dir), timeout=60)
    assert status.returncode == 0, status.stderr
    assert "operator: running" in status.stdout and "moto: running" in status.stdout
    assert "canary demo: apps and traffic running" in status.stdout
    assert row(status.stdout, "DatabaseIntent", "orders-db")[3] == "True"

    operator = OperatorProcess.find(state_dir / "demo" / "operator")
    assert operator is not None and operator.alive()
    down = paved("dev", "down", "--state-dir", str(state_dir), timeout=120)
    assert down.returncode == 0, down.stderr
    assert "operator started by `paved dev demo` stopped" in down.stderr
    assert not operator.alive()
    assert MotoServer.find(state_dir / "demo" / "moto") is None
    assert not ControlPlane(state_dir).is_running()


def printed_commands(out: str) -> list[str]:
    """The commands under "Watch a canary" in the demo's output, as printed."""
    block = out.split("Watch a canary", 1)[1].split("Stop it:", 1)[0]
    return [line.strip() for line in block.splitlines()[1:] if line.strip() and not line.strip().startswith("#")]


def rollout_status(plane: ControlPlane) -> dict[str, Any]:
    return dict(json.loads(plane.kubectl("get", "pro", "checkout", "-n", "shop", "-o", "json").stdout).get("status") or {})


def wait_status(plane: ControlPlane, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float) -> float:
    started = time.monotonic()
    while True:
        status = rollout_status(plane)
        if predicate(status):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"no {what} within {timeout:.0f}s: {status.get('phase')}: {status.get('message')}")
        time.sleep(0.5)


def watch_canary_promote_and_roll_back(state_dir: Path, out: str) -> None:
    """What a newcomer does after `make demo`: the printed commands, in a shell with `paved dev env`."""
    watch, healthy, failing = printed_commands(out)
    assert watch.endswith("rollout status checkout -n shop --watch") and failing.endswith(BROKEN_SUFFIX), out
    plane = ControlPlane(state_dir)
    env = f'eval "$({PAVED} dev env --state-dir {state_dir})"; export PATH="{Path(PAVED).parent}:$PATH"; '
    wait_status(plane, lambda s: s.get("phase") == "Succeeded", "take-over of the stable version", 90)
    watcher = subprocess.Popen(["bash", "-c", env + watch], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        subprocess.run(["bash", "-c", env + healthy], check=True, capture_output=True, timeout=60)
        promoted = wait_status(plane, lambda s: s.get("phase") == "Succeeded" and s.get("message", "").startswith("promoted"),
                               "promotion", 150)
        time.sleep(3)  # the watcher reads every second: let it print the promotion before the next version
        subprocess.run(["bash", "-c", env + failing], check=True, capture_output=True, timeout=60)
        rolled_back = wait_status(plane, lambda s: s.get("phase") == "RolledBack", "rollback", 90)
        time.sleep(3)  # the watcher reads every second: let it print what was just seen here
    finally:
        watcher.terminate()
        watched = watcher.communicate(timeout=30)[0]
    print(f"\ndemo canary: promoted in {promoted:.0f}s, rolled back in {rolled_back:.0f}s")
    message = rollout_status(plane)["message"]
    assert "success-rate" in message and "< 0.8" in message, message
    # --watch showed the weights as they moved, each metric's value and the reasons
    assert all(f"weight {w:>3}%" in watched for w in (5, 20, 50, 100)), watched
    assert "success-rate=" in watched and "| promoted" in watched and "| rolled back" in watched, watched
