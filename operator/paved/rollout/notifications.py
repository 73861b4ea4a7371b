"""Rollout notifications: one message per transition, for people (a chat channel), never a gate.

The code that makes a transition emits its Event through `announce`, and every
spec.notifications entry that lists the transition gets one `Notify` action with it. A transition
happens once (status records it before any action runs), so a repeated decision asks for
nothing again; the key, built like a webhook call's (`paved.rollout.gates.call_key`), lets a
receiver drop the duplicate that a lost status write can cause (the transition is then
decided again, with the same key).
"""

from __future__ import annotations

from paved.rollout.actions import Event, Notify
from paved.rollout.gates import call_key
from paved.rollout.plan import NotificationEvent
from paved.rollout.tick import Tick

KIND = "notification"


def announce(tick: Tick, event: Event, transition: NotificationEvent, scope: str) -> None:
    """Emit the transition's `event`, and its message to each notification that wants
    `transition`; `scope` names the transition within the rollout run ('step2'), so that its
    key differs from every other transition's."""
    tick.emit(event)
    for index, notification in enumerate(tick.plan.notifications):
        if transition in notification.events:
            tick.emit(Notify(index, notification.url, notification.timeout.total_seconds(),
                             call_key(tick, scope, KIND, str(index)), transition.value, event.message, tick.revision,
                             tick.state.current_step_index, tick.state.canary_weight))
