"""The Prometheus provider against the real Prometheus (Debian's) behind authentication and TLS.

- basic auth and TLS: Prometheus' own `--web.config.file` (`basic_auth_users` with a bcrypt
  hash, `tls_server_config` with a certificate of a CA made here, paved.pki);
- a bearer token: Prometheus cannot check one itself, so a tiny loopback proxy in front of
  the real Prometheus lets through only requests that carry it.

The settings come from a spec through paved.engines.rollout.sources (Secrets and a ConfigMap
as the API server returns them), as the rollout runner builds them. No secret value may
appear in any answer.
"""

from __future__ import annotations

import base64
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.prometheus import PrometheusServer, bearer_proxy
from paved.engines.rollout.sources import resolve_prometheus
from paved.pki import CertificateAuthority, issue_serving_cert
from paved.providers.egress import STRICT
from paved.providers.metrics.prometheus import from_settings

USER, PASSWORD, TOKEN = "ops", "hunter2-basic-password", "bearer-t0ken-under-test"
QUERY = "vector(0.25)"


def bcrypt_hash(password: str) -> str:
    with warnings.catch_warnings():  # crypt is deprecated, but libxcrypt's bcrypt is all a test needs
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))  # noqa: S324 - bcrypt, what Prometheus wants


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def settings(source: Mapping[str, Any], objects: Mapping[tuple[str, str], Mapping[str, Any]]) -> dict[str, Any]:
    return resolve_prometheus({"prometheus": source, "metrics": [{}]}, "shop", None,
                              lambda kind, name: objects.get((kind, name)))


def ref(key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": "prometheus", "key": key}}


@pytest.fixture
def secured(prometheus: Callable[..., PrometheusServer], tmp_path: Path) -> tuple[PrometheusServer, str]:
    """A Prometheus that wants TLS (a CA of its own) and basic auth; returns it and the CA's PEM."""
    ca = CertificateAuthority.create("prometheus-test-ca")
    cert, key = issue_serving_cert(ca, ["127.0.0.1", "localhost"])
    (tmp_path / "server.crt").write_bytes(cert)
    (tmp_path / "server.key").write_bytes(key)
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": str(tmp_path / "server.crt"), "key_file": str(tmp_path / "server.key")},
        "basic_auth_users": {USER: bcrypt_hash(PASSWORD)},
    }))
    return prometheus([], web_config=web), ca.cert_pem.decode()


def test_basic_auth_and_a_custom_ca_from_the_namespace(secured: tuple[PrometheusServer, str]) -> None:
    server, ca_pem = secured
    assert server.startswith("https://")
    objects = {("Secret", "prometheus"): {"data": {"user": b64(USER), "password": b64(PASSWORD)}},
               ("ConfigMap", "prometheus-ca"): {"data": {"ca.crt": ca_pem}}}
    source = {"address": str(server), "auth": {"basic": {"username": ref("user"), "password": ref("password")}},
              "tls": {"ca": {"configMapKeyRef": {"name": "prometheus-ca", "key": "ca.crt"}}}}
    assert from_settings(settings(source, objects), STRICT).query(QUERY).value == 0.25

    # The wrong password: refused, inconclusive (not a rejected query), and never quoted.
    wrong = {("Secret", "prometheus"): {"data": {"user": b64(USER), "password": b64("not-" + PASSWORD)}},
             ("ConfigMap", "prometheus-ca"): objects[("ConfigMap", "prometheus-ca")]}
    refused = from_settings(settings(source, wrong), STRICT).query(QUERY)
    assert refused.error is not None and not refused.rejected
    assert "refused the credentials (HTTP 401)" in refused.error and PASSWORD not in refused.error

    # Without the CA the server's certificate is not trusted: no answer, nothing leaks.
    untrusted = from_settings(settings({k: v for k, v in source.items() if k != "tls"}, objects), STRICT).query(QUERY)
    assert untrusted.error is not None and "cannot reach Prometheus" in untrusted.error
    assert PASSWORD not in untrusted.error


def test_bearer_token_and_headers_through_a_proxy(prometheus: Callable[..., PrometheusServer]) -> None:
    server = prometheus([])
    proxy, seen = bearer_proxy(str(server), TOKEN)
    objects = {("Secret", "prometheus"): {"data": {"token": b64(TOKEN + "\n")}}}
    with proxy:
        source = {"address": proxy.url, "auth": {"bearerToken": ref("token")},
                  "headers": [{"name": "X-Scope-OrgID", "value": "shop"}]}
        assert from_settings(settings(source, objects), STRICT).query(QUERY).value == 0.25
        assert seen[-1] == (f"Bearer {TOKEN}", "shop")
        anonymous = from_settings({"address": proxy.url}, STRICT).query(QUERY)
    assert anonymous.error is not None and "refused the credentials (HTTP 401)" in anonymous.error
