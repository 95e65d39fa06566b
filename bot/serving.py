"""The listening socket of ``stepup serve``: bound before anything says "listening", and a port
that cannot be had is one error naming it, not a traceback after the log said all was well."""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
from typing import Any

from core.errors import ConfigError

BACKLOG = 2048  # uvicorn's default


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` and listening: connections queue from now on.

    Raises ``ConfigError`` naming the address when the port is taken or cannot be bound.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"cannot listen on {host}:{port}: port {port} is already in use (another "
                "stepup serve?); stop that process or set STEPUP_PORT to a free port"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def bound_url(sock: socket.socket) -> str:
    """``http://HOST:PORT`` of a bound socket (the real port when 0 was asked for)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def started_line() -> str:
    """The first line ``stepup serve`` logs: its PID, for ``kill -HUP`` (reload)."""
    pid = os.getpid()
    return f"stepup starting, pid {pid} (kill -HUP {pid} reloads the policy and signing keys)"


def server_for(app: Any, *, keep_alive_seconds: int = 75) -> Any:
    """The uvicorn server ``stepup serve`` runs (a ``uvicorn.Server``).

    Idle connections are kept ``keep_alive_seconds``: uvicorn's default, 5 s, is the time
    httpx's pool keeps them (requests/urllib3 keep them until the server closes), so a client
    reusing a connection just as the server closes it would get a reset."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", timeout_keep_alive=keep_alive_seconds)
    return uvicorn.Server(config)


def run_on(app: Any, sock: socket.socket, *, keep_alive_seconds: int = 75) -> None:
    """Serve ``app`` on the already listening ``sock`` until SIGINT or SIGTERM, then return
    (by SystemExit on SIGTERM), so that the caller's clean-up runs. uvicorn, once it has shut
    down, raises the signal it caught again with the handler that was there before it: the
    default one for SIGTERM would end the process on the spot, skipping that clean-up (the
    scheduler, the audit chainer's last pass, the delivery workers)."""
    server = server_for(app, keep_alive_seconds=keep_alive_seconds)
    if threading.current_thread() is not threading.main_thread():
        server.run(sockets=[sock])
        return
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)
