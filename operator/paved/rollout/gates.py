"""Webhook gates: the calls of one webhook type, and when they let a stage move on.

A stage opens a gate on entry (`open_gate`: every webhook of that type is called once) and
checks it on every tick (`check_gate`). Results arrive in a later observation, keyed by the
call's `key`, which stays the same when a call is sent again: a call whose result never came
(the operator restarted, the answer was lost) is re-sent after its timeout plus a grace, so a
receiver sees at-least-once delivery and can de-duplicate on the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from paved.rollout.actions import Event, RunWebhook
from paved.rollout.plan import WebhookType
from paved.rollout.state import CallState, WebhookCall
from paved.rollout.tick import Tick

WEBHOOK_GRACE = timedelta(seconds=5)
"""A webhook call with no reported result after its timeout plus this is sent again (same key)."""


@dataclass
class Gate:
    """The calls of one webhook gate: `settled` once each has answered (or was dropped)."""

    settled: bool
    failed: list[WebhookCall]

    @property
    def passed(self) -> bool:
        return self.settled and not self.failed


def open_gate(tick: Tick, kind: WebhookType, scope: str) -> None:
    """Call every webhook of `kind` now; `check_gate(tick, kind)` reports when all have answered."""
    calls = []
    for hook in tick.plan.webhooks_of(kind):
        key = call_key(tick, scope, kind.value, hook.name)
        calls.append(WebhookCall(key, kind.value, hook.name, CallState.REQUESTED, tick.now))
        tick.emit(_webhook_action(tick, key, kind, hook.name))
    tick.progress.webhooks = calls


def call_key(tick: Tick, scope: str, kind: str, name: str) -> str:
    """'<revision>/<run>/<scope>/<kind>/<name>': the same for every send of one call of one
    rollout run (the run counts rollouts started, so a retried revision gets new keys)."""
    return f"{tick.revision}/{tick.progress.run}/{scope}/{kind}/{name}"


def check_gate(tick: Tick, kind: WebhookType) -> Gate:
    """Fold reported results into the calls of `kind`; re-send calls that got lost."""
    failed: list[WebhookCall] = []
    waiting = False
    for call in tick.progress.webhooks:
        if call.type != kind.value:
            continue
        if call.state is CallState.REQUESTED:
            _settle_call(tick, call, kind)
        if call.state is CallState.FAILED:
            failed.append(call)
        elif call.state is CallState.REQUESTED:
            waiting = True
    return Gate(settled=not waiting, failed=failed)


def webhook_failure(call: WebhookCall) -> str:
    """'rollout webhook load-test failed: HTTP 503' — the reason shown for a failed call."""
    detail = f": {call.detail}" if call.detail else ""
    return f"{call.type} webhook {call.name} failed{detail}"


def _webhook_action(tick: Tick, key: str, kind: WebhookType, name: str) -> RunWebhook:
    hook = next(h for h in tick.plan.webhooks_of(kind) if h.name == name)
    return RunWebhook(kind.value, name, hook.url, hook.timeout.total_seconds(), key, tick.revision,
                      tick.state.current_step_index)


def _settle_call(tick: Tick, call: WebhookCall, kind: WebhookType) -> None:
    result = tick.obs.webhook_results.get(call.key)
    if result is not None:
        call.state = CallState.PASSED if result.ok else CallState.FAILED
        call.detail = result.detail
        if not result.ok:
            tick.emit(Event("WebhookFailed", webhook_failure(call), warning=True))
        return
    hooks = [h for h in tick.plan.webhooks_of(kind) if h.name == call.name]
    if not hooks:  # the webhook left the spec while we waited: nothing to wait for
        call.state = CallState.PASSED
        call.detail = "removed from spec"
        return
    resend_at = call.at + hooks[0].timeout + WEBHOOK_GRACE
    if tick.now >= resend_at:
        call.at = tick.now
        tick.emit(_webhook_action(tick, call.key, kind, call.name))
        resend_at = tick.now + hooks[0].timeout + WEBHOOK_GRACE
    tick.wake_at(resend_at)
