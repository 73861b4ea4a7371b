"""ExternalSecretRef end to end: `paved run` (deploy/'s RBAC) + real API server + OpenBao + moto.

ESO's well-known example — a remote `production/database` with `username` and `password`
into the Secret `db-credentials` — with Vault (Kubernetes auth: the operator asks the API
server for a ServiceAccount token, OpenBao reviews it with a real TokenReview) and with AWS
Secrets Manager (moto server, credentials from a Secret). Then: a target Secret edited or
deleted by hand is restored at once; rotation reaches the Secret
within one refresh and restarts an opted-in Deployment exactly once; an OpenBao that is
killed leaves the Secret untouched and the ref Stale, and a restart recovers it; a
ClusterSecretStore refuses keys outside a namespace's prefix without reading them (OpenBao's
audit log proves it); bad input gives conditions naming the field while neighbours keep
syncing; a store authenticating as a ServiceAccount reads nothing until its namespace opts in
to ServiceAccount tokens (deploy/token-policy.yaml); and no secret value ever shows up in the
operator's log, Events or status.

The operator runs here as a platform would run it: moto is its AWS endpoint
(PAVED_AWS_ENDPOINT_URL, with credentials of its own) and the session's OpenBao its Vault
(PAVED_VAULT_ADDR, PAVED_VAULT_TOKEN = the root token). Tenants never borrow that power: a
tenant's SecretStore without credentials of its namespace, or naming an endpoint of its own,
is refused and reads nothing (moto's request recording, OpenBao's audit log and the
operator's call counter prove it), unless an IntentPolicy allows the namespace.

The outage test needs an OpenBao that can die and come back with its data: `bao server`
with raft storage on disk (init + unseal through the API), function-scoped, defined here.
"""

from __future__ import annotations

import base64
import json
import os
import secrets as random
import signal
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures._servers import ServerProcess, free_port
from fixtures.aws import MotoServer
from e2e.cluster import Cluster, condition
from fixtures.cluster import Kubectl, wait_for
from fixtures.operator import OperatorProcess
from fixtures.vault import OpenBao, bao_binary, configure_kubernetes_auth
from paved.providers.secretstores import SERVICE_ACCOUNT_TOKENS_LABEL
from paved.secretsync import breaker
from paved.secretsync.values import content_hash

pytestmark = [pytest.mark.cluster, pytest.mark.vault]

REFRESH = 10  # seconds: the refreshInterval of the e2e refs
MARKERS: list[str] = []  # every secret value written by this module; none may leak


def marker(label: str) -> str:
    value = f"MARKER-{label}-{random.token_hex(6)}"
    MARKERS.append(value)
    return value


# --- small helpers ----------------------------------------------------------------------------


def secret_data(cluster: Cluster, namespace: str, name: str) -> dict[str, str] | None:
    body = cluster.get("secret", name, namespace)
    if body is None:
        return None
    return {key: base64.b64decode(value).decode() for key, value in (body.get("data") or {}).items()}


def ref(name: str, store: str, *, key: str = "production/database", kind: str = "SecretStore", interval: str = f"{REFRESH}s",
        target_name: str | None = None, data: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "paved.dev/v1alpha1",
        "kind": "ExternalSecretRef",
        "metadata": {"name": name},
        "spec": {
            "storeRef": {"name": store, "kind": kind},
            "refreshInterval": interval,
            "data": data if data is not None else [
                {"secretKey": "username", "remoteRef": {"key": key, "property": "username"}},
                {"secretKey": "password", "remoteRef": {"key": key, "property": "password"}},
            ],
            "target": {"name": target_name or name},
        },
    }
    body["spec"].update(spec)
    return body


def deployment(name: str, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": {"paved.dev/restart-on-secret-change": secret}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                         "envFrom": [{"secretRef": {"name": secret}}]}]},
            },
        },
    }


def kv_put(client: Any, path: str, data: dict[str, str]) -> None:
    client.secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


# --- the operator as the platform runs it ----------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def platform_operator(operator: OperatorProcess, moto_server: MotoServer, openbao: OpenBao) -> Iterator[OperatorProcess]:
    """The operator restarted with the platform's endpoints and its own credentials (see the
    module docstring); back to the session's plain environment afterwards."""
    operator.env = {**moto_server.env(), "PAVED_VAULT_ADDR": openbao.addr, "PAVED_VAULT_CACERT": openbao.ca_cert,
                    "PAVED_VAULT_TOKEN": openbao.root_token}
    operator.restart()
    try:
        yield operator
    finally:
        operator.env = {}
        operator.restart()


def allow(cluster: Cluster, name: str, namespace: str, kinds: list[str], *allowances: str) -> None:
    """An IntentPolicy allowing `allowances` to `kinds` in `namespace` (the API server labels every
    namespace with kubernetes.io/metadata.name)."""
    cluster.apply({"apiVersion": "paved.dev/v1alpha1", "kind": "IntentPolicy", "metadata": {"name": name},
                   "spec": {"match": {"kinds": kinds, "namespaceSelector": {
                       "matchLabels": {"kubernetes.io/metadata.name": namespace}}}, "allow": list(allowances)}})


def allow_service_account_tokens(cluster: Cluster, namespace: str) -> None:
    """What the platform does for a namespace whose stores authenticate as its ServiceAccounts:
    deploy/token-policy.yaml gives the operator their tokens only then."""
    cluster.kubectl("label", "namespace", namespace, f"{SERVICE_ACCOUNT_TOKENS_LABEL}=allowed", "--overwrite")


# --- Vault with Kubernetes auth -------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubernetes_auth(openbao: OpenBao, control_plane: Any, operator: OperatorProcess) -> str:
    """OpenBao's kubernetes auth method pointed at the test API server (real TokenReview)."""
    return configure_kubernetes_auth(openbao, control_plane, mount="kubernetes").mount


def vault_store(cluster: Cluster, openbao: OpenBao, namespace: str, *, name: str = "vault", role: str | None = None,
                prefix: str = "production") -> dict[str, Any]:
    """ServiceAccount secrets-reader, a Vault role bound to it reading `prefix/*`, and the SecretStore."""
    vault = openbao.client
    role = role or f"reader-{namespace}"
    vault.sys.create_or_update_policy(f"{namespace}-read", f"""
path "secret/data/{prefix}/*" {{ capabilities = ["read"] }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["read"] }}
""")
    vault.auth.kubernetes.create_role(f"reader-{namespace}", bound_service_account_names=["secrets-reader"],
                                      bound_service_account_namespaces=[namespace], policies=[f"{namespace}-read"], ttl="1h")
    store = {
        "apiVersion": "paved.dev/v1alpha1",
        "kind": "SecretStore",
        "metadata": {"name": name},
        "spec": {"provider": {"vault": {
            "server": openbao.addr,
            "path": "secret",
            "caBundle": Path(openbao.ca_cert).read_text(),
            "auth": {"kubernetes": {"mountPath": "kubernetes", "role": role, "serviceAccountRef": {"name": "secrets-reader"}}},
        }}},
    }
    allow_service_account_tokens(cluster, namespace)
    cluster.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "secrets-reader"}}, store, namespace=namespace)
    return store


def test_vault_database_example_rotation_restarts_once(
    kubectl: Kubectl, cluster: Cluster, namespace: str, openbao: OpenBao, kubernetes_auth: str, operator: OperatorProcess
) -> None:
    first, second = marker("vault-v1"), marker("vault-v2")
    kv_put(openbao.client, "production/database", {"username": "app", "password": first})
    vault_store(cluster, openbao, namespace)
    cluster.apply(deployment("web", "db-credentials"), namespace=namespace)
    created = time.monotonic()
    cluster.apply(ref("db-credentials", "vault"), namespace=namespace)

    cluster.wait_condition("secretstore", "vault", namespace, status="True", reason="Authenticated")
    cluster.wait_condition("esr", "db-credentials", namespace, status="True", timeout=30)
    assert time.monotonic() - created < REFRESH, "the first sync must not wait for the refresh interval"
    assert secret_data(cluster, namespace, "db-credentials") == {"username": "app", "password": first}
    esr = cluster.get("esr", "db-credentials", namespace) or {}
    secret = cluster.get("secret", "db-credentials", namespace) or {}
    status = esr["status"]
    assert status["sourceVersions"] == {"production/database": str(_vault_version(openbao, "production/database"))}
    assert status["contentHash"] == secret["metadata"]["annotations"]["paved.dev/content-hash"]
    # The digest shown in status is keyed with the operator's own key, so it cannot be used to
    # guess a value by hashing candidates.
    key_secret = cluster.get("secret", "paved-content-hash-key", "paved-system") or {}
    key = base64.b64decode(key_secret["data"]["key"])
    content = {"username": b"app", "password": first.encode()}
    assert status["contentHash"] == content_hash(key, namespace, "db-credentials", "Opaque", content)
    assert cluster.condition("esr", "db-credentials", namespace, type_="Stale")["status"] == "False"
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "ExternalSecretRef"
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "paved"
    web = cluster.get("deployment", "web", namespace) or {}
    generation = web["metadata"]["generation"]
    assert "paved.dev/secret-hash" not in (web["spec"]["template"]["metadata"].get("annotations") or {})

    # Two status writers, each applying only its own fields: the audit's PolicyCompliant
    # (field manager paved-policy-audit) must outlive the engine's writes (paved-secret-sync).
    cluster.wait_condition("esr", "db-credentials", namespace, status="True", type_="PolicyCompliant", timeout=15)
    audit_write = status_owner(kubectl, namespace, "db-credentials", "paved-policy-audit")

    # Rotation: visible in the Secret within one refresh, and ONE rolling restart of `web`.
    kv_put(openbao.client, "production/database", {"username": "app", "password": second})
    rotated = time.monotonic()
    wait_for(lambda: (secret_data(cluster, namespace, "db-credentials") or {}).get("password") == second,
             timeout=REFRESH + 8, interval=0.5, what="the rotated password in db-credentials")
    assert time.monotonic() - rotated <= REFRESH + 5
    wait_for(lambda: (cluster.get("deployment", "web", namespace) or {})["metadata"]["generation"] == generation + 1,
             timeout=20, what="one rolling restart of web")
    time.sleep(2 * REFRESH + 2)  # two more cycles: no further restart without a further change
    web = cluster.get("deployment", "web", namespace) or {}
    assert web["metadata"]["generation"] == generation + 1
    assert "paved.dev/secret-hash" in web["spec"]["template"]["metadata"]["annotations"]
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert [e for e in events if e["reason"] == "WorkloadRestarted"], "the restart is recorded as an Event on the ref"
    # The rotation rewrote the engine's status; the audit's condition was neither dropped nor rewritten.
    assert (cluster.get("esr", "db-credentials", namespace) or {})["status"]["contentHash"] != status["contentHash"]
    assert status_owner(kubectl, namespace, "db-credentials", "paved-policy-audit") == audit_write
    engine_conditions = status_owner(kubectl, namespace, "db-credentials", "paved-secret-sync")["fieldsV1"]["f:status"]["f:conditions"]
    assert set(engine_conditions) == {'k:{"type":"Ready"}', 'k:{"type":"Stale"}'}


def status_owner(kubectl: Kubectl, namespace: str, name: str, manager: str) -> dict[str, Any]:
    """The managedFields entry of `manager` on the ref's status."""
    ref = json.loads(kubectl("get", "esr", name, "-n", namespace, "-o", "json", "--show-managed-fields").stdout)
    entries = ref["metadata"]["managedFields"]
    [entry] = [e for e in entries if e["manager"] == manager and e.get("subresource") == "status"]
    return entry


def _vault_version(openbao: OpenBao, path: str) -> int:
    return openbao.client.secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")["data"]["current_version"]


# --- AWS Secrets Manager (moto) --------------------------------------------------------------------


def test_aws_secrets_manager_database_example(kubectl: Kubectl, cluster: Cluster, namespace: str, moto_server: MotoServer,
                                              operator: OperatorProcess) -> None:
    first, second = marker("aws-v1"), marker("aws-v2")
    sm = moto_server.client("secretsmanager")
    name = "production/database"
    try:
        sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    except sm.exceptions.ResourceNotFoundException:
        pass
    sm.create_secret(Name=name, SecretString=json.dumps({"username": "app", "password": first}))
    credentials = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aws-credentials"},
                   "stringData": {"access-key-id": "AKIAPAVEDTEST0000000", "secret-access-key": "test-secret-key"}}
    store = {
        "apiVersion": "paved.dev/v1alpha1", "kind": "SecretStore", "metadata": {"name": "aws"},
        "spec": {"provider": {"aws": {
            "service": "SecretsManager", "region": moto_server.region, "endpointURL": moto_server.endpoint_url,
            "auth": {"secretRef": {"accessKeyIDSecretRef": {"name": "aws-credentials", "key": "access-key-id"},
                                   "secretAccessKeySecretRef": {"name": "aws-credentials", "key": "secret-access-key"}}},
        }}},
    }
    cluster.apply(credentials, store, deployment("api", "db-credentials"), namespace=namespace)
    cluster.apply(ref("db-credentials", "aws"), namespace=namespace)
    cluster.wait_condition("secretstore", "aws", namespace, status="True", reason="Authenticated")
    cluster.wait_condition("esr", "db-credentials", namespace, status="True", timeout=30)
    assert secret_data(cluster, namespace, "db-credentials") == {"username": "app", "password": first}

    # Edited or deleted by hand: restored at once (an unchanged refresh would not rewrite it).
    tampered = base64.b64encode(b"edited-by-hand").decode()
    kubectl("patch", "secret", "db-credentials", "-n", namespace, "--type", "merge", "-p", json.dumps({"data": {"password": tampered}}))
    wait_for(lambda: (secret_data(cluster, namespace, "db-credentials") or {}).get("password") == first,
             timeout=REFRESH / 2, interval=0.2, what="the hand-edited Secret restored")
    kubectl("delete", "secret", "db-credentials", "-n", namespace)
    wait_for(lambda: (secret_data(cluster, namespace, "db-credentials") or {}).get("password") == first,
             timeout=REFRESH / 2, interval=0.2, what="the deleted Secret written again")
    generation = (cluster.get("deployment", "api", namespace) or {})["metadata"]["generation"]

    # Unchanged cycles cost one ListSecrets each and no value read.
    before = _aws_calls(operator)
    time.sleep(2 * REFRESH + 1)
    after = _aws_calls(operator)
    assert after["batch_get_secret_value"] == before["batch_get_secret_value"]
    assert 1 <= after["list_secrets"] - before["list_secrets"] <= 4

    sm.put_secret_value(SecretId=name, SecretString=json.dumps({"username": "app", "password": second}))
    wait_for(lambda: (secret_data(cluster, namespace, "db-credentials") or {}).get("password") == second,
             timeout=REFRESH + 8, interval=0.5, what="the rotated password from Secrets Manager")
    wait_for(lambda: (cluster.get("deployment", "api", namespace) or {})["metadata"]["generation"] == generation + 1,
             timeout=20, what="one rolling restart of api")
    assert _aws_calls(operator)["batch_get_secret_value"] - after["batch_get_secret_value"] == 1
    sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def _aws_calls(operator: OperatorProcess) -> dict[str, float]:
    return {op: operator.metric("paved_provider_api_calls_total", provider="aws-secretsmanager", operation=op)
            for op in ("list_secrets", "batch_get_secret_value")}


# --- OpenBao outage ---------------------------------------------------------------------------------


@dataclass
class RestartableOpenBao:
    """A `bao server` with raft storage on disk: can be killed and started again with its data."""

    workdir: Path
    port: int
    process: ServerProcess | None = None
    unseal_key: str = field(default="", repr=False)
    root_token: str = field(default="", repr=False)

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def audit_log(self) -> Path:
        """Every request the server handled (paths in clear, values HMAC'd)."""
        return self.workdir / "audit.log"

    def audited_reads(self) -> set[str]:
        paths = set()
        for line in self.audit_log.read_text().splitlines():
            entry = json.loads(line)
            request = entry.get("request") or {}
            if entry.get("type") == "request" and request.get("operation") == "read":
                paths.add(request.get("path", ""))
        return paths

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.addr}/v1/{path}", method=method,
                                         data=json.dumps(body).encode() if body is not None else None)
        if token:
            request.add_header("X-Vault-Token", token)
        # 30 s: a fresh single raft node elects itself only after its randomised election
        # timeout (5-10 s), and sys/init waits for that; 10 s timed out now and then.
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback
            text = answer.read()
        return json.loads(text) if text else {}

    def start(self) -> None:
        config = self.workdir / "config.hcl"
        (self.workdir / "data").mkdir(exist_ok=True)
        config.write_text(f"""
storage "raft" {{
  path = "{self.workdir / 'data'}"
  node_id = "paved-e2e"
}}
listener "tcp" {{
  address = "127.0.0.1:{self.port}"
  cluster_address = "127.0.0.1:{self.port + 1}"
  tls_disable = true
}}
api_addr = "{self.addr}"
cluster_addr = "http://127.0.0.1:{self.port + 1}"
audit "file" "paved" {{
  options {{
    file_path = "{self.audit_log}"
  }}
}}
""")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir)}
        self.process = ServerProcess("openbao-raft", [bao_binary(), "server", f"-config={config}"],
                                     self.workdir / "openbao.log", env=env)
        self.process.wait_http(f"{self.addr}/v1/sys/health", timeout=60, ok=(200, 429, 472, 473, 501, 503))
        if not self.unseal_key:
            answer = self._request("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
            self.unseal_key, self.root_token = answer["keys_base64"][0], answer["root_token"]
            self.process._secrets = (self.root_token, self.unseal_key)
        self._request("PUT", "sys/unseal", {"key": self.unseal_key})
        self.process.wait_http(f"{self.addr}/v1/sys/health", timeout=60, ok=(200,))

    def kill(self) -> None:
        """SIGKILL: no shutdown, as if the node died."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.stop(grace=5)
            self.process = None

    def client(self) -> Any:
        import hvac

        return hvac.Client(url=self.addr, token=self.root_token, timeout=10)


@pytest.fixture
def restartable_openbao(tmp_path: Path) -> Iterator[RestartableOpenBao]:
    port = free_port(avoid=lambda p: p >= 65000)
    server = RestartableOpenBao(tmp_path, port)
    server.start()
    server.client().sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.stop()


def test_openbao_outage_keeps_the_secret_and_sets_stale_then_recovers(
    kubectl: Kubectl, cluster: Cluster, namespace: str, restartable_openbao: RestartableOpenBao, operator: OperatorProcess
) -> None:
    bao = restartable_openbao
    value = marker("outage")
    client = bao.client()
    wait_for(lambda: _try(lambda: kv_put(client, "production/database", {"username": "app", "password": value})),
             timeout=20, what="the KV engine to accept writes")
    client.sys.create_or_update_policy("read", 'path "secret/*" { capabilities = ["read"] }')
    token = client.auth.token.create(policies=["read"], ttl="2h")["auth"]["client_token"]
    # This Vault is not the platform's (PAVED_VAULT_ADDR): the platform allows the namespace to name it.
    allow(cluster, f"{namespace}-any-endpoint", namespace, ["SecretStore"], "AnyEndpoint")
    cluster.apply(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vault-token"}, "stringData": {"token": token}},
        {"apiVersion": "paved.dev/v1alpha1", "kind": "SecretStore", "metadata": {"name": "bao"},
         "spec": {"provider": {"vault": {"server": bao.addr, "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token"}}}}}},
        ref("db-credentials", "bao", interval="5s"), namespace=namespace)
    cluster.wait_condition("esr", "db-credentials", namespace, status="True", timeout=30)
    before = cluster.get("secret", "db-credentials", namespace) or {}
    good = (cluster.get("esr", "db-credentials", namespace) or {})["status"]["lastGoodSyncTime"]

    bao.kill()
    down = condition(cluster.wait_condition("esr", "db-credentials", namespace, status="False", reason="StoreUnreachable", timeout=30))
    assert "unreachable" in down["message"]
    stale = condition(cluster.wait_condition("esr", "db-credentials", namespace, status="True", type_="Stale", timeout=10), "Stale")
    assert good in stale["message"]
    time.sleep(20)  # several refresh intervals and retries while the backend is down
    during = cluster.get("secret", "db-credentials", namespace) or {}
    assert during["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert during["data"] == before["data"]
    status = (cluster.get("esr", "db-credentials", namespace) or {})["status"]
    assert status["lastGoodSyncTime"] == good and status["lastRefreshTime"] > good

    bao.start()  # same data, unsealed again; the token is still valid
    # The outage opened the store's circuit: the first probe after the cool-down reconnects (one
    # made while OpenBao was still starting doubles the cool-down).
    cluster.wait_condition("esr", "db-credentials", namespace, status="True", timeout=30 + 2 * breaker.COOL_DOWN)
    cluster.wait_condition("esr", "db-credentials", namespace, status="False", type_="Stale", timeout=10)
    after = cluster.get("secret", "db-credentials", namespace) or {}
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]  # same content: not rewritten
    kubectl("delete", "intentpolicy", f"{namespace}-any-endpoint", check=False)


def _try(action: Any) -> bool:
    try:
        action()
        return True
    except Exception:  # noqa: BLE001
        return False


# --- ClusterSecretStore allowances -------------------------------------------------------------------


def test_cluster_store_refuses_keys_outside_the_namespace_prefix(
    kubectl: Kubectl, cluster: Cluster, namespace: str, restartable_openbao: RestartableOpenBao, operator: OperatorProcess
) -> None:
    bao = restartable_openbao
    client = bao.client()
    mine, theirs = marker("tenant-mine"), marker("tenant-theirs")
    other = f"not-{namespace}"
    wait_for(lambda: _try(lambda: kv_put(client, f"teams/{namespace}/db", {"username": "a", "password": mine})),
             timeout=20, what="the KV engine to accept writes")
    kv_put(client, f"teams/{other}/db", {"username": "b", "password": theirs})
    client.sys.create_or_update_policy("teams-read", 'path "secret/*" { capabilities = ["read"] }')
    token = client.auth.token.create(policies=["teams-read"], ttl="2h")["auth"]["client_token"]
    store_name = f"shared-{namespace}"
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{store_name}-token"}, "stringData": {"token": token}},
                  namespace="paved-system")  # a ClusterSecretStore's credentials live in the operator's namespace
    cluster.apply({
        "apiVersion": "paved.dev/v1alpha1", "kind": "ClusterSecretStore", "metadata": {"name": store_name},
        "spec": {
            "provider": {"vault": {"server": bao.addr, "auth": {"tokenSecretRef": {"name": f"{store_name}-token", "key": "token"}}}},
            "access": [{"namespaces": [namespace], "keyPrefixes": ["teams/{namespace}/"]}],
        },
    })
    try:
        cluster.apply(ref("mine", store_name, kind="ClusterSecretStore", key=f"teams/{namespace}/db"),
                      ref("theirs", store_name, kind="ClusterSecretStore", key=f"teams/{other}/db"), namespace=namespace)
        cluster.wait_condition("clustersecretstore", store_name, None, status="True", reason="Authenticated")
        cluster.wait_condition("esr", "mine", namespace, status="True", timeout=30)
        assert secret_data(cluster, namespace, "mine") == {"username": "a", "password": mine}
        refused = condition(cluster.wait_condition("esr", "theirs", namespace, status="False", reason="AccessDenied", timeout=30))
        assert refused["message"].startswith("spec.data[0].remoteRef.key: ")
        assert f"teams/{namespace}/" in refused["message"] and "nothing was read" in refused["message"]
        assert cluster.get("secret", "theirs", namespace) is None
        time.sleep(REFRESH + 2)  # more cycles of both refs
        reads = bao.audited_reads()
        assert f"secret/metadata/teams/{namespace}/db" in reads  # the allowed key was read ...
        assert not {path for path in reads if f"teams/{other}/" in path}, "... the refused one never"
    finally:
        kubectl("delete", "clustersecretstore", store_name, "--wait=false", check=False)


# --- tenants never borrow Paved's power -------------------------------------------------------------

ROLE = "arn:aws:iam::123456789012:role/tenant-secrets"
AWS_READS = ("secretsmanager.ListSecrets", "secretsmanager.BatchGetSecretValue", "secretsmanager.GetSecretValue",
             "AmazonSSM.GetParameters", "AmazonSSM.DescribeParameters")


def aws_store(name: str, region: str, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "SecretStore", "metadata": {"name": name},
            "spec": {"provider": {"aws": {"service": "SecretsManager", "region": region, **fields}}}}


def access_key(request: dict[str, Any]) -> str | None:
    """The access key id a recorded AWS request was signed with (None: unsigned)."""
    authorization = request["headers"].get("Authorization") or ""
    return authorization.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in authorization else None


STS_EXCHANGES = ("AssumeRole", "AssumeRoleWithWebIdentity")


def action(request: dict[str, Any]) -> str:
    """`secretsmanager.ListSecrets` (JSON protocols) or `AssumeRole` (query protocols: the Action)."""
    target = request["headers"].get("X-Amz-Target")
    if target:
        return str(target)
    fields = dict(part.split("=", 1) for part in request["body"].split("&") if "=" in part)
    return fields.get("Action", "?")


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def web_identity_claims(request: dict[str, Any]) -> dict[str, Any]:
    """The claims of the ServiceAccount token an AssumeRoleWithWebIdentity request carries."""
    fields = dict(part.split("=", 1) for part in request["body"].split("&"))
    return jwt_claims(urllib.parse.unquote(fields["WebIdentityToken"]))


def put_moto_secret(moto_server: MotoServer, name: str, value: dict[str, str]) -> None:
    sm = moto_server.client("secretsmanager")
    try:
        sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    except sm.exceptions.ResourceNotFoundException:
        pass
    sm.create_secret(Name=name, SecretString=json.dumps(value))


def refused(cluster: Cluster, namespace: str, store: str, field: str, ref_name: str) -> None:
    """The store says NotAllowed naming `field`; its ref says StoreNotAllowed naming
    spec.storeRef.name and the store's refusal; no Secret."""
    condition_ = condition(cluster.wait_condition("secretstore", store, namespace, status="False", reason="NotAllowed"))
    assert condition_["message"].startswith(f"{field}: "), condition_["message"]
    assert condition_["message"].endswith("nothing was read")
    on_ref = condition(cluster.wait_condition("esr", ref_name, namespace, status="False", reason="StoreNotAllowed", timeout=30))
    assert on_ref["message"].startswith(f"spec.storeRef.name: SecretStore {namespace}/{store} may not act: {field}: ")
    assert cluster.get("secret", ref_name, namespace) is None


def test_a_tenant_cannot_read_with_the_operators_aws_identity_or_through_an_endpoint_of_its_own(
    cluster: Cluster, namespace: str, moto_server: MotoServer, operator: OperatorProcess
) -> None:
    evil, victim_key = namespace, f"team-b/{namespace}/payments"
    put_moto_secret(moto_server, victim_key, {"username": "b", "password": marker("team-b")})
    region = moto_server.region
    keys = {"accessKeyIDSecretRef": {"name": "evil-keys", "key": "id"},
            "secretAccessKeySecretRef": {"name": "evil-keys", "key": "secret"}}
    moto_port = moto_server.endpoint_url.rsplit(":", 1)[1]
    attempts = {  # store -> (its spec, the field the refusal names)
        "borrow": ({}, "spec.provider.aws.auth"),
        "borrow-role": ({"auth": {"role": ROLE}}, "spec.provider.aws.auth"),
        # moto itself under another name: it would answer, so only the rule stops the read
        "own-endpoint": ({"endpointURL": f"http://localhost:{moto_port}", "auth": {"secretRef": keys}},
                         "spec.provider.aws.endpointURL"),
        "metadata-endpoint": ({"endpointURL": "http://169.254.169.254", "auth": {"secretRef": keys}},
                              "spec.provider.aws.endpointURL"),
        "other-account": ({"auth": {"serviceAccountRef": {"name": "paved-operator", "namespace": "paved-system"},
                                    "role": ROLE}}, "spec.provider.aws.auth.serviceAccountRef.namespace"),
    }
    sts_before = operator.metric("paved_provider_api_calls_total", provider="aws-sts")
    moto_server.start_recording()
    try:
        cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "evil-keys"},
                       "stringData": {"id": "AKIAEVILEVILEVIL0000", "secret": "evil"}}, namespace=evil)
        for store, (fields, _) in attempts.items():
            cluster.apply(aws_store(store, region, **fields), ref(store, store, key=victim_key), namespace=evil)
        for store, (_, field_path) in attempts.items():
            refused(cluster, evil, store, field_path, store)
        time.sleep(REFRESH + 2)  # store checks and ref cycles have run, and would have again
        requests = moto_server.recorded()
    finally:
        moto_server.stop_recording()
    assert not [r for r in requests if victim_key in r["body"] or victim_key.replace("/", "%2F") in r["body"]]
    assert not [r for r in requests if action(r) in AWS_READS and access_key(r) == "testing"], \
        "nothing was read with the operator's own credentials"
    assert not [r for r in requests if "localhost" in (r["headers"].get("Host") or "")]
    assert not [r for r in requests if action(r) in STS_EXCHANGES]
    assert operator.metric("paved_provider_api_calls_total", provider="aws-sts") == sts_before


def test_a_tenant_aws_store_acts_as_its_own_service_account(
    cluster: Cluster, namespace: str, moto_server: MotoServer, operator: OperatorProcess
) -> None:
    value = marker("web-identity")
    put_moto_secret(moto_server, f"teams/{namespace}/db", {"username": "app", "password": value})
    allow_service_account_tokens(cluster, namespace)
    moto_server.start_recording()
    try:
        cluster.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "secrets-reader"}},
                      aws_store("aws", moto_server.region, auth={"serviceAccountRef": {"name": "secrets-reader"}, "role": ROLE}),
                      ref("db-credentials", "aws", key=f"teams/{namespace}/db"), namespace=namespace)
        ready = condition(cluster.wait_condition("secretstore", "aws", namespace, status="True", reason="Authenticated"))
        assert f"ServiceAccount {namespace}/secrets-reader" in ready["message"]
        cluster.wait_condition("esr", "db-credentials", namespace, status="True", timeout=30)
        requests = moto_server.recorded()
    finally:
        moto_server.stop_recording()
    assert secret_data(cluster, namespace, "db-credentials") == {"username": "app", "password": value}
    [exchange] = [r for r in requests if action(r) == "AssumeRoleWithWebIdentity"]  # once, then refreshed credentials
    assert access_key(exchange) is None, "AssumeRoleWithWebIdentity is sent unsigned: no operator credentials"
    claims = web_identity_claims(exchange)
    assert claims["aud"] == ["sts.amazonaws.com"] and claims["sub"] == f"system:serviceaccount:{namespace}:secrets-reader"
    reads = [r for r in requests if action(r) in AWS_READS]
    assert reads and {access_key(r) for r in reads} != {"testing"}
    assert all((access_key(r) or "").startswith("ASIA") for r in reads), "reads are signed with the role's credentials"


def test_a_service_account_store_reads_nothing_until_its_namespace_opts_in_to_tokens(
    cluster: Cluster, namespace: str, moto_server: MotoServer, operator: OperatorProcess
) -> None:
    """deploy/token-policy.yaml: unlabelled, the API server refuses the operator the account's
    token; the store and its ref say which label to set, and nothing reaches STS or Secrets
    Manager. Once labelled, both recover on their own (no edit of the store)."""
    value, key = marker("token-opt-in"), f"teams/{namespace}/db"
    put_moto_secret(moto_server, key, {"username": "app", "password": value})
    refusal = (f"spec.provider.aws.auth.serviceAccountRef: the API server refused a token for ServiceAccount "
               f"{namespace}/secrets-reader (403): label namespace {namespace} {SERVICE_ACCOUNT_TOKENS_LABEL}=allowed "
               "to let Paved authenticate as its ServiceAccounts (deploy/token-policy.yaml)")
    moto_server.start_recording()
    try:
        cluster.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "secrets-reader"}},
                      aws_store("aws", moto_server.region, auth={"serviceAccountRef": {"name": "secrets-reader"}, "role": ROLE}),
                      ref("db-credentials", "aws", key=key), namespace=namespace)
        store = condition(cluster.wait_condition("secretstore", "aws", namespace, status="False", reason="AuthFailed"))
        assert store["message"] == refusal
        on_ref = condition(cluster.wait_condition("esr", "db-credentials", namespace, status="False", reason="AuthFailed",
                                                  timeout=30))
        assert refusal in on_ref["message"], on_ref["message"]
        time.sleep(REFRESH + 2)  # the ref has retried, and would have read by now
        assert cluster.get("secret", "db-credentials", namespace) is None
        # (stores of earlier tests' namespaces, deleted without waiting, may still be syncing)
        requests = moto_server.recorded()
        assert not [r for r in requests if action(r) == "AssumeRoleWithWebIdentity"
                    and web_identity_claims(r)["sub"] == f"system:serviceaccount:{namespace}:secrets-reader"]
        assert not [r for r in requests if key in r["body"] or key.replace("/", "%2F") in r["body"]], "nothing was read"
        allow_service_account_tokens(cluster, namespace)
        cluster.wait_condition("esr", "db-credentials", namespace, status="True", timeout=60)
        cluster.wait_condition("secretstore", "aws", namespace, status="True", reason="Authenticated", timeout=90)
    finally:
        moto_server.stop_recording()
    assert secret_data(cluster, namespace, "db-credentials") == {"username": "app", "password": value}


def test_an_allowance_lets_a_namespace_use_the_operators_credentials_and_its_withdrawal_stops_it(
    kubectl: Kubectl, cluster: Cluster, namespace: str, moto_server: MotoServer, operator: OperatorProcess
) -> None:
    value = marker("operator-credentials")
    put_moto_secret(moto_server, f"platform/{namespace}/db", {"username": "app", "password": value})
    cluster.apply(aws_store("aws", moto_server.region), ref("db-credentials", "aws", key=f"platform/{namespace}/db",
                                                            interval="1h"), namespace=namespace)
    refused(cluster, namespace, "aws", "spec.provider.aws.auth", "db-credentials")
    policy = f"{namespace}-operator-credentials"
    try:
        allow(cluster, policy, namespace, ["SecretStore"], "OperatorCredentials")
        allowed = time.monotonic()
        ready = condition(cluster.wait_condition("secretstore", "aws", namespace, status="True", reason="Authenticated", timeout=30))
        assert "the operator's default credential chain" in ready["message"]
        cluster.wait_condition("esr", "db-credentials", namespace, status="True", timeout=30)
        assert time.monotonic() - allowed < 30, "an allowance takes effect at once, not at the next refresh (1h)"
        assert secret_data(cluster, namespace, "db-credentials") == {"username": "app", "password": value}
    finally:
        kubectl("delete", "intentpolicy", policy, check=False)
    cluster.wait_condition("secretstore", "aws", namespace, status="False", reason="NotAllowed", timeout=30)
    cluster.wait_condition("esr", "db-credentials", namespace, status="False", reason="StoreNotAllowed", timeout=30)
    assert secret_data(cluster, namespace, "db-credentials") == {"username": "app", "password": value}  # kept as it was


def tokens_issued_by(vault: Any, mount: str) -> list[str]:
    """Accessors of the live tokens that a login at auth/<mount> issued."""
    accessors = vault.adapter.list("/v1/auth/token/accessors")["data"]["keys"]
    issued = []
    for accessor in accessors:
        path = vault.auth.token.lookup_accessor(accessor)["data"].get("path", "")
        if path.startswith(f"auth/{mount}/login"):
            issued.append(accessor)
    return issued


def test_a_tenant_vault_store_cannot_name_its_own_server_or_another_namespaces_account(
    kubectl: Kubectl, cluster: Cluster, namespace: str, openbao: OpenBao, control_plane: Any, restartable_openbao: RestartableOpenBao,
    operator: OperatorProcess
) -> None:
    evil = namespace
    # A Vault the platform does not run, with a token the tenant really holds: the store would work.
    bao = restartable_openbao
    client = bao.client()
    wait_for(lambda: _try(lambda: kv_put(client, "teams/victim/db", {"username": "v", "password": marker("foreign")})),
             timeout=20, what="the KV engine to accept writes")
    client.sys.create_or_update_policy("read", 'path "secret/*" { capabilities = ["read"] }')
    token = client.auth.token.create(policies=["read"], ttl="2h")["auth"]["client_token"]
    # On the platform's Vault, a role bound to the operator's own ServiceAccount: logging in as it
    # would work. Its own auth mount, so that a login shows as a token issued by that mount.
    vault = openbao.client
    mount = configure_kubernetes_auth(openbao, control_plane, mount=f"k8s-{evil}").mount
    kv_put(vault, "teams/victim/db", {"username": "v", "password": marker("platform-vault")})
    vault.sys.create_or_update_policy("victim-read", 'path "secret/*" { capabilities = ["read"] }')
    vault.auth.kubernetes.create_role("operator-like", bound_service_account_names=["paved-operator"], mount_point=mount,
                                      bound_service_account_namespaces=["paved-system"], policies=["victim-read"], ttl="1h")
    try:
        foreign_lines = len(bao.audit_log.read_text().splitlines())
        auth_token = {"tokenSecretRef": {"name": "foreign-token", "key": "token"}}
        attempts = {
            "own-server": ({"server": bao.addr, "auth": auth_token}, "spec.provider.vault.server"),
            "metadata-server": ({"server": "http://169.254.169.254", "auth": auth_token}, "spec.provider.vault.server"),
            "operator-account": ({"server": openbao.addr, "caBundle": Path(openbao.ca_cert).read_text(), "auth": {
                "kubernetes": {"mountPath": mount, "role": "operator-like",
                               "serviceAccountRef": {"name": "paved-operator", "namespace": "paved-system"}}}},
                "spec.provider.vault.auth.kubernetes.serviceAccountRef.namespace"),
        }
        cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "foreign-token"}, "stringData": {"token": token}},
                      namespace=evil)
        for store, (vault_spec, _) in attempts.items():
            cluster.apply({"apiVersion": "paved.dev/v1alpha1", "kind": "SecretStore", "metadata": {"name": store},
                           "spec": {"provider": {"vault": vault_spec}}},
                          ref(store, store, key="teams/victim/db"), namespace=evil)
        for store, (_, field_path) in attempts.items():
            refused(cluster, evil, store, field_path, store)
        # No auth at all (which could only mean the operator's own PAVED_VAULT_TOKEN): the API server refuses it.
        no_auth = {"apiVersion": "paved.dev/v1alpha1", "kind": "SecretStore", "metadata": {"name": "operator-token"},
                   "spec": {"provider": {"vault": {"server": openbao.addr, "auth": {}}}}}
        rejected = kubectl("apply", "-n", evil, "-f", "-", input=yaml.safe_dump(no_auth), check=False)
        assert rejected.returncode != 0 and "spec.provider.vault.auth" in rejected.stderr
        time.sleep(REFRESH + 2)
        assert len(bao.audit_log.read_text().splitlines()) == foreign_lines, "the foreign Vault got no request at all"
        assert not tokens_issued_by(vault, mount), "no login as the operator's ServiceAccount"
    finally:
        vault.sys.disable_auth_method(mount)


# --- bad input -------------------------------------------------------------------------------------


def test_bad_input_gives_conditions_naming_the_field_while_neighbours_keep_syncing(
    kubectl: Kubectl, cluster: Cluster, namespace: str, openbao: OpenBao, kubernetes_auth: str, operator: OperatorProcess
) -> None:
    first, second = marker("bad-good-v1"), marker("bad-good-v2")
    path = f"badinput/{namespace}/db"
    kv_put(openbao.client, path, {"username": "app", "password": first})
    vault_store(cluster, openbao, namespace, prefix="badinput")
    vault_store(cluster, openbao, namespace, name="vault-badauth", role="no-such-role", prefix="badinput")
    cluster.apply(
        ref("good", "vault", key=path),
        ref("badauth", "vault-badauth", key=path),
        ref("nostore", "absent", key=path),
        ref("noprop", "vault", data=[{"secretKey": "pw", "remoteRef": {"key": path, "property": "passwd"}}]),
        ref("badtemplate", "vault", key=path, target={"name": "badtemplate", "template": {"data": {"url": "{{ username "}}}),
        ref("badrender", "vault", key=path, target={"name": "badrender", "template": {"data": {"url": "{{ {}[password] }}"}}}),
        ref("badinterval", "vault", key=path, interval="100ms"),
        namespace=namespace)

    rejected = kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(ref("soon", "vault", interval="soon")), check=False)
    assert rejected.returncode != 0 and "spec.refreshInterval" in rejected.stderr  # the CRD schema first

    cluster.wait_condition("esr", "good", namespace, status="True", timeout=30)
    store = condition(cluster.wait_condition("secretstore", "vault-badauth", namespace, status="False", reason="AuthFailed"))
    assert "spec.provider.vault.auth.kubernetes" in store["message"] and "no-such-role" in store["message"]
    expected = {
        "badauth": ("AuthFailed", "spec.provider.vault.auth.kubernetes"),
        "nostore": ("StoreNotFound", "spec.storeRef.name"),
        "noprop": ("PropertyNotFound", "spec.data[0].remoteRef.property"),
        "badtemplate": ("InvalidSpec", "spec.target.template.data.url"),
        "badrender": ("TemplateError", "spec.target.template.data.url"),
        "badinterval": ("InvalidSpec", "spec.refreshInterval"),
    }
    for name, (reason, field_path) in expected.items():
        found = condition(cluster.wait_condition("esr", name, namespace, status="False", reason=reason, timeout=30))
        assert field_path in found["message"], (name, found["message"])
        assert cluster.get("secret", name, namespace) is None, f"{name} must not create a Secret"

    # The good ref on the same store keeps syncing: a rotation reaches it.
    kv_put(openbao.client, path, {"username": "app", "password": second})
    wait_for(lambda: (secret_data(cluster, namespace, "good") or {}).get("password") == second,
             timeout=REFRESH + 8, interval=0.5, what="the good ref to keep syncing")
    assert operator.alive()


# --- nothing leaks -----------------------------------------------------------------------------------


def test_no_secret_value_in_operator_log_events_or_status(kubectl: Kubectl, operator: OperatorProcess) -> None:
    """Runs last in this module: every marker written above must appear only in Secrets."""
    assert MARKERS, "run with the rest of the module"
    log = operator.log_path.read_text(errors="replace")
    events = kubectl("get", "events", "-A", "-o", "json").stdout
    status = kubectl("get", "externalsecretrefs,secretstores", "-A", "-o", "json").stdout
    status += kubectl("get", "clustersecretstores", "-o", "json").stdout
    for value in MARKERS:
        assert value not in log, "a secret value is in the operator log"
        assert value not in events, "a secret value is in an Event"
        assert value not in status, "a secret value is in a status"
    secrets = kubectl("get", "secrets", "-A", "-o", "json").stdout
    assert any(base64.b64encode(value.encode()).decode() in secrets for value in MARKERS)  # the check can fail
