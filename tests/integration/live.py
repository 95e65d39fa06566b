"""A real stepup API on a free loopback port, run by uvicorn in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from bot.api.context import ApiContext
from core.snapshots import RequestSnapshot
from tests.support import eventually


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL."""
    # The socket is bound here and handed to uvicorn: picking a free port and binding it later
    # lets a parallel test take the port in between (a request then reaches the wrong server).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True
    )
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("the test server stopped before it started")
        return bool(server.started)

    eventually(started, timeout=10, interval=0.01, message="the test server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class LongPollWatch:
    """Tells when a long-poll on a request is parked: registered with the app's change hub,
    then done with its first read. From then on only a wake-up (or the periodic re-read) can
    answer it, so a change made after ``wait_parked`` proves the wake-up path.

    Watches the context's public ``hub.register`` and ``service.get``/``get_as`` through wrappers.
    """

    def __init__(self, context: ApiContext, monkeypatch: pytest.MonkeyPatch) -> None:
        self._lock = threading.Lock()
        self._registered: set[str] = set()
        self._parked: set[str] = set()
        register, get, get_as = context.hub.register, context.service.get, context.service.get_as

        def registering(request_id: str) -> asyncio.Event:
            event = register(request_id)
            with self._lock:
                self._registered.add(request_id)
            return event

        def reading(request_id: str, **options: Any) -> RequestSnapshot:
            snapshot = get(request_id, **options)
            with self._lock:
                if request_id in self._registered:
                    self._parked.add(request_id)
            return snapshot

        def reading_as(request_id: str, caller: Any, **options: Any) -> RequestSnapshot:
            snapshot = get_as(request_id, caller, **options)
            with self._lock:
                if request_id in self._registered:
                    self._parked.add(request_id)
            return snapshot

        monkeypatch.setattr(context.hub, "register", registering)
        monkeypatch.setattr(context.service, "get", reading)
        monkeypatch.setattr(context.service, "get_as", reading_as)

    def parked(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._parked

    def wait_parked(self, request_id: str, timeout: float = 10.0) -> None:
        eventually(
            lambda: self.parked(request_id),
            timeout=timeout,
            interval=0.01,
            message=f"no long-poll parked on {request_id}",
        )
