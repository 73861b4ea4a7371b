"""Kubernetes Events on intents: the audit trail users see in `kubectl describe`.

Events are best effort: a failure to post one is logged and never fails a reconcile.
Messages are written by Paved's own code and name objects and fields, never values of
Secrets or generated credentials; callers must keep it that way.
"""

from __future__ import annotations

import logging
import socket
import uuid
from typing import Literal

import urllib3

from paved.api.common import now_rfc3339
from paved.kube.client import ApiError, request
from paved.providers.base import Owner

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
        "metadata": {"name": f"{owner.name}.{uuid.uuid4().hex[:16]}", "namespace": owner.namespace or "default"},
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
