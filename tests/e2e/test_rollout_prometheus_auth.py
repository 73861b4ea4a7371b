"""ProgressiveRollout with a Prometheus that wants a bearer token, end to end (issue 18.3).

Real parts: the control plane, `paved run` as deploy/'s ServiceAccount, Debian's Prometheus
scraping the two loopback apps (the `shop` fixture). Prometheus cannot check a bearer token
itself, so a loopback proxy in front of it answers 401 to any request without the token.
The token lives in a Secret of the rollout's namespace: the operator reads it there.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from e2e.shop import INTERVAL_S, SUCCESS_RATE, Shop, start
from fixtures.cluster import wait_for
from fixtures.operator import OperatorProcess
from fixtures.prometheus import bearer_proxy

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.usefixtures("operator")]

TOKEN = "e2e-bearer-" + "7f3c9a1d5b2e4f60"  # noqa: S105 - looked for in everything Paved writes


def analysis(address: str, key: str) -> dict[str, Any]:
    return {"prometheus": {"address": address,
                           "auth": {"bearerToken": {"secretKeyRef": {"name": "prometheus-token", "key": key}}},
                           "headers": [{"name": "X-Scope-OrgID", "value": "shop"}]},
            "interval": f"{INTERVAL_S:g}s", "metrics": [SUCCESS_RATE]}


def test_a_bearer_token_from_the_namespace_and_a_missing_key_named(shop: Shop, operator: OperatorProcess) -> None:
    proxy, seen = bearer_proxy(shop.prometheus, TOKEN)
    shop.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "prometheus-token", "namespace": shop.namespace},
                "data": {"token": base64.b64encode(TOKEN.encode()).decode()}})
    with proxy:
        # A key the Secret does not have: refused, naming the field; stable keeps all traffic.
        shop.apply(shop.rollout("missing-key", analysis=analysis(proxy.url, "tokn")))
        condition = wait_for(lambda: (c := shop.condition("Ready", "missing-key")).get("reason") and c, timeout=30,
                             what="a Ready condition on missing-key")
        assert (condition["status"], condition["reason"]) == ("False", "CredentialsMissing"), condition
        assert condition["message"].startswith(
            "spec.analysis.prometheus.auth.bearerToken.secretKeyRef.key: Secret "), condition["message"]
        assert "no traffic moved" in shop.status("missing-key")["message"]
        assert shop.route_weights() == (100, 0)
        assert [e for e in shop.events("CredentialsMissing") if e["involvedObject"]["name"] == "missing-key"]

        # The right key: every query carries the token (and the header), and a healthy canary is promoted.
        start(shop, analysis=analysis(proxy.url, "token"))
        reader, load = shop.traffic()
        try:
            shop.new_version("v2")
            status = shop.wait_promoted()
        finally:
            load.stop()
            reader.stop()
    assert any(h["verdict"] == "Successful" for h in status["analysisHistory"])
    assert seen and all(entry == (f"Bearer {TOKEN}", "shop") for entry in seen), set(seen)

    # The token is nowhere Paved writes: status, Events, the operator's log.
    written = shop.kubectl("get", "progressiverollouts,events", "-n", shop.namespace, "-o", "json").stdout
    assert TOKEN not in written and "missing-key" in written
    assert TOKEN not in operator.log_path.read_text()
    assert json.loads(written)["items"]
