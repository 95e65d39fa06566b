"""The server ``stepup serve`` runs keeps an idle connection longer than clients' pools do
(httpx: 5 s), so a client reusing its pooled connection is not reset; uvicorn's own default
(5 s) would have closed it."""

from __future__ import annotations

import socket
import threading
import time

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from bot.serving import server_for
from tests.support import eventually

REQUEST = b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n"


def _answer(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"pong"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_an_idle_connection_outlives_a_client_pools_keep_alive() -> None:
    app = FastAPI()

    @app.get("/ping", response_class=PlainTextResponse)
    def ping() -> str:
        return "pong"

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = server_for(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        eventually(lambda: server.started, timeout=10)
        with socket.create_connection(listener.getsockname()[:2], timeout=10) as conn:
            conn.sendall(REQUEST)
            assert _answer(conn).startswith(b"HTTP/1.1 200")
            time.sleep(6)  # past httpx's pool expiry and uvicorn's default keep-alive (5 s)
            conn.sendall(REQUEST)
            again = _answer(conn)
        assert again.startswith(b"HTTP/1.1 200"), again
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()
