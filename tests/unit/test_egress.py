"""paved.providers.egress: the endpoint rule at call time, on real loopback sockets.

The "API server" here is a local HTTP server the test declares forbidden: each request the
guard lets through is counted by the server itself, so a refusal is proven by a count of 0.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from paved.policy.endpoints import ApiServer
from paved.providers.egress import OPEN, Egress, refused_reason, resolve
from paved.providers.metrics.prometheus import PrometheusProvider
from paved.providers.webhooks import RolloutRef, WebhookCaller
from paved.rollout.actions import RunWebhook


class Server:
    """A loopback HTTP server answering 200 (or redirecting to `redirect`), counting requests."""

    def __init__(self, redirect: str | None = None) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.requests += 1
                if redirect:
                    self.send_response(302)
                    self.send_header("Location", redirect)
                    self.end_headers()
                    return
                body = b'{"status": "success", "data": {"resultType": "scalar", "result": [0, "1"]}}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def api() -> Iterator[Server]:
    server = Server()
    yield server
    server.close()


def strict(api: Server, resolver: Any = resolve) -> Egress:
    """STRICT with the test server as the API server."""
    forbidden = ApiServer(addresses=frozenset({(ipaddress.ip_address("127.0.0.1"), api.port)}))
    return Egress(api=lambda: forbidden, resolver=resolver)


def test_the_pre_check_resolves_names(api: Server) -> None:
    egress = strict(api)
    assert egress.refusal(f"http://localhost:{api.port}/x") == "localhost (resolves to 127.0.0.1) is the Kubernetes API server"
    assert egress.refusal("http://2852039166/latest/meta-data/") is not None  # glibc reads it as 169.254.169.254
    assert egress.refusal(f"http://127.0.0.1:{api.port + 1}/") is None
    assert OPEN.refusal(f"http://localhost:{api.port}/") is None


def test_a_connection_to_a_forbidden_address_is_closed_before_anything_is_sent(api: Server) -> None:
    # The name looked harmless when it was checked, then resolves to the API server (DNS rebinding):
    # the guard judges the address the socket really reached.
    rebinding = strict(api, resolver=lambda host, port: [ipaddress.ip_address("203.0.113.9")])
    assert rebinding.refusal(f"http://rebind.example:{api.port}/") is None
    with pytest.raises(requests.ConnectionError) as error:
        rebinding.session().get(f"http://localhost:{api.port}/", timeout=5)
    assert refused_reason(error.value) == "Paved does not connect to localhost for a tenant: it is the Kubernetes API server"
    assert api.requests == 0
    OPEN.session().get(f"{api.url}/", timeout=5).raise_for_status()  # an AnyEndpoint namespace may
    assert api.requests == 1


def test_a_redirect_to_a_forbidden_address_is_refused(api: Server) -> None:
    hop = Server(redirect=f"{api.url}/api/v1/secrets")
    try:
        with pytest.raises(requests.ConnectionError) as error:
            strict(api).session().get(f"{hop.url}/", timeout=5)
        assert "Kubernetes API server" in (refused_reason(error.value) or "")
        assert (hop.requests, api.requests) == (1, 0)
    finally:
        hop.close()


def test_webhooks_and_prometheus_go_through_the_guard(api: Server) -> None:
    egress = strict(api)
    action = RunWebhook(key="k", name="hook", type="rollout", url=f"{api.url}/hook", timeout_seconds=5,
                        revision="r", step_index=0)
    result = WebhookCaller().call(RolloutRef("evil", "r"), action, egress)
    assert not result.ok and "Kubernetes API server" in result.detail
    answer = PrometheusProvider(api.url, egress=egress).query("up")
    assert answer.rejected and "Kubernetes API server" in (answer.error or "")
    assert api.requests == 0
    assert WebhookCaller().call(RolloutRef("platform", "r"), action, OPEN).ok
    assert PrometheusProvider(api.url, egress=OPEN).query("up").value == 1.0
