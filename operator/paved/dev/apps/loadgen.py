"""A bounded load generator that splits traffic the way the HTTPRoute says.

`WeightReader` reads the stable/canary weights of the route from the API server every
`period` seconds (and keeps the history of what it saw, for assertions such as "the weight
never stepped backwards"). `LoadGenerator` sends `rate` requests per second to the two
loopback apps, choosing the backend by a smooth weighted round robin over the current
weights (deterministic: at 5% exactly one request in 20 goes to the canary). It stops at
`max_requests` or `max_seconds`, whichever comes first, and only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic()
    stable: int
    canary: int


@dataclass
class WeightReader:
    """Polls `read()` -> (stable, canary) every `period` seconds in a thread."""

    read: Callable[[], tuple[int, int] | None]
    period: float = 1.0
    history: list[Seen] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def current(self) -> tuple[int, int]:
        return (self.history[-1].stable, self.history[-1].canary) if self.history else (100, 0)

    def poll_once(self) -> None:
        try:
            weights = self.read()
        except Exception:  # noqa: BLE001 - a failed read keeps the last weights
            return
        if weights is not None and (not self.history or (self.history[-1].stable, self.history[-1].canary) != weights):
            self.history.append(Seen(time.monotonic(), *weights))

    def start(self) -> WeightReader:
        def loop() -> None:
            while not self._stop.is_set():
                self.poll_once()
                self._stop.wait(self.period)

        self.poll_once()
        self._thread = threading.Thread(target=loop, name="weight-reader", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def first(self, predicate: Callable[[Seen], bool]) -> Seen | None:
        return next((seen for seen in self.history if predicate(seen)), None)


@dataclass
class LoadGenerator:
    stable_url: str
    canary_url: str
    weights: Callable[[], tuple[int, int]]
    rate: float = 40.0
    max_requests: int = 6000
    max_seconds: float = 180.0
    canary_gets_traffic: bool = True  # False: a canary nobody calls (all its share is dropped)
    sent: dict[str, int] = field(default_factory=lambda: {"stable": 0, "canary": 0})
    first_canary_at: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=self._run, name="load-generator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        session = requests.Session()
        credit = {"stable": 0.0, "canary": 0.0}
        deadline = time.monotonic() + self.max_seconds
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        total = 0
        while not self._stop.is_set() and total < self.max_requests and time.monotonic() < deadline:
            stable, canary = self.weights()
            share = {"stable": stable, "canary": canary}
            for name in credit:  # smooth weighted round robin (nginx's algorithm)
                credit[name] += share[name]
            pick = max(credit, key=lambda name: credit[name])
            credit[pick] -= sum(share.values()) or 1
            if pick == "canary" and not self.canary_gets_traffic:
                pick = ""
            if pick:
                url = self.canary_url if pick == "canary" else self.stable_url
                try:
                    session.get(url, timeout=2)
                    self.sent[pick] += 1
                    if pick == "canary" and self.first_canary_at is None:
                        self.first_canary_at = time.monotonic()
                except requests.RequestException:
                    pass
            total += 1
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
