"""spec.analysis.prometheus -> the provider's settings (paved.engines.rollout.sources), the
provider's credentials on the wire, and the spec model's rules for headers. Values of Secrets
never appear in a problem; the real Prometheus with auth and TLS is in
tests/integration/test_prometheus_auth.py."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from email.message import Message
from typing import Any

import pytest

from paved.dev.apps.loopback import answering
from paved.engines.rollout.sources import SourceProblems, resolve_prometheus
from paved.providers.egress import OPEN
from paved.providers.metrics.prometheus import PrometheusProvider, from_settings
from paved.rollout import validate_spec

TOKEN = "s3cr3t-t0ken-value"  # noqa: S105 - a test value, looked for in messages
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


OBJECTS: dict[tuple[str, str], Mapping[str, Any]] = {
    ("Secret", "prom"): {"data": {"token": b64(TOKEN + "\n"), "user": b64("ops"), "password": b64("pa ss"),
                                  "binary": base64.b64encode(b"\xff\xfe").decode(), "ca": b64(CA)}},
    ("ConfigMap", "prom-ca"): {"data": {"ca.crt": CA, "junk": "not a certificate"}},
}


def read(kind: str, name: str) -> Mapping[str, Any] | None:
    return OBJECTS.get((kind, name))


def ref(name: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


def resolve(source: dict[str, Any], default: str | None = None) -> dict[str, Any]:
    return resolve_prometheus({"prometheus": source, "metrics": [{}]}, "shop", default, read)


def problems(source: dict[str, Any], default: str | None = None) -> list[str]:
    with pytest.raises(SourceProblems) as raised:
        resolve(source, default)
    assert TOKEN not in str(raised.value)
    return [str(p) for p in raised.value.problems]


def test_the_rollouts_address_wins_and_the_operators_default_fills_in() -> None:
    assert resolve({"address": "http://a:9090"}, default="http://b:9090") == {"address": "http://a:9090"}
    assert resolve({}, default="http://b:9090") == {"address": "http://b:9090"}
    assert resolve_prometheus({"metrics": [{}]}, "shop", "http://b:9090", read) == {"address": "http://b:9090"}
    [problem] = problems({})
    assert problem.startswith("spec.analysis.prometheus.address: is not set") and "--prometheus-address" in problem


def test_credentials_ca_and_headers_are_read_from_the_namespace() -> None:
    bearer = resolve({"address": "https://p", "auth": {"bearerToken": ref("prom", "token")},
                      "tls": {"ca": {"configMapKeyRef": {"name": "prom-ca", "key": "ca.crt"}}},
                      "headers": [{"name": "X-Scope-OrgID", "value": "shop"}]})
    assert bearer == {"address": "https://p", "bearerToken": TOKEN, "caBundle": CA,
                      "headers": (("X-Scope-OrgID", "shop"),)}  # the trailing newline of `echo` is gone
    basic = resolve({"address": "https://p", "auth": {"basic": {"username": ref("prom", "user"),
                                                                 "password": ref("prom", "password")}},
                     "tls": {"ca": ref("prom", "ca")}})
    assert basic["basicAuth"] == ("ops", "pa ss") and basic["caBundle"] == CA


def test_a_missing_secret_or_key_names_the_field_and_never_a_value() -> None:
    assert problems({"address": "http://p", "auth": {"bearerToken": ref("prom", "tokn")}}) == [
        "spec.analysis.prometheus.auth.bearerToken.secretKeyRef.key: Secret shop/prom has no key 'tokn'"]
    assert problems({"address": "http://p", "auth": {"bearerToken": ref("gone", "token")}}) == [
        "spec.analysis.prometheus.auth.bearerToken.secretKeyRef.name: Secret shop/gone not found"]
    assert problems({"address": "http://p", "auth": {"basic": {"username": ref("prom", "user"),
                                                               "password": ref("prom", "binary")}},
                     "tls": {"ca": {"configMapKeyRef": {"name": "prom-ca", "key": "junk"}}}}) == [
        "spec.analysis.prometheus.auth.basic.password.secretKeyRef.key: the value of key 'binary' of Secret "
        "shop/prom is not UTF-8 text",
        "spec.analysis.prometheus.tls.ca.configMapKeyRef.key: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"]


def test_credentials_travel_on_the_session_and_nowhere_else() -> None:
    seen: list[Message] = []

    def respond(path: str, headers: Message, body: bytes) -> tuple[int, Any]:
        seen.append(headers)
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, None
        return 200, {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "0.5"]}}

    with answering(respond) as server:
        provider = from_settings({"address": server.url, "bearerToken": TOKEN, "headers": (("X-Scope-OrgID", "shop"),)},
                                 egress=OPEN)
        assert provider.query("up").value == 0.5
        assert seen[-1]["X-Scope-OrgID"] == "shop"
        assert TOKEN not in repr(provider)
        refused = PrometheusProvider(server.url).query("up")
    assert refused.error is not None and not refused.rejected
    assert "refused the credentials (HTTP 401)" in refused.error


def test_headers_cannot_carry_credentials() -> None:
    spec = {"targetRef": {"name": "x"}, "service": {"name": "x", "port": 80}, "steps": [{"setWeight": 100}],
            "analysis": {"prometheus": {"address": "http://p", "headers": [{"name": "authorization", "value": "x"}]}}}
    [error] = validate_spec(spec)
    assert error.path == "spec.analysis.prometheus" and "use auth" in error.message
