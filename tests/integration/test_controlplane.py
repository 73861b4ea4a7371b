"""The local control plane is real: each test proves one part works (or fails loudly)."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fixtures.cluster import Kubectl, wait_for
from kubernetes.client import (
    ApiClient,
    ApiextensionsV1Api,
    AppsV1Api,
    CoreV1Api,
    CustomObjectsApi,
    V1ConfigMap,
    V1DeleteOptions,
    V1ObjectMeta,
    V1OwnerReference,
    VersionApi,
)
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from paved.cli import main as paved_cli
from paved.dev.binaries import kube_version
from paved.dev.controlplane import FAKE_NODES, ControlPlane, ControlPlaneError

pytestmark = pytest.mark.cluster


def test_apiserver_is_ready(kubectl: Kubectl) -> None:
    result = kubectl("get", "--raw", "/readyz?verbose")
    assert "readyz check passed" in result.stdout
    assert "[+]etcd ok" in result.stdout


def test_apiserver_reports_pinned_version(
    control_plane: ControlPlane, kube_admin: ApiClient
) -> None:
    reported = VersionApi(kube_admin).get_code().git_version
    binary = control_plane.binaries["kube-apiserver"]
    built = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert built.stdout.split()[-1] == reported
    if "/bin/kubernetes-" in str(binary):  # built from hack/controlplane/kube, not --assets
        assert reported == kube_version()


def test_up_is_idempotent_when_running(control_plane: ControlPlane) -> None:
    before = control_plane.ports
    result = control_plane.up()
    assert result.reused
    assert control_plane.ports == before
    assert control_plane.is_running()


def test_fake_nodes_are_ready_with_large_capacity(kube_admin: ApiClient) -> None:
    nodes = {n.metadata.name: n for n in CoreV1Api(kube_admin).list_node().items}
    assert set(FAKE_NODES) <= set(nodes)
    for name in FAKE_NODES:
        node = nodes[name]
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", f"{name} is not Ready"
        assert parse_quantity(node.status.allocatable["pods"]) >= 1000  # kwok writes "2k"
        assert not node.spec.taints


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                # kwok never pulls images; the name only has to be valid.
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }


def test_deployment_becomes_available_without_a_kubelet(
    kube_admin: ApiClient, namespace: str
) -> None:
    apps = AppsV1Api(kube_admin)
    apps.create_namespaced_deployment(namespace, _deployment("web", 2))

    def available() -> bool:
        status = apps.read_namespaced_deployment_status("web", namespace).status
        conditions = {c.type: c.status for c in status.conditions or []}
        return status.available_replicas == 2 and conditions.get("Available") == "True"

    wait_for(available, timeout=60, what="Deployment web to be Available with 2 replicas")
    pods = CoreV1Api(kube_admin).list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.node_name in FAKE_NODES  # scheduled by kube-scheduler
        assert pod.status.phase == "Running"  # made Running by kwok
        assert pod.status.pod_ip


def test_garbage_collector_deletes_dependents(kube_admin: ApiClient, namespace: str) -> None:
    core = CoreV1Api(kube_admin)
    owner = core.create_namespaced_config_map(
        namespace, V1ConfigMap(metadata=V1ObjectMeta(name="owner"))
    )
    reference = V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        namespace,
        V1ConfigMap(metadata=V1ObjectMeta(name="dependent", owner_references=[reference])),
    )
    core.delete_namespaced_config_map(
        "owner", namespace, body=V1DeleteOptions(propagation_policy="Background")
    )

    def dependent_gone() -> bool:
        try:
            core.read_namespaced_config_map("dependent", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(dependent_gone, timeout=30, what="the dependent ConfigMap to be garbage-collected")


def test_gateway_api_httproute_is_served(kube_admin: ApiClient, namespace: str) -> None:
    crd = ApiextensionsV1Api(kube_admin).read_custom_resource_definition(
        "httproutes.gateway.networking.k8s.io"
    )
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions.get("Established") == "True"
    assert "v1" in [v.name for v in crd.spec.versions if v.served]
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "canary"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [{"backendRefs": [{"name": "web", "port": 80, "weight": 90}]}],
        },
    }
    custom = CustomObjectsApi(kube_admin)
    custom.create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", route
    )
    stored = custom.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", "canary"
    )
    assert stored["spec"]["rules"][0]["backendRefs"][0]["weight"] == 90


def test_serviceaccount_kubeconfig_authenticates_as_that_account(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    kubectl("create", "serviceaccount", "probe", "-n", namespace)
    config = control_plane.serviceaccount_kubeconfig(namespace, "probe", tmp_path / "sa.kubeconfig")

    whoami = kubectl("auth", "whoami", "-o", "json", kubeconfig=config)
    user = json.loads(whoami.stdout)["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{namespace}:probe"
    assert "system:masters" not in user.get("groups", [])

    denied = kubectl("get", "secrets", "-n", "kube-system", kubeconfig=config, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()


def test_serviceaccount_kubeconfig_for_missing_account_fails_clearly(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    with pytest.raises(ControlPlaneError, match="does not exist"):
        control_plane.serviceaccount_kubeconfig(namespace, "nobody", tmp_path / "x.kubeconfig")


def test_dev_env_prints_exports(control_plane: ControlPlane) -> None:
    result = CliRunner().invoke(
        paved_cli, ["dev", "env", "--state-dir", str(control_plane.state_dir)]
    )
    assert result.exit_code == 0, result.output
    assert f"export KUBECONFIG={control_plane.kubeconfig}" in result.output
    assert f"export PAVED_KUBECTL={control_plane.kubectl_path}" in result.output


def test_up_reports_a_port_taken_by_someone_else(
    tmp_path: Path, control_plane: ControlPlane
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        ports = {
            "etcd": port,
            "etcd_peer": port + 1,
            "apiserver": port + 2,
            "controller_manager": port + 3,
            "scheduler": port + 4,
        }
        (tmp_path / "ports.json").write_text(json.dumps(ports))
        with pytest.raises(ControlPlaneError, match=f"port {port} .* is in use"):
            ControlPlane(tmp_path).up(timeout=30)


def test_up_shows_the_log_of_a_component_that_dies(
    tmp_path: Path, control_plane: ControlPlane
) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    etcd = assets / "etcd"
    etcd.write_text("#!/bin/sh\necho 'etcd: simulated failure' >&2\nexit 3\n")
    etcd.chmod(0o755)
    plane = ControlPlane(tmp_path / "state", assets)
    with pytest.raises(ControlPlaneError, match=r"(?s)etcd exited.*simulated failure"):
        plane.up(timeout=30)
    assert not plane.is_running()
