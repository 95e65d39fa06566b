"""The listening socket of `stepup serve`: bound before "listening" is said, a busy port is one
error naming it, the PID is in the first line."""

from __future__ import annotations

import os
import socket
import threading

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from bot.serving import bound_url, listen_socket, run_on, started_line
from core.errors import ConfigError


def test_the_socket_accepts_connections_as_soon_as_it_is_returned() -> None:
    sock = listen_socket("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert bound_url(sock) == f"http://127.0.0.1:{port}"
        # Nothing serves it yet, but the kernel already queues a connection: "listening" is true.
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        sock.close()


def test_a_busy_port_is_one_error_naming_it() -> None:
    taken = listen_socket("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ConfigError) as caught:
            listen_socket("127.0.0.1", port)
        assert caught.value.detail.startswith(f"cannot listen on 127.0.0.1:{port}: port {port}")
        assert "already in use" in caught.value.detail and "STEPUP_PORT" in caught.value.detail
    finally:
        taken.close()


def test_an_unknown_host_is_named() -> None:
    with pytest.raises(ConfigError, match=r"cannot listen on no-such-host\.invalid:8080"):
        listen_socket("no-such-host.invalid", 8080)


def test_the_started_line_gives_the_pid_for_kill_hup() -> None:
    assert f"pid {os.getpid()}" in started_line()
    assert f"kill -HUP {os.getpid()}" in started_line()


def test_run_on_serves_the_app_on_the_bound_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    sock = listen_socket("127.0.0.1", 0)
    url = bound_url(sock)

    servers: list[uvicorn.Server] = []
    original = uvicorn.Server.run

    def keep(self: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
        servers.append(self)
        original(self, sockets)

    monkeypatch.setattr(uvicorn.Server, "run", keep)
    thread = threading.Thread(target=run_on, args=(app, sock), daemon=True)
    try:
        thread.start()
        answer = httpx.get(f"{url}/ping", timeout=10)  # queued until the server takes it
        assert answer.json() == {"pong": "yes"}
    finally:
        for server in servers:
            server.should_exit = True
        thread.join(timeout=10)
        sock.close()
