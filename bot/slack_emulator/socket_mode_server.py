"""A Socket Mode endpoint for the emulator: enough of RFC 6455 for slack-sdk's client.

It accepts one WebSocket client at a time, says ``hello``, pushes envelopes the test hands it
(interactive payloads, slash commands, events) and records every acknowledgement the app
sends back. Text frames only, no extensions; pings are answered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import struct
import threading
import time
from typing import Any

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    head = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([size])
    elif size < 65536:
        head += bytes([126]) + struct.pack("!H", size)
    else:
        head += bytes([127]) + struct.pack("!Q", size)
    return head + payload


def _read_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _read_frame(conn: socket.socket) -> tuple[int, bytes]:
    first, second = _read_exact(conn, 2)
    opcode, size = first & 0x0F, second & 0x7F
    if size == 126:
        size = struct.unpack("!H", _read_exact(conn, 2))[0]
    elif size == 127:
        size = struct.unpack("!Q", _read_exact(conn, 8))[0]
    mask = _read_exact(conn, 4) if second & 0x80 else b"\0\0\0\0"
    data = _read_exact(conn, size)
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


class SocketModeServer:
    """Listens on its own loopback port; ``url()`` is what apps.connections.open hands out."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(4)
        self._sock.settimeout(0.2)
        self.host, self.port = host, int(self._sock.getsockname()[1])
        self._conn: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self.acks: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name="emulator-socket-mode", daemon=True
        )
        self._thread.start()

    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/link/?ticket={secrets.token_hex(8)}"

    def close(self) -> None:
        self._stop.set()
        if self._conn is not None:
            self._conn.close()
        self._sock.close()
        self._thread.join(timeout=5)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def wait_connected(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._conn is None:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError("no Socket Mode client connected")

    def push(self, envelope_type: str, payload: dict[str, Any]) -> str:
        """Send one envelope; returns its id (the app must acknowledge it)."""
        if self._conn is None:
            raise RuntimeError("no Socket Mode client is connected")
        envelope_id = secrets.token_hex(8)
        message = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": payload,
            "accepts_response_payload": envelope_type != "events_api",
            "retry_attempt": 0,
            "retry_reason": "",
        }
        with self._send_lock:
            self._conn.sendall(_frame(json.dumps(message).encode()))
        return envelope_id

    def wait_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ack in self.acks:
                    if ack.get("envelope_id") == envelope_id:
                        return ack
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"envelope {envelope_id} not acknowledged")
                self._cond.wait(remaining)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            try:
                self._session(conn)
            except (ConnectionError, OSError):
                pass
            finally:
                with self._cond:
                    self._conn = None
                conn.close()

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(None)
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (
                line.partition(":") for line in request.decode().split("\r\n")[1:] if line
            )
        }
        accept = base64.b64encode(
            # RFC 6455 fixes SHA-1 for the handshake; it protects nothing here.
            hashlib.sha1(
                (headers["sec-websocket-key"] + _GUID).encode(), usedforsecurity=False
            ).digest()
        )
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        hello = {"type": "hello", "num_connections": 1, "debug_info": {"host": "emulator"}}
        conn.sendall(_frame(json.dumps(hello).encode()))
        with self._cond:
            self._conn = conn
            self._cond.notify_all()
        while not self._stop.is_set():
            opcode, data = _read_frame(conn)
            if opcode == 0x8:  # close
                return
            if opcode == 0x9:  # ping
                with self._send_lock:
                    conn.sendall(_frame(data, opcode=0xA))
            elif opcode == 0x1:
                with self._cond:
                    self.acks.append(json.loads(data))
                    self._cond.notify_all()
