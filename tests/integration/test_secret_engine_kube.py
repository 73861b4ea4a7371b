"""The secret engine's Kubernetes reads (paved.engines.secretsync.KubeApi) on the real API server."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.cluster import Kubectl

from paved.engines.secretsync import kube as _secretsync
from paved.kube import port as kube_port
from paved.kube.client import request
from paved.providers.secretstores import StoreError


def test_secrets_metadata_lists_every_secret_of_a_namespace_by_name_without_its_data(
        admin_kube_client: None, kubectl: Kubectl, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b", "c"):
        kubectl("create", "secret", "generic", name, "-n", namespace, "--from-literal=password=MARKER-not-listed")
    kubectl("label", "secret", "b", "-n", namespace, "team=x")
    monkeypatch.setattr(kube_port, "LIST_PAGE_SIZE", 2)  # three Secrets: two pages
    listed = _secretsync.KubeApi().secrets_metadata(namespace)
    assert sorted(listed) == ["a", "b", "c"]
    assert listed["b"]["metadata"]["labels"] == {"team": "x"} and listed["b"]["metadata"]["resourceVersion"]
    assert all(secret["kind"] == "Secret" and secret["apiVersion"] == "v1" and set(secret) == {"apiVersion", "kind", "metadata"}
               and "managedFields" not in secret["metadata"] for secret in listed.values())
    assert "MARKER" not in repr(listed)
    # what the API server sends: metadata only, no data
    raw = request("GET", f"/api/v1/namespaces/{namespace}/secrets", operation="list", accept=kube_port.METADATA_ONLY)
    assert raw["kind"] == "PartialObjectMetadataList" and "MARKER" not in repr(raw)


def test_a_store_credential_that_is_not_text_is_a_missing_credential_that_names_the_key_only(
        admin_kube_client: None, kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    binary = tmp_path / "token"
    binary.write_bytes(b"\xff\xfeMARKER")
    kubectl("create", "secret", "generic", "vault-token", "-n", namespace, f"--from-file=token={binary}",
            "--from-literal=good=s.abc")
    kube = _secretsync.KubeApi()
    assert kube.secret_value(namespace, "vault-token", "good") == "s.abc"
    with pytest.raises(StoreError) as not_text:
        kube.secret_value(namespace, "vault-token", "token")
    assert not_text.value.reason == "CredentialsMissing"
    assert str(not_text.value) == f"the value of key 'token' of Secret {namespace}/vault-token is not UTF-8 text"
    with pytest.raises(StoreError) as missing:
        kube.secret_value(namespace, "vault-token", "absent")
    assert str(missing.value) == f"Secret {namespace}/vault-token has no key 'absent'"
    with pytest.raises(StoreError) as gone:
        kube.secret_value(namespace, "nothing-here", "token")
    assert str(gone.value) == f"Secret {namespace}/nothing-here not found"
