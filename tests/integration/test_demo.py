"""`paved dev demo` (what `make demo` runs), for real, in its own state dir.

Its own control plane, not the session's: the demo starts its own operator, and two operators
must never reconcile the same objects. One start (~10 s of control plane, moto and operator
start-ups), a second run to prove it is idempotent, `paved dev status`, then `paved dev down
--purge`, which must stop everything the demo started.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from paved.dev.controlplane import ControlPlane
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

    status = paved("dev", "status", "--state-dir", str(state_dir), timeout=60)
    assert status.returncode == 0, status.stderr
    assert "operator: running" in status.stdout and "moto: running" in status.stdout
    assert row(status.stdout, "DatabaseIntent", "orders-db")[3] == "True"

    operator = OperatorProcess.find(state_dir / "demo" / "operator")
    assert operator is not None and operator.alive()
    down = paved("dev", "down", "--state-dir", str(state_dir), timeout=120)
    assert down.returncode == 0, down.stderr
    assert "operator started by `paved dev demo` stopped" in down.stderr
    assert not operator.alive()
    assert MotoServer.find(state_dir / "demo" / "moto") is None
    assert not ControlPlane(state_dir).is_running()
