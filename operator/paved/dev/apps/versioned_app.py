"""One version of an HTTP service on loopback, exporting its request counters.

`GET /` answers 200, or 500 for a configurable share of requests (exactly: every request
whose running error budget crosses an integer, so 0.3 gives 3 errors in every 10; the
budget starts full, so a failing version fails its very first request), and
counts it in `http_requests_total{version, code}`. `GET /metrics` serves the counters in
the Prometheus text format (every version/code series exists from the start at 0, so
`rate()` has a starting point the moment traffic begins).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from paved.dev.apps.loopback import LoopbackServer

CODES = ("200", "500")


class VersionedApp:
    def __init__(self, version: str, error_rate: float = 0.0, port: int = 0) -> None:
        self.version = version
        self.error_rate = error_rate
        self.counts = {code: 0 for code in CODES}
        self._budget = 0.0
        self._lock = threading.Lock()
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/metrics":
                    body, status, kind = app.exposition().encode(), 200, "text/plain; version=0.0.4"
                else:
                    status = app.serve()
                    body, kind = f"{app.version} {status}\n".encode(), "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                return

        self.loopback = LoopbackServer(Handler, name=f"app-{version}", port=port)

    @property
    def port(self) -> int:
        return self.loopback.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/"

    def serve(self) -> int:
        with self._lock:
            if self.error_rate and not any(self.counts.values()):
                self._budget = 1.0 - self.error_rate  # the first request fails
            self._budget += self.error_rate
            failed = self._budget >= 1.0 - 1e-9
            if failed:
                self._budget -= 1.0
            code = "500" if failed else "200"
            self.counts[code] += 1
        return int(code)

    def exposition(self) -> str:
        with self._lock:
            counts = dict(self.counts)
        lines = ["# HELP http_requests_total Requests served, by version and status code.",
                 "# TYPE http_requests_total counter"]
        lines += [f'http_requests_total{{version="{self.version}",code="{code}"}} {n}' for code, n in counts.items()]
        return "\n".join(lines) + "\n"

    def __enter__(self) -> VersionedApp:
        self.loopback.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.loopback.stop()
