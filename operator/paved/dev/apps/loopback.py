"""A threaded HTTP server on 127.0.0.1 (a free port) for test apps and fake endpoints."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[str, Message, bytes], tuple[int, Any]]
"""(path, headers, request body) -> (status, a JSON-able answer or None for an empty body)."""


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that hung up (a timeout, a stopping load generator) is not an error here


class LoopbackServer:
    """`with LoopbackServer(Handler) as server: server.url ...`; also start()/stop()."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str = "loopback", port: int = 0) -> None:
        self.server = _QuietServer(("127.0.0.1", port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def answering(respond: Responder, name: str = "loopback") -> LoopbackServer:
    """A LoopbackServer (not started) that answers every GET and POST with `respond`: a fake
    endpoint for tests that record what they were sent and script what they answer."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            sent = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, answer = respond(self.path, self.headers, sent)
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

        def log_message(self, *_: Any) -> None:
            return

    return LoopbackServer(Handler, name)
