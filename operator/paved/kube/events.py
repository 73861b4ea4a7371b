"""Kubernetes Events on intents: the audit trail users see in `kubectl describe`.

Events are best effort: a failure to post one is logged and never fails a reconcile.
Messages are written by Paved's own code and name objects and fields, never values of
Secrets or generated credentials; callers must keep it that way.
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Literal

import urllib3

from paved import metrics
from paved.errors import located
from paved.api.common import now_rfc3339
from paved.api.fields import derived_name
from paved.kube.client import ApiError, request
from paved.providers.base import Owner
from paved.ratelimit import TokenBucket

log = logging.getLogger(__name__)

COMPONENT = "paved"
MAX_MESSAGE = 1024  # the API server rejects longer event notes

EventType = Literal["Normal", "Warning"]


def event_body(owner: Owner, reason: str, message: str, type: EventType = "Normal") -> dict[str, object]:
    """The core/v1 Event for `owner` (pure; unique name so concurrent posts never collide)."""
    timestamp = now_rfc3339()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": derived_name(owner.name, f".{uuid.uuid4().hex[:16]}"), "namespace": owner.namespace or "default"},
        "involvedObject": {
            "apiVersion": owner.api_version,
            "kind": owner.kind,
            "name": owner.name,
            "namespace": owner.namespace,
            "uid": owner.uid,
        },
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": type,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
    }


def post_event(owner: Owner, reason: str, message: str, type: EventType = "Normal") -> None:
    """Post one Event on `owner`; logs and swallows API errors (events must not break reconciles)."""
    body = event_body(owner, reason, message, type)
    try:
        request("POST", f"/api/v1/namespaces/{body['metadata']['namespace']}/events", operation="event", body=body)  # type: ignore[index]
    except (ApiError, OSError, urllib3.exceptions.HTTPError) as error:
        log.warning("could not post event %s on %s %s/%s: %s", reason, owner.kind, owner.namespace, owner.name, error)


# Events of the high-volume writers (the secret engine): posted in the background at most
# this many a second after a burst, at most this many waiting (more are dropped and counted,
# as client-go's recorder drops when its queue is full).
RECORDER_RATE, RECORDER_BURST, RECORDER_CAPACITY = 10.0, 50, 10_000

EventArgs = tuple[Owner, str, str, EventType]


class EventRecorder:
    """Posts Events from one background thread, rate-limited (paved.ratelimit).

    For writers whose Events can come by the thousand (a cold start of 5,000
    ExternalSecretRefs writes 5,000 Secrets): posting inline would cost every sync a
    request, and the API server's capacity during the burst belongs to the writes that make
    objects Ready. A few Events a minute are posted at once; a burst is spread out.
    """

    def __init__(self, post: Callable[[Owner, str, str, EventType], None] = post_event, *,
                 rate: float = RECORDER_RATE, burst: int = RECORDER_BURST, capacity: int = RECORDER_CAPACITY) -> None:
        self._post = post
        self._bucket = TokenBucket(rate, burst)
        self._capacity = capacity
        self._queue: collections.deque[EventArgs] = collections.deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    def record(self, owner: Owner, reason: str, message: str, type: EventType = "Normal") -> None:
        """Queue one Event (never blocks; dropped and counted when `capacity` are waiting)."""
        with self._ready:
            if len(self._queue) >= self._capacity:
                metrics.EVENTS_DROPPED.inc()
                return
            self._queue.append((owner, reason, message, type))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="paved-events", daemon=True)
                self._thread.start()
            self._ready.notify()

    def pending(self) -> int:
        with self._ready:
            return len(self._queue)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                event = self._queue.popleft()
            self._bucket.take()
            try:
                self._post(*event)
            except Exception as error:  # noqa: BLE001 - the recorder must outlive one bad Event
                # by type and place, not a traceback: its message could quote the Event's
                log.error("could not post event %s on %s %s/%s: %s", event[1], event[0].kind, event[0].namespace,
                          event[0].name, located(error))
