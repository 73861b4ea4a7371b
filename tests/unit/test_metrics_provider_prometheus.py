"""The Prometheus metrics provider: answer parsing, retries, timeouts, and the registry.

HTTP goes to a small stdlib server on loopback that answers like Prometheus's
/api/v1/query (the e2e tests query the real Prometheus).
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from paved.dev.apps.loopback import answering
from paved.providers import metrics as registry
from paved.providers.base import ProviderError
from paved.providers.metrics import QueryResult, measure
from paved.providers.metrics.fake import FakeMetrics
from paved.providers.metrics.prometheus import Access, PrometheusProvider, parse_answer
from paved.rollout.actions import MetricQuery
from paved.rollout.observation import MetricMeasurement


def vector(*values: str) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": {}, "value": [1.0, v]} for v in values]}}


@pytest.mark.parametrize(("status", "body", "expected"), [
    (200, vector("0.97"), QueryResult(value=0.97)),
    (200, vector(), QueryResult(value=None)),
    (200, {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "42"]}}, QueryResult(value=42.0)),
    (400, {"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unclosed left parenthesis"},
     QueryResult(error="bad_data: 1:5: parse error: unclosed left parenthesis", rejected=True)),
    (422, {"status": "error", "errorType": "execution", "error": "many-to-many matching not allowed"},
     QueryResult(error="execution: many-to-many matching not allowed", rejected=False)),
    (200, {"status": "success", "data": {"resultType": "matrix", "result": []}},
     QueryResult(error="the query returns a range vector; wrap it in a function such as rate(...[1m])", rejected=True)),
    (200, None, QueryResult(error="Prometheus answered HTTP 200 without a JSON body")),
], ids=["one-series", "empty", "scalar", "bad-data", "execution", "matrix", "not-json"])
def test_parse_answer(status: int, body: dict[str, Any] | None, expected: QueryResult) -> None:
    assert parse_answer(status, body) == expected


def test_parse_answer_keeps_nan_and_refuses_several_series() -> None:
    result = parse_answer(200, vector("NaN"))
    assert result.value is not None and math.isnan(result.value)
    several = parse_answer(200, vector("1", "2"))
    assert several.error and "2 series" in several.error and not several.rejected


class FakePrometheus:
    """Answers /api/v1/query from a script: a list of (status, body) or a callable; records queries."""

    def __init__(self) -> None:
        self.script: list[tuple[int, Any]] = []
        self.queries: list[str] = []
        self.delay = 0.0
        self.loopback = answering(self.answer).start()

    def answer(self, path: str, headers: Message, sent: bytes) -> tuple[int, Any]:
        self.queries.append(parse_qs(urlsplit(path).query)["query"][0])
        time.sleep(self.delay)
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    @property
    def url(self) -> str:
        return self.loopback.url


@pytest.fixture
def fake_prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    yield server
    server.loopback.stop()


def test_query_answers_and_retries_server_errors(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.script = [(503, {"status": "error", "error": "overloaded"}), (200, vector("0.99"))]
    provider = PrometheusProvider(fake_prometheus.url + "/")
    assert provider.query("up") == QueryResult(value=0.99)
    assert fake_prometheus.queries == ["up", "up"]


def test_a_rejected_query_is_not_retried(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.script = [(400, {"status": "error", "errorType": "bad_data", "error": "parse error"})]
    result = PrometheusProvider(fake_prometheus.url).query("sum(")
    assert result.rejected and len(fake_prometheus.queries) == 1


def test_persistent_server_errors_become_an_error_after_the_attempts(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.script = [(500, {"status": "error", "error": "boom"})]
    result = PrometheusProvider(fake_prometheus.url, attempts=2).query("up")
    assert result.error and "HTTP 500" in result.error and "boom" in result.error and not result.rejected
    assert len(fake_prometheus.queries) == 2


def test_timeouts_and_unreachable_servers_are_errors_not_data(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.script = [(200, vector("1"))]
    fake_prometheus.delay = 0.5
    slow = PrometheusProvider(fake_prometheus.url, timeout=(0.5, 0.1), attempts=1).query("up")
    assert slow.error and "did not answer within 0.1s" in slow.error
    gone = PrometheusProvider("http://127.0.0.1:9", attempts=1).query("up")
    assert gone.error and "cannot reach Prometheus" in gone.error


def test_credentials_in_the_address_never_reach_a_message() -> None:
    provider = PrometheusProvider("http://paved:s3cret@127.0.0.1:9", attempts=1)
    result = provider.query("up")
    assert result.error == "cannot reach Prometheus at http://127.0.0.1:9: connection refused"
    assert "s3cret" not in repr(provider)
    # An address requests cannot even use (its exception quotes the whole URL, password included).
    unusable = PrometheusProvider("http://paved:s3cret@127.0.0.1:99999", attempts=1).query("up")
    assert unusable.rejected and "s3cret" not in (unusable.error or "")
    assert unusable.error == "Prometheus address http://127.0.0.1:99999 is not usable: InvalidURL"


def test_measure_reports_value_samples_and_errors() -> None:
    fake = FakeMetrics({"rate": 0.97, "count": 512.4, "broken": QueryResult(error="bad_data: x", rejected=True)})
    assert measure(fake, "r1", MetricQuery("sr", "rate", "count")) == MetricMeasurement("r1", 0.97, 512)
    assert measure(fake, "r1", MetricQuery("sr", "rate")) == MetricMeasurement("r1", 0.97, None)
    assert measure(fake, "r1", MetricQuery("sr", "missing", "count")) == MetricMeasurement("r1", None, 512)
    assert measure(fake, "r1", MetricQuery("sr", "broken")) == MetricMeasurement("r1", error="bad_data: x")
    samples_failed = measure(fake, "r1", MetricQuery("sr", "rate", "broken"))
    assert samples_failed.error == "samplesQuery: bad_data: x"


def test_registry_picks_the_provider_from_the_analysis_and_shares_instances() -> None:
    analysis = {"prometheus": {"address": "http://prometheus.monitoring:9090"}}
    first = registry.for_analysis(analysis)
    assert isinstance(first, PrometheusProvider) and first.address == "http://prometheus.monitoring:9090"
    assert registry.for_analysis(dict(analysis)) is first
    assert registry.for_analysis({"prometheus": {"address": "http://other:9090"}}) is not first
    with pytest.raises(ProviderError) as missing:
        registry.for_analysis({"interval": "30s"})
    assert missing.value.field == "spec.analysis"


def test_the_fake_replaces_prometheus_for_unit_tests_and_goes_away() -> None:
    fake = FakeMetrics({"up": 1.0}).install()
    try:
        assert registry.for_analysis({"prometheus": {"address": "http://x"}}) is fake
    finally:
        registry.METRICS.unregister("prometheus")
    assert isinstance(registry.for_analysis({"prometheus": {"address": "http://x"}}), PrometheusProvider)


CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_the_ca_bundle_file_is_private_unpredictable_and_removed_on_close(tmp_path: Any,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Another local user plants a CA of their own where a predictable name would be.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"paved-prometheus-ca-{hashlib.sha256(CA_PEM.encode()).hexdigest()[:16]}.pem"
    planted.write_text("-----BEGIN CERTIFICATE-----\nTHEIRS\n-----END CERTIFICATE-----\n")
    first = PrometheusProvider("https://127.0.0.1:9", access=Access(ca_bundle=CA_PEM))
    second = PrometheusProvider("https://127.0.0.1:9", access=Access(ca_bundle=CA_PEM))
    assert isinstance(first.verify, str) and first.verify != str(planted)
    assert Path(first.verify).read_text() == CA_PEM
    assert stat.S_IMODE(os.stat(first.verify).st_mode) == 0o600
    assert second.verify != first.verify  # one file per provider: closing one leaves the other's
    first.close()
    assert not Path(first.verify).exists() and Path(str(second.verify)).read_text() == CA_PEM
    second.close()


def test_rotated_credentials_leave_one_instance_and_close_the_old_one(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(registry, "_clock", lambda: now[0])
    address = "http://prometheus.rotation:9090"

    def settings(token: str) -> dict[str, Any]:
        return {"prometheus": {"address": address, "bearerToken": token, "caBundle": CA_PEM,
                               "basicAuth": ("reader", f"pw-{token}"), "headers": (("X-Scope-OrgID", "shop"),)}}

    old = registry.for_analysis(settings("TOKEN-one"))
    assert isinstance(old, PrometheusProvider) and isinstance(old.verify, str)
    closed: list[bool] = []
    monkeypatch.setattr(old.session, "close", lambda: closed.append(True))
    now[0] += 30
    new = registry.for_analysis(settings("TOKEN-two"))  # the Secret was rotated: new settings
    assert new is not old and registry.for_analysis(settings("TOKEN-two")) is new
    now[0] += registry.IDLE_SECONDS + 1  # the old credentials are asked for no more
    assert registry.for_analysis(settings("TOKEN-two")) is new
    ours = [i.provider for i in registry._instances.values() if getattr(i.provider, "address", None) == address]
    assert ours == [new]
    assert closed == [True] and not Path(old.verify).exists()
    assert "TOKEN" not in repr(list(registry._instances)) and "pw-" not in repr(list(registry._instances))


def test_beyond_the_bound_the_least_recently_used_instances_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [5000.0]
    monkeypatch.setattr(registry, "_clock", lambda: now[0])
    monkeypatch.setattr(registry, "MAX_INSTANCES", 3)
    first = registry.for_analysis({"prometheus": {"address": "http://bound:9090", "bearerToken": "t0"}})
    closed: list[bool] = []
    monkeypatch.setattr(first.session, "close", lambda: closed.append(True))  # type: ignore[attr-defined]
    for index in range(1, 4):
        now[0] += 1
        registry.for_analysis({"prometheus": {"address": "http://bound:9090", "bearerToken": f"t{index}"}})
    assert len(registry._instances) <= 3 and closed == [True]
