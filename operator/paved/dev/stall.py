"""A store that hangs, for tests and benches: a TCP server on loopback that accepts
connections and never answers.

`StallingProxy(upstream)` forwards every connection to a real server (OpenBao, moto) until
`stall()`: from then on it keeps every connection open, old and new, reads what the client
sends and forwards nothing either way, which is what a frozen backend (or a black-holed
load balancer) looks like to a client: the TCP connection is accepted, no answer ever comes.
Without an upstream it stalls from the start. It also records when each client sent data
(`sent_at`, epoch seconds), which tells when a client started a request: the moment of each
refresh of a store pointed at it, measured from outside the operator (`refresh_lateness`:
how late each refresh on the store's grid was).

Used by tests/e2e/test_secret_store_isolation.py and bench/bench_secrets_isolation.py.
"""

from __future__ import annotations

import math
import socket
import threading
import time

from paved.secretsync import schedule
from paved.secretsync.model import StoreKey

_CHUNK = 65536


class StallingProxy:
    def __init__(self, upstream: tuple[str, int] | None = None, *, name: str = "stall") -> None:
        self.upstream = upstream
        self.name = name
        self.sent_at: list[float] = []  # when a client sent data (appended in time order)
        self._stalled = threading.Event()
        if upstream is None:
            self._stalled.set()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, name=f"{name}-accept", daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> StallingProxy:
        self._thread.start()
        return self

    def refresh_lateness(self, store: StoreKey, interval: float, start: float, end: float) -> list[float]:
        """For each grid point of `store` and `interval` (paved.secretsync.schedule) in
        [start, end): seconds from the point until a client next sent data here (inf: never).
        A refresh that is skipped shows as one a whole interval (or more) late."""
        sent = sorted(self.sent_at)
        late = []
        point = schedule.next_due(start, interval, store)
        while point < end:
            late.append(next((t for t in sent if t >= point), math.inf) - point)
            point = schedule.next_due(point, interval, store)
        return late

    def stall(self) -> None:
        """From now on, nothing goes through, on open connections as on new ones."""
        self._stalled.set()

    def stop(self) -> None:
        self._closing.set()
        self._thread.join(2)
        self._listener.close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            _close(sock)

    def __enter__(self) -> StallingProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- plumbing -------------------------------------------------------------------------

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), name=f"{self.name}-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        if not self._stalled.is_set() and self.upstream is not None:
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                return
            upstream.settimeout(None)
            self._track(upstream)
            threading.Thread(target=self._pump, args=(upstream, client, False), name=f"{self.name}-down", daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, source: socket.socket, target: socket.socket | None, from_client: bool) -> None:
        """Copy `source` to `target` until either closes; once stalled, read and drop."""
        while not self._closing.is_set():
            try:
                data = source.recv(_CHUNK)
            except OSError:
                break
            if not data:
                break
            if from_client:
                self.sent_at.append(time.time())
            if target is None or self._stalled.is_set():
                continue
            try:
                target.sendall(data)
            except OSError:
                break
        if not self._stalled.is_set():  # a stalled connection stays open: the client must wait
            _close(source)
            if target is not None:
                _close(target)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
