"""The probes: /healthz (liveness) and /readyz (readiness), on their own small HTTP server.

- /healthz: the process works, leader or not: the serving Kopf operator's event loop answers
  within a few seconds. A standby is as alive as the leader; losing the Lease never fails
  liveness (the runtime exits by itself then, see paved.runtime.process).
- /readyz: the admission webhook serves with the shared certificate and its indexes are
  loaded: only then should a Service send the API server's calls here.

A thread of its own (http.server), so a busy Kopf loop cannot make the probe itself late.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HealthServer:
    """Serves GET /healthz and /readyz from two checks; each answers 200 or 503."""

    def __init__(self, address: str, port: int, *, live: Callable[[], bool], ready: Callable[[], bool]) -> None:
        checks = {"/healthz": live, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                check = checks.get(self.path.split("?", 1)[0])
                ok = check() if check is not None else False
                status = 200 if ok else (503 if check is not None else 404)
                body = b"ok\n" if ok else b"not ok\n"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: not logged
                return

        self._server = ThreadingHTTPServer((address, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="paved-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
