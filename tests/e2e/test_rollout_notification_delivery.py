"""Rollout notifications end to end: the shop's canary (tests/e2e/shop.py, real control plane,
Prometheus and loopback apps) with spec.notifications pointing at a loopback receiver that
records every body, like a Slack incoming webhook would.

A promoted rollout sends exactly one message per transition, in order, each under its own
key, and none again afterwards; a receiver that answers 503 costs one Warning Event naming
the field and nothing else.
"""

from __future__ import annotations

import json
import threading
import time
from email.message import Message
from typing import Any

import pytest

from e2e.shop import Shop, start
from fixtures.cluster import wait_for
from paved.dev.apps.loopback import answering
from paved.providers.webhooks import KEY_HEADER

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.usefixtures("operator")]


class Chat:
    """A loopback receiver: /hook answers 200, /down answers 503; every POST is recorded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[str, str | None, dict[str, Any]]] = []
        self.server = answering(self.answer, "chat")

    def answer(self, path: str, headers: Message, body: bytes) -> tuple[int, None]:
        with self.lock:
            self.received.append((path, headers.get(KEY_HEADER), json.loads(body)))
        return (503 if path == "/down" else 200), None

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for at, _, body in self.received if at == path]


def test_a_promoted_rollout_sends_one_notification_per_transition(shop: Shop) -> None:
    chat = Chat()
    with chat.server:
        url = chat.server.url
        start(shop, notifications=[{"url": f"{url}/hook"},
                                   {"url": f"{url}/down", "events": ["Promoted"], "timeout": "2s"}])
        assert chat.received == []  # taking over the stable version is no transition of a rollout
        reader, load = shop.traffic()
        try:
            shop.new_version("v2")
            shop.wait_promoted()
        finally:
            load.stop()
            reader.stop()
        wait_for(lambda: chat.bodies("/down"), timeout=10, what="the Promoted notification")
        time.sleep(3)  # ticks go on after the promotion: nothing may be sent again
        hook = chat.bodies("/hook")
        keys = [key for path, key, _ in chat.received if path == "/hook"]
        down = chat.bodies("/down")
    prefix = f"ProgressiveRollout {shop.namespace}/checkout: "
    assert [body["event"] for body in hook] == ["Started"] + ["StepStarted"] * 8 + ["Promoted"], hook
    assert [body["stepIndex"] for body in hook[1:9]] == list(range(8))
    assert keys == [body["key"] for body in hook] and len(set(keys)) == len(keys), keys
    assert all(body["text"].startswith(prefix) and body["namespace"] == shop.namespace for body in hook)
    assert hook[-1]["text"].startswith(prefix + "promoted revision ")
    assert [body["event"] for body in down] == ["Promoted"] and down[0]["key"] != hook[-1]["key"]
    # The failed one: one Warning naming the field (not the URL), the rollout promoted all the same.
    failed = wait_for(lambda: shop.events("NotificationFailed"), timeout=10, what="the NotificationFailed Event")
    assert [(e["type"], e["message"], e.get("count", 1)) for e in failed] == [
        ("Warning", "spec.notifications[1].url: Promoted notification not delivered: HTTP 503", 1)]
    assert shop.status()["phase"] == "Succeeded"
