"""Rollout webhooks: a 2xx within the timeout passes; anything else fails the check."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest

from paved.dev.apps.loopback import answering
from paved.providers.webhooks import KEY_HEADER, RolloutRef, WebhookCaller
from paved.rollout import RunWebhook, WebhookResult


class Receiver:
    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.calls: list[tuple[str | None, dict[str, Any]]] = []
        self.loopback = answering(self.answer).start()

    def answer(self, path: str, headers: Message, sent: bytes) -> tuple[int, None]:
        self.calls.append((headers.get(KEY_HEADER), json.loads(sent)))
        time.sleep(self.delay)
        return self.status, None

    @property
    def url(self) -> str:
        return f"{self.loopback.url}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.loopback.stop()


def action(url: str, timeout: float = 2.0) -> RunWebhook:
    return RunWebhook("rollout", "load-test", url, timeout, "rev/1/step2/rollout/load-test", "rev", 2)


def test_a_2xx_passes_and_carries_the_key(receiver: Receiver) -> None:
    result = WebhookCaller().call(RolloutRef("shop", "checkout"), action(receiver.url))
    assert result == WebhookResult(True, "HTTP 200")
    key, payload = receiver.calls[0]
    assert key == "rev/1/step2/rollout/load-test"
    assert payload == {"name": "checkout", "namespace": "shop", "webhook": "load-test", "type": "rollout",
                       "revision": "rev", "stepIndex": 2, "key": key}


def test_non_2xx_timeout_and_refused_connections_fail(receiver: Receiver) -> None:
    caller, ref = WebhookCaller(), RolloutRef("shop", "checkout")
    receiver.status = 503
    assert caller.call(ref, action(receiver.url)) == WebhookResult(False, "HTTP 503")
    receiver.status, receiver.delay = 200, 0.5
    assert caller.call(ref, action(receiver.url, timeout=0.1)) == WebhookResult(False, "timed out after 0.1s")
    assert caller.call(ref, action("http://127.0.0.1:9/hook")) == WebhookResult(False, "connection refused")
