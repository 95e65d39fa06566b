"""A loopback HTTP listener in a daemon thread that can stop listening and bind again.

Stopping really closes the socket, so clients see "connection refused"; starting again binds
the same port (``SO_REUSEADDR`` lets it through connections still in TIME_WAIT).
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message as HeaderMap
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

POLL_SECONDS = 0.02
REBIND_SECONDS = 3.0


@dataclass(frozen=True)
class Request:
    verb: str
    path: str
    query: str
    headers: HeaderMap
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[Request], Reply]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], respond: Responder) -> None:
        super().__init__(address, _Handler)
        self.respond = respond


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection, so a closed port shows at once

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the emulator records calls itself."""

    def _serve(self, verb: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        path, _, query = self.path.partition("?")
        server = cast(_Server, self.server)
        reply = server.respond(Request(verb, path, query, self.headers, body))
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout fired during a slow answer)


class Listener:
    def __init__(self, respond: Responder, host: str = "127.0.0.1", port: int = 0) -> None:
        self._respond = respond
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            return
        server = self._bind()
        self.port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": POLL_SECONDS},
            name=f"slack-emulator-{self.port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def _bind(self) -> _Server:
        deadline = time.monotonic() + REBIND_SECONDS
        while True:
            try:
                return _Server((self.host, self.port), self._respond)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or self.port == 0:
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(POLL_SECONDS)
