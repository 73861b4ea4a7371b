"""Leader election on a coordination.k8s.io/v1 Lease, with the Kubernetes client's own election.

The protocol is the client's (`kubernetes.leaderelection`): `LeaderElection.try_acquire_or_renew`
over a `LeaseLock`, the same record and rules as client-go. A candidate takes the Lease
when it is free or when its record has not changed for `lease_duration` seconds (by the
candidate's own clock, since it last saw a change, so clock skew between replicas does not
matter); the holder renews it every `retry_period` and gives up after `renew_deadline`
without a successful renewal. Updates are `replace` calls carrying the resourceVersion read
just before, so two candidates never both win.

What `Elector` adds around that protocol, and why:
- the write fence (paved.fence): opened until `renew_deadline` after the start of each
  successful acquisition or renewal, so it closes by itself before anyone else can take the
  Lease, whatever this process's threads are doing (see paved.fence);
- its own loop instead of `LeaderElection.run`: it can be stopped, and on SIGTERM the holder
  releases the Lease at once (holder cleared, duration 1 s: client-go's ReleaseOnCancel), so
  a rolling update hands over in about one retry period, not a lease duration;
- bounded requests: the generated client has no default timeout, and a renewal stuck on a
  dead connection must not outlive the renew deadline (the fence closes on time anyway);
- `nudge()`: a watch on the Lease wakes a waiting candidate as soon as the holder releases,
  instead of at its next retry.

Losing the Lease is final for a process: `on_stopped` is called once, and the runtime exits
(client-go programs do the same), so nothing of a past leadership lingers in memory.
"""

from __future__ import annotations

import datetime
import functools
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s_client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from paved.errors import located
from paved.fence import WriteFence

log = logging.getLogger(__name__)

# The client's election logs every renewal at INFO (every retry period): keep its warnings only.
logging.getLogger("leaderelection").setLevel(logging.WARNING)

DEFAULT_LEASE_NAME = "paved-operator"
CONNECT_TIMEOUT = 2.0


@dataclass(frozen=True)
class LeaseTimings:
    """Seconds, as client-go names them (defaults: client-go's and controller-runtime's)."""

    lease_duration: int = 15  # whole seconds: the Lease's own field is an integer
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def problems(self) -> list[str]:
        """What is wrong with these timings, naming the `paved run` options ([] = fine)."""
        found = []
        if min(self.lease_duration, self.renew_deadline, self.retry_period) < 1:
            found.append("--lease-duration, --renew-deadline and --retry-period must each be at least 1 second")
        if self.lease_duration <= self.renew_deadline:
            found.append("--lease-duration must be longer than --renew-deadline (the margin for clock drift)")
        if self.renew_deadline <= 1.2 * self.retry_period:
            found.append("--renew-deadline must be longer than 1.2 x --retry-period (room for a retry)")
        return found


def candidate_identity() -> str:
    """Unique per process: the hostname (the pod's name) and a random suffix, as client-go does."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:12]}"


class _TimedApi:
    """The generated CoordinationV1Api with a timeout on every call."""

    def __init__(self, api: k8s_client.CoordinationV1Api, read_timeout: float) -> None:
        self._api = api
        self._timeout = (CONNECT_TIMEOUT, read_timeout)

    def __getattr__(self, name: str) -> Any:
        return functools.partial(getattr(self._api, name), _request_timeout=self._timeout)


class Elector:
    """One candidate: `run()` (in its own thread) campaigns, leads, and calls back."""

    def __init__(
        self,
        *,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings,
        fence: WriteFence,
        api_client: k8s_client.ApiClient,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        problems = timings.problems()
        if problems:  # the client's Config would sys.exit() instead
            raise ValueError("; ".join(problems))
        self.identity, self.namespace, self.name = identity, namespace, name
        self.timings = timings
        self.fence = fence
        self._clock = clock
        self._lock = LeaseLock(name, namespace, identity)
        # The same calls as the generated API's, each with a timeout.
        self._lock.api_instance = _TimedApi(k8s_client.CoordinationV1Api(api_client), timings.retry_period)  # type: ignore[assignment]
        config = electionconfig.Config(self._lock, timings.lease_duration, timings.renew_deadline,
                                       timings.retry_period, on_started, on_stopped)
        self._election = leaderelection.LeaderElection(config)
        self._on_started, self._on_stopped = on_started, on_stopped
        self._stop = threading.Event()
        self._nudged = threading.Event()
        self._io = threading.Lock()  # one Lease request at a time (the loop, a release)
        self.leading = False
        self.acquired_at: float | None = None  # monotonic

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        """Campaign until leading (or stopped), then renew until stopped or lost."""
        log.info("leader election: candidate %s for Lease %s/%s", self.identity, self.namespace, self.name)
        while not self._stop.is_set():
            if self._attempt():
                break
            self._nudged.wait(self.timings.retry_period)
            self._nudged.clear()
        else:
            return
        self.leading = True
        self.acquired_at = self._clock()
        log.info("leader election: %s leads (Lease %s/%s)", self.identity, self.namespace, self.name)
        self._on_started()
        last_renewal = self.acquired_at
        while not self._stop.wait(self.timings.retry_period):
            started = self._clock()
            if self._attempt():
                last_renewal = started
            elif self._clock() - last_renewal >= self.timings.renew_deadline:
                break
        if self._stop.is_set():
            return
        self.fence.close()
        self.leading = False
        log.error("leader election: %s could not renew Lease %s/%s within %.0fs; stepping down", self.identity,
                  self.namespace, self.name, self.timings.renew_deadline)
        self._on_stopped()

    def _attempt(self) -> bool:
        """One try_acquire_or_renew; on success the fence opens until the renew deadline,
        counted from before the request (the write happened after that)."""
        started = self._clock()
        with self._io:
            if self._stop.is_set():
                return False
            try:
                held = bool(self._election.try_acquire_or_renew())
            except Exception as error:  # noqa: BLE001 - a timeout or a dropped connection: not held this time
                log.warning("leader election: Lease %s/%s not reachable: %s", self.namespace, self.name, located(error))
                return False
        if held:
            self.fence.open_until(started + self.timings.renew_deadline)
        return held

    # --- from other threads -------------------------------------------------------------

    def nudge(self) -> None:
        """The Lease changed: a waiting candidate tries again now instead of at its next retry."""
        self._nudged.set()

    def holder(self) -> str | None:
        """Who holds the Lease, as last observed by this candidate."""
        record = self._election.observed_record
        return getattr(record, "holder_identity", None) if record is not None else None

    def release(self) -> bool:
        """Stop campaigning; if leading, close the fence and hand the Lease back at once
        (holder cleared, duration 1 s). True when the Lease was released by this call."""
        self._stop.set()
        self._nudged.set()
        if not self.leading:
            return False
        self.fence.close()
        self.leading = False
        now = str(datetime.datetime.now())  # noqa: DTZ005 - the record's format: the client's local, naive time
        with self._io:
            try:
                found, record = self._lock.get(self.name, self.namespace)
                if not found or getattr(record, "holder_identity", None) != self.identity:
                    return False
                released = self._lock.update(self.name, self.namespace, LeaderElectionRecord(None, "1", now, now))
            except Exception as error:  # noqa: BLE001 - best effort: the Lease then expires by itself
                log.warning("leader election: Lease %s/%s not released: %s", self.namespace, self.name, located(error))
                return False
        if released:
            log.info("leader election: %s released Lease %s/%s", self.identity, self.namespace, self.name)
        return bool(released)
