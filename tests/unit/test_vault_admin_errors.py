"""Vault admin calls map local and network failures to retryable ProviderErrors without secrets."""

from __future__ import annotations

import pytest

from paved.dev.processes import free_port
from paved.providers.base import Owner, ProviderError
from paved.providers.vault import admin
from paved.render.types import RenderedResource

TOKEN = "s.super-secret-token-value"


@pytest.fixture(autouse=True)
def fresh_client(monkeypatch: pytest.MonkeyPatch):
    for name in (admin.ADDR_ENV, admin.CACERT_ENV, admin.TOKEN_ENV, admin.TOKEN_FILE_ENV):
        monkeypatch.delenv(name, raising=False)
    admin.reset_client()
    yield
    admin.reset_client()


def _policy() -> RenderedResource:
    return RenderedResource(name="vault-policy", provider="vault-policy", body={"name": "paved-x", "policy": 'path "a" {}'})


def _owner() -> Owner:
    return Owner(api_version="paved.dev/v1alpha1", kind="AgentIdentity", name="x", namespace="ns", uid="u", generation=1)


def test_invalid_ca_path_is_retryable_and_names_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(admin.ADDR_ENV, f"https://127.0.0.1:{free_port()}")
    monkeypatch.setenv(admin.CACERT_ENV, str(tmp_path / "missing-ca.pem"))
    monkeypatch.setenv(admin.TOKEN_ENV, TOKEN)
    with pytest.raises(ProviderError) as caught:
        admin.VaultPolicyProvider().delete(_policy(), _owner(), "Delete")
    assert caught.value.retryable
    assert admin.CACERT_ENV in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_vault_down_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(admin.ADDR_ENV, f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv(admin.TOKEN_ENV, TOKEN)
    for call in (lambda: admin.VaultPolicyProvider().observe(_policy(), _owner()),
                 lambda: admin.revoke_role_tokens("vault-k8s-role", "kubernetes", "paved-x")):
        with pytest.raises(ProviderError) as caught:
            call()
        assert caught.value.retryable
        assert TOKEN not in str(caught.value)


def test_unreadable_token_file_is_retryable(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(admin.ADDR_ENV, f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv(admin.TOKEN_FILE_ENV, str(tmp_path / "no-token"))
    with pytest.raises(ProviderError) as caught:
        admin.VaultPolicyProvider().observe(_policy(), _owner())
    assert caught.value.retryable
    assert admin.TOKEN_FILE_ENV in str(caught.value)


def test_plain_oserror_inside_a_call_is_mapped() -> None:
    def boom() -> None:
        raise OSError("Could not find a suitable TLS CA certificate bundle, invalid path: /nope")

    with pytest.raises(ProviderError) as caught:
        admin.call("vault-policy", "read-policy", boom)
    assert caught.value.retryable
