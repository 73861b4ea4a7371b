"""One test per real part: each proves the part is a real server process and its fixture works.

No mocks: boto3 talks HTTP to a moto server process, hvac talks HTTPS to an OpenBao dev
server, and Prometheus (Debian's binary) scrapes a real HTTP server on loopback.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest

from fixtures.vault import configure_kubernetes_auth

# --- AWS (moto server) ---------------------------------------------------------------------


def test_rds_instance_is_created_and_described_on_the_moto_server(aws_env, boto3_client):
    rds = boto3_client("rds")
    rds.create_db_instance(
        DBInstanceIdentifier="orders-db",
        Engine="postgres",
        EngineVersion="16.3",
        DBInstanceClass="db.t3.micro",
        AllocatedStorage=20,
        MasterUsername="paved",
        MasterUserPassword="not-a-real-password-1",
        MultiAZ=True,
        StorageEncrypted=True,
        BackupRetentionPeriod=30,
        Tags=[{"Key": "paved.dev/intent", "Value": "default/orders-db"}],
    )

    (db,) = rds.describe_db_instances(DBInstanceIdentifier="orders-db")["DBInstances"]
    assert db["Engine"] == "postgres"
    assert db["MultiAZ"] is True
    assert db["StorageEncrypted"] is True
    assert db["BackupRetentionPeriod"] == 30
    assert db["DBInstanceStatus"] == "available"
    assert db["Endpoint"]["Port"] == 5432

    # The state lives in the server process, not in this interpreter: a plain HTTP request
    # to the RDS query API (no boto3) sees the instance.
    req = urllib.request.Request(
        aws_env.endpoint_url,
        data=b"Action=DescribeDBInstances&Version=2014-10-31",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/rds/"
            "aws4_request, SignedHeaders=host, Signature=0",
        },
    )
    with urllib.request.urlopen(req) as resp:
        assert b"<DBInstanceIdentifier>orders-db</DBInstanceIdentifier>" in resp.read()


def test_secrets_manager_put_and_get_on_the_moto_server(aws_env, boto3_client):
    assert aws_env.endpoint_url.startswith("http://127.0.0.1:")
    sm = boto3_client("secretsmanager")
    arn = sm.create_secret(Name="orders/db", SecretString='{"password":"v1"}')["ARN"]
    sm.put_secret_value(SecretId=arn, SecretString='{"password":"v2"}')

    got = sm.get_secret_value(SecretId="orders/db")
    assert json.loads(got["SecretString"]) == {"password": "v2"}
    assert "AWSCURRENT" in got["VersionStages"]

    # The environment aws_env sets is complete: a client built from it alone reaches moto.
    env_client = boto3.client("secretsmanager", endpoint_url=os.environ["PAVED_AWS_ENDPOINT_URL"])
    assert env_client.get_secret_value(SecretId="orders/db")["VersionId"] == got["VersionId"]


# --- Vault API (OpenBao dev server) --------------------------------------------------------


def test_kv_v2_write_and_read_on_openbao(openbao):
    vault = openbao.client
    health = vault.sys.read_health_status(method="GET")
    assert health["initialized"] and not health["sealed"]
    assert health["version"].startswith("2.")  # OpenBao 2.x, not a stub

    vault.secrets.kv.v2.create_or_update_secret(
        path="paved/orders-db", secret={"username": "orders", "password": "s3cr3t"}
    )
    vault.secrets.kv.v2.create_or_update_secret(
        path="paved/orders-db", secret={"username": "orders", "password": "rotated"}
    )
    read = vault.secrets.kv.v2.read_secret_version(
        path="paved/orders-db", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"username": "orders", "password": "rotated"}
    assert read["data"]["metadata"]["version"] == 2

    # Without a token the server refuses: authentication is real.
    assert not openbao.new_client().is_authenticated()
    assert openbao.root_token not in repr(openbao)


@pytest.mark.cluster
def test_openbao_kubernetes_auth_against_the_real_apiserver(openbao, control_plane, tmp_path):
    """A ServiceAccount token from the real kube-apiserver logs in to OpenBao."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    auth = configure_kubernetes_auth(openbao, control_plane, mount="k8s-real-parts")
    configure_kubernetes_auth(openbao, control_plane, mount="k8s-real-parts")  # idempotent
    openbao.client.sys.create_or_update_policy(
        name="read-orders", policy='path "secret/data/orders/*" { capabilities = ["read"] }'
    )
    openbao.client.auth.kubernetes.create_role(
        name="orders-app",
        bound_service_account_names=["orders-app"],
        bound_service_account_namespaces=["default"],
        policies=["read-orders"],
        ttl="5m",
        mount_point=auth.mount,
    )

    api = k8s_config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    try:
        core = k8s.CoreV1Api(api)
        try:
            core.create_namespaced_service_account(
                "default", k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="orders-app"))
            )
        except k8s.ApiException as err:
            if err.status != 409:
                raise
        jwt = core.create_namespaced_service_account_token(
            "orders-app",
            "default",
            k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[])),
        ).status.token
    finally:
        api.close()

    app = openbao.new_client()
    login = app.auth.kubernetes.login(role="orders-app", jwt=jwt, mount_point=auth.mount)
    assert "read-orders" in login["auth"]["policies"]
    assert app.is_authenticated()


# --- Prometheus (Debian package) -----------------------------------------------------------


class _Counter(BaseHTTPRequestHandler):
    value = 42

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path != "/metrics":
            self.send_error(404)
            return
        body = (
            "# HELP paved_test_requests_total Requests seen by the test app.\n"
            "# TYPE paved_test_requests_total counter\n"
            f'paved_test_requests_total{{app="real-parts"}} {self.value}\n'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def counter_app() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_prometheus_scrapes_a_loopback_app_and_answers_an_instant_query(prometheus, counter_app):
    prom = prometheus([counter_app], scrape_interval="1s")
    assert prom.startswith("http://127.0.0.1:")

    result = prom.wait_for('paved_test_requests_total{app="real-parts"}', timeout=30)
    (sample,) = result
    assert sample["metric"]["instance"] == counter_app
    assert float(sample["value"][1]) == 42.0

    buildinfo = prom.api("status/buildinfo")
    assert buildinfo["version"].startswith("2.")
