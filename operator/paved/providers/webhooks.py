"""Rollout webhooks: one POST per `RunWebhook` action, answered as a `WebhookResult`,
and one per `Notify` action (a notification, whose result is only reported).

A 2xx answer within the webhook's timeout passes; anything else fails the check: another
status ("HTTP 503"), a timeout ("timed out after 10s"), no connection ("connection
refused"), a connection to an address the endpoint rule forbids (paved.providers.egress:
the rollout's tick refuses such a URL before calling; this catches a name that changed its
answer since). There is no retry here on purpose: a failed check is a verdict, and a call whose
result was lost (operator restart) is re-sent by the state machine with the same key.

The request carries header `X-Paved-Webhook-Key: <key>`, stable across re-sends of the same
call, so receivers can de-duplicate an at-least-once delivery. The JSON body says which
rollout, which hook and where the rollout is (no secrets: it is built from names only):

    {"name": "checkout", "namespace": "shop", "webhook": "load-test", "type": "rollout",
     "revision": "5d9c7f6b4a", "stepIndex": 2, "key": "..."}

A notification's body is Slack-compatible (an incoming webhook shows `text`, and ignores the rest):

    {"text": "ProgressiveRollout shop/checkout: step 2/4 (20%): setWeight 20", "event": "StepStarted",
     "name": "checkout", "namespace": "shop", "revision": "5d9c7f6b4a", "stepIndex": 1,
     "canaryWeight": 20, "key": "..."}
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import requests

from paved import fence
from paved.metrics import count_call
from paved.providers.base import ProviderError
from paved.providers.egress import STRICT, Egress, refused_reason
from paved.rollout.actions import Notify, RunWebhook
from paved.rollout.observation import WebhookResult

KEY_HEADER = "X-Paved-Webhook-Key"
CONNECT_TIMEOUT = 2.0


@dataclass(frozen=True)
class RolloutRef:
    namespace: str
    name: str


class WebhookCaller:
    """Sends webhook calls over a pooled session per Egress (or the one session given, in tests)."""

    def __init__(self, session: requests.Session | None = None) -> None:
        self._given = session
        self._sessions: dict[bool, requests.Session] = {}
        self._lock = threading.Lock()

    def session(self, egress: Egress) -> requests.Session:
        if self._given is not None:
            return self._given
        with self._lock:
            if egress.any_endpoint not in self._sessions:
                self._sessions[egress.any_endpoint] = egress.session()
            return self._sessions[egress.any_endpoint]

    def call(self, rollout: RolloutRef, action: RunWebhook, egress: Egress = STRICT) -> WebhookResult:
        """The call's verdict; ProviderError (not a verdict) when this replica may not call out."""
        payload: dict[str, Any] = {
            "name": rollout.name, "namespace": rollout.namespace, "webhook": action.name, "type": action.type,
            "revision": action.revision, "stepIndex": action.step_index, "key": action.key,
        }
        return self._post(f"webhook {action.name}", action.type, action.url, payload, action.key,
                          action.timeout_seconds, egress)

    def notify(self, rollout: RolloutRef, action: Notify, egress: Egress = STRICT) -> WebhookResult:
        """Send one notification (a Slack-compatible body: `text` plus the rollout's state);
        its outcome is only reported, never a verdict on the rollout."""
        payload: dict[str, Any] = {
            "text": f"ProgressiveRollout {rollout.namespace}/{rollout.name}: {action.text}",
            "event": action.event, "name": rollout.name, "namespace": rollout.namespace,
            "revision": action.revision, "stepIndex": action.step_index, "canaryWeight": action.weight,
            "key": action.key,
        }
        return self._post(f"notification {action.index}", "notification", action.url, payload, action.key,
                          action.timeout_seconds, egress)

    def _post(self, what: str, operation: str, url: str, payload: dict[str, Any], key: str, timeout_seconds: float,
              egress: Egress) -> WebhookResult:
        if not fence.WRITES.permits():
            raise ProviderError(f"{what} not called: {fence.WRITES.why_not()}", retryable=True)
        count_call("webhook", operation)
        timeout = max(timeout_seconds, 0.1)
        try:
            response = self.session(egress).post(url, json=payload, headers={KEY_HEADER: key},
                                                 timeout=(min(CONNECT_TIMEOUT, timeout), timeout))
        except requests.Timeout:
            return WebhookResult(False, f"timed out after {timeout:g}s")
        except requests.ConnectionError as exc:
            refused = refused_reason(exc)
            if refused:
                return WebhookResult(False, refused)
            return WebhookResult(False, "connection refused" if "refused" in str(exc).lower() else "cannot connect")
        except requests.RequestException as exc:
            return WebhookResult(False, type(exc).__name__)
        if 200 <= response.status_code <= 299:
            return WebhookResult(True, f"HTTP {response.status_code}")
        return WebhookResult(False, f"HTTP {response.status_code}")
