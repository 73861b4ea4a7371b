"""paved.kube.client's request path on the real API server, with a ServiceAccount token."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
from fixtures.cluster import Kubectl

from paved.dev.controlplane import ControlPlane
from paved.kube import client as kube_client


@pytest.fixture
def token_client(control_plane: ControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path) -> Iterator[list[int]]:
    """paved.kube.client configured as a ServiceAccount allowed to manage ConfigMaps in
    `namespace`; yields a list that counts the times the configuration is asked for the token."""
    kubectl("create", "serviceaccount", "probe", "-n", namespace)
    kubectl("create", "role", "cm", "--verb=get,list,create", "--resource=configmaps", "-n", namespace)
    kubectl("create", "rolebinding", "cm", "--role=cm", f"--serviceaccount={namespace}:probe", "-n", namespace)
    config = control_plane.serviceaccount_kubeconfig(namespace, "probe", tmp_path / "sa.kubeconfig")
    kube_client.reset()
    configuration = kube_client.configure(str(config)).configuration
    refreshes: list[int] = []
    ask = configuration.get_api_key_with_prefix  # runs the loader's refresh hook

    def counting_ask(*args: object, **kwargs: object) -> object:
        refreshes.append(1)
        return ask(*args, **kwargs)

    configuration.get_api_key_with_prefix = counting_ask
    yield refreshes
    kube_client.reset()


def test_requests_reuse_the_token_instead_of_asking_the_configuration_each_time(token_client: list[int], namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    body = MappingProxyType({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}, "data": {"a": "1"}})
    kube_client.request("POST", path, operation="create", body=body)  # a read-only mapping is sent as JSON
    for _ in range(20):
        assert kube_client.request("GET", f"{path}/probe", operation="get")["data"] == {"a": "1"}
    assert len(token_client) == 1


def test_a_rejected_token_is_refreshed_once_and_the_request_repeated(token_client: list[int], namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    kube_client.request("GET", path, operation="list")
    configuration = kube_client.api_client().configuration
    kube_client._auth_header = (configuration, time.monotonic(), "Bearer not-a-valid-token")  # an expired token, say
    assert kube_client.request("GET", path, operation="list")["kind"] == "ConfigMapList"
    assert len(token_client) == 2


def test_errors_carry_the_api_servers_reason_and_message(token_client: list[int], namespace: str) -> None:
    with pytest.raises(kube_client.ApiError) as missing:
        kube_client.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/nope", operation="get")
    assert (missing.value.status, missing.value.reason) == (404, "NotFound")
    assert '"nope" not found' in missing.value.message
    with pytest.raises(kube_client.ApiError) as forbidden:
        kube_client.request("GET", "/api/v1/namespaces/kube-system/secrets", operation="list")
    assert (forbidden.value.status, forbidden.value.reason) == (403, "Forbidden")
    assert f"system:serviceaccount:{namespace}:probe" in forbidden.value.message
