"""Start `paved run` against a local control plane, as deploy/'s ServiceAccount.

The one launcher of the operator outside a cluster, shared by the test fixture
(tests/fixtures/operator.py), `paved dev demo` and the benchmarks (bench/harness.py):

1. :func:`install_operator_prerequisites` applies deploy/'s Namespace, ServiceAccount and
   RBAC, the CRDs and the default Compositions;
2. :func:`start_operator` writes a kubeconfig holding a TokenRequest token of
   ``paved-system/paved-operator`` (never the admin one), starts ``paved run`` with it as a
   detached process (log and pid file in ``workdir``) on loopback metrics/health ports and
   waits for /healthz.

Because the operator has only the ClusterRole from deploy/rbac.yaml, everything run through
here doubles as a check that the shipped permissions are sufficient.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from paved.dev.binaries import repo_root
from paved.dev.processes import (
    ProcessRecord,
    free_port,
    is_alive,
    log_tail,
    read_record,
    start_detached,
    stop_all,
)

if TYPE_CHECKING:
    from paved.dev.controlplane import ControlPlane

__all__ = [
    "OPERATOR_ACCOUNT",
    "OPERATOR_NAMESPACE",
    "OperatorError",
    "OperatorProcess",
    "install_operator_prerequisites",
    "parse_metric",
    "Replicas",
    "start_operator",
    "start_replicas",
    "wait_kinds_served",
]

OPERATOR_NAMESPACE = "paved-system"
OPERATOR_ACCOUNT = "paved-operator"
_RBAC_FILES = ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "token-policy.yaml")


class OperatorError(RuntimeError):
    """`paved run` did not start or stopped answering; the message holds its log tail."""


def install_operator_prerequisites(control_plane: ControlPlane) -> None:
    """deploy/'s Namespace, ServiceAccount and RBAC, the CRDs and the default Compositions."""
    root = repo_root()
    control_plane.apply(
        [*(root / "deploy" / name for name in _RBAC_FILES), root / "crds", root / "compositions"]
    )
    wait_kinds_served(control_plane)


def wait_kinds_served(control_plane: ControlPlane, timeout: float = 60.0) -> None:
    """Wait until the API server lists every Paved kind.

    Right after a CRD is created the API server answers 429 "storage is (re)initializing"
    for a moment; an operator started then may never run its handlers (seen with Kopf's
    indexes), so the launcher starts it only once every list is served. kubectl itself
    retries 429s, so one successful call means all lists are served.
    """
    from paved.api.kinds import KINDS

    names = ",".join(info.crd_name for info in KINDS)
    deadline = time.monotonic() + timeout
    while True:
        result = control_plane.kubectl("get", names, "-A", "-o", "name", check=False)
        if result.returncode == 0:
            return
        if time.monotonic() >= deadline:
            raise OperatorError(f"the API server does not list Paved's kinds: {result.stderr.strip()}")
        time.sleep(0.5)


def parse_metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` in Prometheus text ``text`` whose labels include ``labels``."""
    total = 0.0
    pattern = re.compile(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)")
    for line in text.splitlines():
        match = pattern.fullmatch(line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(2))
    return total


@dataclass
class OperatorProcess:
    """One `paved run` process that can be stopped, killed and started again.

    ``env`` is added to the current environment (minus any KUBE* variable) at each start,
    e.g. ``PAVED_AWS_ENDPOINT_URL``. The log (``workdir/operator.log``) accumulates across
    restarts. ``die_with_parent`` makes Linux kill the operator when the starting process
    dies (tests, benchmarks); the demo leaves it running for `paved dev down` to stop.
    """

    kubeconfig: Path
    workdir: Path
    metrics_port: int
    health_port: int
    webhook_port: int = 0  # 0: any free port; replicas reached by one URL share a fixed one
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    die_with_parent: bool = True
    record: ProcessRecord | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / "operator.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "operator.pid"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/healthz"

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/readyz"

    @property
    def pid(self) -> int | None:
        return self.record.pid if self.record else None

    def alive(self) -> bool:
        return self.record is not None and is_alive(self.record)

    def healthy(self) -> bool:
        """Alive and answering /healthz."""
        return self._probe(self.health_url)

    def ready(self) -> bool:
        """Alive and answering /readyz: its admission webhook serves."""
        return self._probe(self.ready_url)

    def _probe(self, url: str) -> bool:
        if not self.alive():
            return False
        try:
            return requests.get(url, timeout=2).ok
        except requests.RequestException:
            return False

    def leads(self) -> bool:
        """Whether it holds the leader Lease (its paved_leader metric)."""
        try:
            return self.metric("paved_leader") == 1
        except requests.RequestException:
            return False

    def start(self, timeout: float = 60.0) -> None:
        """Start `paved run` and wait until /healthz answers (OperatorError with the log tail if not)."""
        if self.alive():
            return
        argv = [
            str(Path(sys.executable).with_name("paved")),
            "run",
            f"--metrics-port={self.metrics_port}",
            f"--health-port={self.health_port}",
            "--bind-address=127.0.0.1",
            *([f"--webhook-port={self.webhook_port}"] if self.webhook_port else []),
            *self.extra_args,
        ]
        env = {key: value for key, value in os.environ.items() if not key.startswith("KUBE")}
        env.update(self.env)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PYTHONUNBUFFERED"] = "1"
        self.record = start_detached(
            "paved-operator", argv, self.log_path, self.pid_path, env=env,
            die_with_parent=self.die_with_parent,
        )
        self._save_ports()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until it is ready: alive, and its admission webhook serves (a standby too)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise OperatorError(f"paved run exited during start-up; log tail:\n{self.tail()}")
            if self.ready():
                return
            time.sleep(0.2)
        raise OperatorError(
            f"paved run was not ready ({self.ready_url}) within {timeout:.0f}s; log tail:\n{self.tail()}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Kopf finishes in-flight handlers), then SIGKILL after ``timeout``."""
        if self.record is not None:
            stop_all([self.record], timeout=timeout)
            self.record = None

    def kill(self) -> None:
        """SIGKILL at once: the operator dies mid-operation, as on a node failure."""
        if self.record is not None and self.alive():
            os.kill(self.record.pid, signal.SIGKILL)
            stop_all([self.record], timeout=5)
        self.record = None

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start(timeout)

    def tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def metrics(self) -> str:
        return requests.get(self.metrics_url, timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent)."""
        return parse_metric(self.metrics(), name, **labels)

    # -------------------------------------------------- a detached operator found again later

    def _save_ports(self) -> None:
        (self.workdir / "operator.json").write_text(
            json.dumps({"metrics_port": self.metrics_port, "health_port": self.health_port,
                        "webhook_port": self.webhook_port})
        )

    @classmethod
    def find(cls, workdir: Path) -> OperatorProcess | None:
        """The operator a previous process started in ``workdir`` (running or not), if any."""
        try:
            ports = json.loads((workdir / "operator.json").read_text())
        except (OSError, ValueError):
            return None
        process = cls(
            kubeconfig=workdir / "kubeconfig", workdir=workdir,
            metrics_port=int(ports["metrics_port"]), health_port=int(ports["health_port"]),
            webhook_port=int(ports.get("webhook_port") or 0), die_with_parent=False,
        )
        process.record = read_record(process.pid_path)
        return process


def _launch(
    control_plane: ControlPlane,
    workdir: Path,
    folders: list[Path],
    *,
    env: Mapping[str, str] | None,
    extra_args: tuple[str, ...],
    die_with_parent: bool,
    install: bool,
    timeout: float,
    process_class: type[OperatorProcess],
    webhook_port: int,
) -> list[OperatorProcess]:
    """Processes sharing one kubeconfig (and webhook port), each with its own folder."""
    if install:
        install_operator_prerequisites(control_plane)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = control_plane.serviceaccount_kubeconfig(
        OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, workdir / "kubeconfig"
    )
    taken: set[int] = {webhook_port}
    processes = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        metrics_port = free_port(avoid=taken.__contains__)
        health_port = free_port(avoid=lambda port: port == metrics_port or port in taken)
        taken |= {metrics_port, health_port}
        processes.append(process_class(
            kubeconfig=kubeconfig, workdir=folder, metrics_port=metrics_port, health_port=health_port,
            webhook_port=webhook_port, extra_args=tuple(extra_args), env=dict(env or {}),
            die_with_parent=die_with_parent,
        ))
    for process in processes:
        process.start(timeout)
    return processes


def start_operator(
    control_plane: ControlPlane,
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    die_with_parent: bool = True,
    install: bool = True,
    timeout: float = 60.0,
    process_class: type[OperatorProcess] = OperatorProcess,
) -> OperatorProcess:
    """Install the prerequisites (unless ``install`` is False) and start `paved run` in ``workdir``.

    The operator authenticates with a TokenRequest token (24 h) of paved-system/paved-operator,
    listens on free loopback ports and is ready when this returns. ``process_class`` lets the
    test fixture turn start-up failures into test failures.
    """
    (process,) = _launch(control_plane, workdir, [Path(workdir)], env=env, extra_args=extra_args,
                         die_with_parent=die_with_parent, install=install, timeout=timeout,
                         process_class=process_class, webhook_port=free_port())
    return process


@dataclass
class Replicas:
    """Several `paved run` processes of one deployment, as deploy/ runs them: one Lease, one
    webhook port shared through SO_REUSEPORT (the kernel spreads the API server's calls over
    the replicas that listen, as a Service spreads them over ready pods)."""

    processes: list[OperatorProcess]

    def leader(self) -> OperatorProcess | None:
        leaders = [process for process in self.processes if process.leads()]
        return leaders[0] if len(leaders) == 1 else None

    def wait_leader(self, timeout: float = 60.0, *, other_than: OperatorProcess | None = None) -> OperatorProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None and leader is not other_than:
                return leader
            time.sleep(0.1)
        raise OperatorError(f"no replica led within {timeout:.0f}s; log tails:\n" +
                            "\n".join(process.tail(20) for process in self.processes))

    def standbys(self) -> list[OperatorProcess]:
        return [process for process in self.processes if process.alive() and not process.leads()]

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


def start_replicas(
    control_plane: ControlPlane,
    workdir: Path,
    count: int = 2,
    *,
    env: Mapping[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    die_with_parent: bool = True,
    install: bool = True,
    timeout: float = 60.0,
    process_class: type[OperatorProcess] = OperatorProcess,
) -> Replicas:
    """`count` replicas in ``workdir``/replica-<i>, ready (webhook serving) when this returns."""
    folders = [Path(workdir) / f"replica-{index}" for index in range(count)]
    return Replicas(_launch(control_plane, workdir, folders, env=env, extra_args=extra_args,
                            die_with_parent=die_with_parent, install=install, timeout=timeout,
                            process_class=process_class, webhook_port=free_port()))
