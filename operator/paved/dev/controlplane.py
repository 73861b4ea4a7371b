"""A real, local Kubernetes control plane for development and tests: `paved dev up`.

It runs the upstream programs, not fakes: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, and kwok, which plays the kubelet for two fake nodes so Deployments become
Available without containers. Everything listens on 127.0.0.1 only, on ports chosen at the
first start and kept in the state dir, so a developer's cluster and a test session's cluster
can run side by side with different state dirs. Processes are detached, so the control plane
outlives `paved dev up`; `paved dev down` (or :meth:`ControlPlane.down`) stops them.

State dir layout::

    ports.json  binaries.json  kubeconfig (admin)
    pki/  kubeconfigs/  etcd/  logs/<component>.log  run/<component>.pid
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from paved.dev import processes
from paved.dev.binaries import (
    BinaryError,
    LogFn,
    cache_root,
    ensure_binaries,
    gateway_api_crd_dir,
    security_group_policy_crd,
    go_module_dir,
    repo_root,
)
from paved.dev.manifests import (
    Manifest,
    ManifestError,
    is_crd,
    load_manifests,
    split_for_apply,
    to_list,
)
from paved.dev.pki import KWOK_USER, DevPKI, ensure_pki, write_kubeconfig

if TYPE_CHECKING:
    import requests

__all__ = ["ControlPlane", "ControlPlaneError", "Ports", "UpResult", "default_state_dir"]

_logger = logging.getLogger(__name__)

FIELD_MANAGER = "paved-dev"
_APPLY = (
    "apply",
    "--server-side",
    f"--field-manager={FIELD_MANAGER}",
    "--force-conflicts",
    "-f",
    "-",
)
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service, first address of SERVICE_CIDR
POD_CIDR = "10.244.0.1/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
FAKE_NODES = ("kwok-node-0", "kwok-node-1")
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# Start order; stopped in reverse (etcd last, so the API server can shut down cleanly).
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Whose requests the API server's audit log records (Metadata level: who, verb, object, status;
# never a body): the operator's ServiceAccount only, so the log says exactly which of deploy/'s
# rules the operator used (tests/e2e/test_operator_rbac.py reads it). Small and cheap.
AUDITED_USERS = ("system:serviceaccount:paved-system:paved-operator",)
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "users": list(AUDITED_USERS)}, {"level": "None"}],
}


class ControlPlaneError(RuntimeError):
    """The control plane could not start or answer; the message names the log to read."""


def default_state_dir() -> Path:
    """``$PAVED_DEV_DIR``, else ``<cache root>/dev`` (``~/.cache/paved/dev``)."""
    override = os.environ.get("PAVED_DEV_DIR")
    return Path(override).expanduser() if override else cache_root() / "dev"


@dataclass(frozen=True)
class Ports:
    """Loopback ports of one control plane, persisted so kubeconfigs stay valid on restart."""

    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    def by_component(self) -> dict[str, list[int]]:
        return {
            "etcd": [self.etcd, self.etcd_peer],
            "kube-apiserver": [self.apiserver],
            "kube-controller-manager": [self.controller_manager],
            "kube-scheduler": [self.scheduler],
            "kwok": [],
        }


@dataclass
class UpResult:
    """What :meth:`ControlPlane.up` did; ``timings`` are seconds per phase."""

    reused: bool
    server: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.timings.values())


class _Deadline:
    """One time budget shared by all waits of a start."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._end


class ControlPlane:
    """One local control plane, identified by its state dir.

    Cheap to construct: nothing happens until :meth:`up`. Any number of instances (in any
    number of processes) may refer to the same state dir; the pid files are the truth.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        assets_dir: Path | str | None = None,
        *,
        manifests: Sequence[Path | str] | None = None,
        die_with_parent: bool = False,
        log: LogFn | None = None,
    ) -> None:
        """``manifests`` defaults to the repo's crds/ and compositions/ folders.

        ``die_with_parent`` makes the components exit when the starting process dies
        (for clusters owned by a test session).
        """
        self.state_dir = Path(state_dir or default_state_dir()).expanduser().absolute()
        self.assets_dir = Path(assets_dir).expanduser() if assets_dir else None
        self._manifests = [Path(p) for p in manifests] if manifests is not None else None
        self._die_with_parent = die_with_parent
        self._log = log or (lambda message: _logger.info("%s", message))
        self._pki = DevPKI(self.state_dir / "pki")

    # ----------------------------------------------------------------- paths and properties

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (user in system:masters)."""
        return self.state_dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        """CA certificate that signed the API server's serving certificate."""
        return self._pki.ca_cert

    @property
    def etcd_data_dir(self) -> Path:
        """etcd's data (64 MB of preallocated WAL even when empty)."""
        return self.state_dir / "etcd"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (JSON lines) of the requests of AUDITED_USERS."""
        return self.logs_dir / "audit.log"

    def _read_state(self, name: str) -> Any:
        """A JSON file the first `up` wrote into the state dir."""
        try:
            return json.loads((self.state_dir / name).read_text())
        except FileNotFoundError:
            raise ControlPlaneError(
                f"no control plane in {self.state_dir}; run `paved dev up` first"
            ) from None

    @property
    def ports(self) -> Ports:
        return Ports(**self._read_state("ports.json"))

    @property
    def server(self) -> str:
        """The API server URL, e.g. https://127.0.0.1:41234."""
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def binaries(self) -> dict[str, Path]:
        """The binaries the last start used (kubectl included)."""
        return {name: Path(path) for name, path in self._read_state("binaries.json").items()}

    @property
    def kubectl_path(self) -> Path:
        return self.binaries["kubectl"]

    def _log_path(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def _pid_path(self, component: str) -> Path:
        return self.state_dir / "run" / f"{component}.pid"

    def _kubeconfig_of(self, client: str) -> Path:
        return self.state_dir / "kubeconfigs" / f"{client}.kubeconfig"

    # ------------------------------------------------------------------------ lifecycle

    def up(self, timeout: float = 180.0) -> UpResult:
        """Start the control plane, or reuse it if this state dir's one is already healthy.

        Idempotent: a healthy running control plane is left alone (only changed manifests are
        applied); a partly running one is stopped and started again on the same data.
        If a component fails to start, everything is stopped again and the error shows its
        log tail. If only the manifests fail to apply, the control plane keeps running (so
        they can be fixed and applied) and the error says so.
        """
        with self._state_lock():
            started = time.monotonic()
            if self.is_running():
                result = UpResult(True, self.server)
                result.timings["check"] = time.monotonic() - started
            else:
                self._stop_recorded()
                try:
                    result = self._start(timeout)
                except BaseException:
                    self._stop_recorded()
                    raise
            try:
                self._timed(
                    result,
                    "manifests",
                    lambda: self._apply_manifests(timeout, skip_unchanged=result.reused),
                )
            except (ControlPlaneError, BinaryError) as error:
                raise ControlPlaneError(
                    f"the control plane runs at {self.server}, but installing manifests "
                    f"failed: {error}"
                ) from error
            return result

    def down(self, timeout: float = 15.0, purge: bool = False) -> None:
        """Stop every component (SIGTERM, then SIGKILL after ``timeout``).

        The state dir (data, PKI, ports) is kept so the next `up` continues where this one
        stopped, unless ``purge`` removes it.
        """
        if not self.state_dir.is_dir():
            return
        with self._state_lock():
            self._stop_recorded(timeout)
        if purge:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def is_running(self) -> bool:
        """True if every component of this state dir runs and the API server is ready."""
        records = [processes.read_record(self._pid_path(c)) for c in COMPONENTS]
        if not all(r is not None and processes.is_alive(r) for r in records):
            return False
        try:
            return self._get("/readyz").status_code == 200
        except (ControlPlaneError, OSError):
            return False

    @contextlib.contextmanager
    def _state_lock(self) -> Iterator[None]:
        """Serialise up/down on one state dir across processes."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _timed(self, result: UpResult, phase: str, action: Callable[[], object]) -> None:
        began = time.monotonic()
        action()
        result.timings[phase] = time.monotonic() - began
        self._log(f"{phase}: {result.timings[phase]:.1f}s")

    def _start(self, timeout: float) -> UpResult:
        """Start every component in order, each waited for before the next one needs it."""
        result = UpResult(False, "")
        binaries: dict[str, Path] = {}

        def resolve() -> None:
            binaries.update(ensure_binaries(self.assets_dir, self._log))
            _write_json(self.state_dir / "binaries.json", {k: str(v) for k, v in binaries.items()})

        self._timed(result, "binaries", resolve)
        self._timed(result, "pki", self._prepare_config)
        result.server = self.server
        # Building binaries may take minutes; the start budget begins after it.
        deadline = _Deadline(timeout)
        self._timed(result, "etcd", lambda: self._start_etcd(binaries, deadline))
        self._timed(result, "apiserver", lambda: self._start_apiserver(binaries, deadline))
        self._timed(result, "bootstrap", self._bootstrap)
        self._timed(result, "controllers", lambda: self._start_controllers(binaries, deadline))
        return result

    def _prepare_config(self) -> None:
        """PKI, ports and kubeconfigs; all reused from an earlier start when present."""
        ensure_pki(self._pki.root, extra_api_hosts=(SERVICE_IP,))
        ports = self._ensure_ports()
        self._check_ports_free(ports)
        ca_pem = self._pki.ca_cert.read_bytes()
        clients = {
            "admin": self.kubeconfig,
            "controller-manager": self._kubeconfig_of("controller-manager"),
            "scheduler": self._kubeconfig_of("scheduler"),
            "kwok": self._kubeconfig_of("kwok"),
        }
        for client, path in clients.items():
            write_kubeconfig(
                path,
                self.server,
                ca_pem,
                user=client,
                cert_pem=self._pki.cert(client).read_bytes(),
                key_pem=self._pki.key(client).read_bytes(),
            )

    def _ensure_ports(self) -> Ports:
        path = self.state_dir / "ports.json"
        if path.is_file():
            return self.ports
        chosen: list[int] = []
        for _ in range(5):
            chosen.append(processes.free_port(avoid=lambda port: port in chosen))
        ports = Ports(*chosen)
        _write_json(path, asdict(ports))
        return ports

    def _check_ports_free(self, ports: Ports) -> None:
        for component, numbers in ports.by_component().items():
            for port in numbers:
                if processes.port_in_use(port):
                    raise ControlPlaneError(
                        f"port {port} on 127.0.0.1 (kept for {component} in "
                        f"{self.state_dir / 'ports.json'}) is in use by another process; stop "
                        f"that process, or delete ports.json to choose new ports"
                    )

    # ------------------------------------------------------------------------ components

    def _spawn(self, component: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        processes.start_detached(
            component,
            argv,
            self._log_path(component),
            self._pid_path(component),
            env=env,
            die_with_parent=self._die_with_parent,
        )

    def _start_etcd(self, binaries: dict[str, Path], deadline: _Deadline) -> None:
        ports, pki = self.ports, self._pki
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        client = f"https://127.0.0.1:{ports.etcd}"
        argv = [
            str(binaries["etcd"]),
            "--name=paved-dev",
            f"--data-dir={self.etcd_data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=paved-dev={peer}",
            f"--cert-file={pki.cert('etcd')}",
            f"--key-file={pki.key('etcd')}",
            f"--trusted-ca-file={pki.ca_cert}",
            "--client-cert-auth",
            # A throw-away dev store: skipping fsync makes every API write several times faster.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        self._spawn("etcd", argv)
        self._wait("etcd /health", self._etcd_healthy, deadline, ["etcd"])

    def _etcd_healthy(self) -> bool:
        pki = self._pki
        response = _http(
            "GET",
            f"https://127.0.0.1:{self.ports.etcd}/health",
            cert=(str(pki.cert("apiserver-etcd-client")), str(pki.key("apiserver-etcd-client"))),
            verify=str(pki.ca_cert),
            timeout=2,
        )
        return response.status_code == 200 and response.json().get("health") == "true"

    def _start_apiserver(self, binaries: dict[str, Path], deadline: _Deadline) -> None:
        ports, pki = self.ports, self._pki
        argv = [
            str(binaries["kube-apiserver"]),
            "--bind-address=127.0.0.1",
            # Explicit, so start-up never depends on the host having a default route.
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports.apiserver}",
            f"--cert-dir={self.state_dir / 'apiserver'}",
            f"--tls-cert-file={pki.cert('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--client-ca-file={pki.ca_cert}",
            f"--etcd-servers=https://127.0.0.1:{ports.etcd}",
            f"--etcd-cafile={pki.ca_cert}",
            f"--etcd-certfile={pki.cert('apiserver-etcd-client')}",
            f"--etcd-keyfile={pki.key('apiserver-etcd-client')}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki.sa_public_key}",
            f"--service-account-signing-key-file={pki.sa_private_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # Request-header authentication: controller-manager and scheduler look it up for
            # delegated authentication, and aggregated API servers need it.
            f"--requestheader-client-ca-file={pki.ca_cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.cert('front-proxy-client')}",
            f"--proxy-client-key-file={pki.key('front-proxy-client')}",
            "--allow-privileged=true",
            "--profiling=false",
            # As on clusters that enable it (OpenShift, hardened ones): an ownerReference with
            # blockOwnerDeletion needs `update` on the owner's finalizers, so the e2e tests prove
            # deploy/'s <kind>/finalizers rules are needed and sufficient.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            f"--audit-policy-file={self._write_audit_policy()}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
        ]
        self._spawn("kube-apiserver", argv)
        self._wait("kube-apiserver /readyz", self._api_ready, deadline, ["etcd", "kube-apiserver"])

    def _write_audit_policy(self) -> Path:
        path = self.state_dir / "audit-policy.yaml"
        path.write_text(yaml.safe_dump(AUDIT_POLICY))
        return path

    def _api_ready(self) -> bool:
        return self._get("/readyz").status_code == 200

    def _bootstrap(self) -> None:
        """RBAC for kwok (the ClusterRole kwok ships) and the fake nodes kwok will manage."""
        role_file = go_module_dir("kwok", "sigs.k8s.io/kwok") / "kustomize" / "rbac" / "role.yaml"
        role = yaml.safe_load(role_file.read_text())
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "paved-dev:kwok-controller"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role["metadata"]["name"],
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KWOK_USER}
            ],
        }
        nodes = [_fake_node(name, index) for index, name in enumerate(FAKE_NODES)]
        self.apply_objects([role, binding, *nodes])

    def _components_args(self, client: str, port: int) -> list[str]:
        """Flags kube-controller-manager and kube-scheduler share."""
        kubeconfig = self._kubeconfig_of(client)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={self._pki.cert('components')}",
            f"--tls-private-key-file={self._pki.key('components')}",
            # One instance per state dir: leader election would only delay restarts.
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _start_controllers(self, binaries: dict[str, Path], deadline: _Deadline) -> None:
        ports, pki = self.ports, self._pki
        kcm = [
            str(binaries["kube-controller-manager"]),
            *self._components_args("controller-manager", ports.controller_manager),
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-account-private-key-file={pki.sa_private_key}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.key('ca')}",
            "--cluster-name=paved-dev",
            "--kube-api-qps=100",
            "--kube-api-burst=200",
        ]
        scheduler = [
            str(binaries["kube-scheduler"]),
            *self._components_args("scheduler", ports.scheduler),
        ]
        kwok = [
            str(binaries["kwok"]),
            f"--kubeconfig={self._kubeconfig_of('kwok')}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            "--node-lease-duration-seconds=40",
        ]
        # kwok always merges ~/.kwok/kwok.yaml; a private HOME keeps a developer's file out.
        kwok_env = {**os.environ, "HOME": str(self.state_dir / "kwok")}
        (self.state_dir / "kwok").mkdir(exist_ok=True)
        self._spawn("kube-controller-manager", kcm)
        self._spawn("kube-scheduler", scheduler)
        self._spawn("kwok", kwok, env=kwok_env)
        everyone = list(COMPONENTS)
        for name, port in (
            ("kube-controller-manager", ports.controller_manager),
            ("kube-scheduler", ports.scheduler),
        ):
            self._wait(
                f"{name} /healthz", _healthz(port, pki.ca_cert), deadline, everyone, culprit=name
            )
        self._wait("fake nodes Ready (kwok)", self._nodes_ready, deadline, everyone)
        # The default ServiceAccount appears once the controller-manager's controllers work;
        # before that, pods in a fresh namespace would be rejected.
        self._wait(
            "ServiceAccount default/default",
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default").ok,
            deadline,
            everyone,
            culprit="kube-controller-manager",
        )

    def _nodes_ready(self) -> bool:
        for name in FAKE_NODES:
            response = self._get(f"/api/v1/nodes/{name}")
            if not response.ok:
                return False
            conditions = response.json().get("status", {}).get("conditions", [])
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return False
        return True

    def _stop_recorded(self, timeout: float = 15.0) -> None:
        """Stop whatever the pid files name: clients first, etcd last."""
        records = {c: processes.read_record(self._pid_path(c)) for c in COMPONENTS}
        clients = [r for c, r in records.items() if r is not None and c != "etcd"]
        processes.stop_all(clients, timeout)
        if records["etcd"] is not None:
            processes.stop_all([records["etcd"]], timeout)
        for component in COMPONENTS:
            self._pid_path(component).unlink(missing_ok=True)

    # ------------------------------------------------------------------------ waiting

    def _wait(
        self,
        what: str,
        check: Callable[[], bool],
        deadline: _Deadline,
        watched: Sequence[str],
        culprit: str | None = None,
    ) -> None:
        """Poll ``check`` until true; fail fast with the log tail if a watched process dies.

        On timeout the error shows the log of ``culprit`` (default: the last watched one).
        """
        while True:
            for component in watched:
                record = processes.read_record(self._pid_path(component))
                if record is None or not processes.is_alive(record):
                    raise ControlPlaneError(
                        f"{component} exited while waiting for {what}; "
                        f"log {self._log_path(component)}:\n"
                        + processes.log_tail(self._log_path(component))
                    )
            with contextlib.suppress(ControlPlaneError, OSError, ValueError):
                if check():
                    return
            if deadline.expired():
                culprit = culprit or watched[-1]
                raise ControlPlaneError(
                    f"timed out after {deadline.seconds:.0f}s waiting for {what}; "
                    f"log {self._log_path(culprit)}:\n"
                    + processes.log_tail(self._log_path(culprit))
                )
            time.sleep(0.2)

    # ------------------------------------------------------------------------ API access

    def _get(self, path: str) -> requests.Response:
        return self._request("GET", path)

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """An admin request to the API server (client certificate, CA-verified)."""
        kwargs.setdefault("timeout", 10)
        return _http(
            method,
            self.server + path,
            cert=(str(self._pki.cert("admin")), str(self._pki.key("admin"))),
            verify=str(self._pki.ca_cert),
            **kwargs,
        )

    def get_json(self, path: str) -> Any | None:
        """GET ``path`` as admin: the decoded answer, None when the object does not exist."""
        answer = self._get(path)
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return answer.json()

    def serviceaccount_kubeconfig(
        self,
        namespace: str,
        name: str,
        path: Path | str,
        expiration_seconds: int = 86400,
    ) -> Path:
        """Write a kubeconfig that authenticates as ServiceAccount ``namespace/name``.

        The token comes from the TokenRequest API, so it is bound to the ServiceAccount's
        lifetime and expires; the operator under test runs with it, proving the RBAC in deploy/.
        """
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        }
        response = self._request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", json=body
        )
        if response.status_code == 404:
            raise ControlPlaneError(
                f"ServiceAccount {namespace}/{name} does not exist; apply it first"
            )
        if not response.ok:
            raise ControlPlaneError(
                f"TokenRequest for ServiceAccount {namespace}/{name} failed: "
                f"HTTP {response.status_code} {_api_message(response)}"
            )
        return write_kubeconfig(
            Path(path),
            self.server,
            self._pki.ca_cert.read_bytes(),
            user=f"system:serviceaccount:{namespace}:{name}",
            token=response.json()["status"]["token"],
            namespace=namespace,
        )

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the control plane's kubectl (admin kubeconfig unless ``kubeconfig``)."""
        command = [str(self.kubectl_path), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        env = {**os.environ, "KUBECACHEDIR": str(self.state_dir / "kubectl-cache")}
        result = subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} failed (exit {result.returncode}):\n"
                + result.stderr.strip()
            )
        return result

    def apply(self, paths: Iterable[Path | str], timeout: float = 60.0) -> None:
        """Create or update the YAML manifests in ``paths`` (files or folders) with SSA.

        CRDs go first and must be Established before the rest, so a folder may hold a CRD and
        objects of its kind. kustomization.yaml files are skipped.
        """
        try:
            manifests = load_manifests(paths)
        except ManifestError as error:
            raise ControlPlaneError(str(error)) from error
        self._apply(manifests, timeout)

    def apply_objects(self, objects: Sequence[dict[str, Any]], timeout: float = 60.0) -> None:
        """Server-side apply ``objects`` (field manager paved-dev), CRDs and Namespaces first."""
        self._apply([Manifest("<objects>", obj) for obj in objects], timeout)

    def _apply(self, manifests: Sequence[Manifest], timeout: float) -> None:
        crds, others = split_for_apply(manifests)
        if crds:
            self._apply_batch(crds)
            names = [f"crd/{m.obj['metadata']['name']}" for m in crds]
            self.kubectl(
                "wait", "--for=condition=Established", f"--timeout={max(1, int(timeout))}s", *names
            )
        if others:
            self._apply_batch(others)

    def _apply_batch(self, manifests: Sequence[Manifest]) -> None:
        """One kubectl call for the whole batch (fast); on failure, find the guilty files."""
        result = self.kubectl(*_APPLY, input=to_list(manifests), check=False)
        if result.returncode == 0:
            return
        sources = list(dict.fromkeys(m.source for m in manifests))
        if len(sources) > 1:
            guilty = [
                source
                for source in sources
                if self.kubectl(
                    *_APPLY,
                    "--dry-run=server",
                    input=to_list([m for m in manifests if m.source == source]),
                    check=False,
                ).returncode
                != 0
            ]
            sources = guilty or sources
        raise ControlPlaneError(f"applying {', '.join(sources)} failed:\n{result.stderr.strip()}")

    def _apply_manifests(self, timeout: float, skip_unchanged: bool = False) -> None:
        """Gateway API standard CRDs, the SecurityGroupPolicy CRD, then the repo's crds/ and
        compositions/ (if any).

        With ``skip_unchanged`` (re-running `up` on a running control plane) nothing is sent
        when the manifests equal the last applied ones and all their CRDs still exist: applying
        the large Gateway API CRDs again costs seconds of API server CPU for no change.
        """
        try:
            manifests = load_manifests([gateway_api_crd_dir(), security_group_policy_crd(), *self._repo_manifests()])
        except ManifestError as error:
            raise ControlPlaneError(str(error)) from error
        digest = hashlib.sha256(to_list(manifests).encode()).hexdigest()
        marker = self.state_dir / "manifests.sha256"
        if skip_unchanged and _read_text(marker) == digest and self._crds_exist(manifests):
            self._log("manifests unchanged since the last apply")
            return
        self._apply(manifests, timeout=max(timeout, 30.0))
        marker.write_text(digest)

    def _crds_exist(self, manifests: Sequence[Manifest]) -> bool:
        response = self._get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        response.raise_for_status()
        existing = {item["metadata"]["name"] for item in response.json()["items"]}
        return {m.obj["metadata"]["name"] for m in manifests if is_crd(m.obj)} <= existing

    def _repo_manifests(self) -> list[Path]:
        """The ``manifests`` argument, else $PAVED_DEV_MANIFESTS, else crds/ (with the third-party
        PolicyReport CRD) + compositions/. Policies are not installed here: they are validated
        by the operator's webhook, so `paved dev demo` applies them once the operator runs."""
        if self._manifests is not None:
            return self._manifests
        env = os.environ.get("PAVED_DEV_MANIFESTS")
        if env is not None:
            return [Path(p) for p in env.split(os.pathsep) if p]
        try:
            root = repo_root()
        except BinaryError:
            return []
        return [root / "crds", root / "crds" / "third-party", root / "compositions"]


# ---------------------------------------------------------------------------- helpers


def _http(method: str, url: str, **kwargs: Any) -> requests.Response:
    """One HTTP request that ignores proxy variables: every endpoint here is loopback."""
    import requests

    with requests.Session() as session:
        session.trust_env = False
        return session.request(method, url, **kwargs)


def _healthz(port: int, ca_file: Path) -> Callable[[], bool]:
    def check() -> bool:
        response = _http("GET", f"https://127.0.0.1:{port}/healthz", verify=str(ca_file), timeout=2)
        return response.status_code == 200

    return check


def _api_message(response: requests.Response) -> str:
    try:
        return str(response.json().get("message", ""))
    except ValueError:
        return response.text[:200]


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _fake_node(name: str, index: int) -> dict[str, Any]:
    """A Node that kwok manages (by annotation) and reports Ready; large, untainted."""
    resources = {"cpu": "64", "memory": "256Gi", "pods": "2000", "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
                # Two zones, so topology spread (availability: high) has something to spread on.
                "topology.kubernetes.io/zone": f"zone-{'abcdefgh'[index % 8]}",
            },
        },
        "spec": {},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "addresses": [
                {"type": "InternalIP", "address": f"10.250.0.{index + 1}"},
                {"type": "Hostname", "address": name},
            ],
        },
    }
