"""One callback POST (docs/callbacks.md), held to a hard total deadline.

A socket timeout bounds each read, not the whole exchange: a receiver trickling its answer a
byte at a time would hold the attempt for ever. Here every connect, read, write and TLS
handshake (whose socket timeout bounds it as a whole) gets at most the time left before the
deadline; and at the deadline a watchdog shuts the connection down, whatever step it is in, as
``abort()`` does from any thread (the worker stopping). The connection goes to the
addresses checked just before the attempt, never to a fresh resolution of the name (DNS
rebinding between the check and the connect); TLS still verifies the certificate for the name.
The answer's body is never read: the status is the answer.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpcore

# What an attempt that failed on the wire raises (never a bare httpcore or socket error).
WIRE_ERRORS = (
    httpcore.NetworkError,
    httpcore.TimeoutException,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    OSError,
)


class DeadlinePassed(Exception):
    pass


class _Tracked(httpcore.NetworkStream):
    """A stream whose reads and writes end at the attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, attempt: CallbackPost) -> None:
        self._inner = inner
        self._attempt = attempt
        attempt._track(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._attempt._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._attempt._left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = self._attempt._left(timeout)
        return _Tracked(self._inner.start_tls(ssl_context, server_hostname, left), self._attempt)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def shut_down(self) -> None:
        sock = self._inner.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            # The plain socket's shutdown, also on a TLS socket (its own would drop the TLS
            # state under a reader in another thread): the blocked read returns. Already
            # closed: nothing to do.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the checked addresses, in turn, whatever host the URL names."""

    def __init__(self, attempt: CallbackPost, addresses: Sequence[str]) -> None:
        self._attempt = attempt
        self._addresses = addresses
        self._plain = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        del host  # resolved and checked already: never resolved again
        failure: Exception = httpcore.ConnectError("no address to connect to")
        for address in self._addresses:
            try:
                stream = self._plain.connect_tcp(
                    address, port, self._attempt._left(timeout), local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            return _Tracked(stream, self._attempt)
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("callbacks go over TCP only")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class CallbackPost:
    """POST ``body`` to ``url`` at ``addresses`` within ``deadline_seconds`` in all;
    ``timeout_seconds`` bounds each step as well. ``abort()`` (any thread) ends it now."""

    def __init__(
        self,
        url: str,
        body: bytes,
        *,
        addresses: Sequence[str],
        ssl_context: ssl.SSLContext,
        deadline_seconds: float,
        timeout_seconds: float,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.url = url
        self.body = body
        self.headers = [("Host", urlsplit(url).netloc), *headers]
        self.addresses = list(addresses)
        self.ssl_context = ssl_context
        self.deadline_seconds = deadline_seconds
        self.timeout_seconds = timeout_seconds
        self._deadline = time.monotonic() + deadline_seconds
        self._streams: list[_Tracked] = []
        self._lock = threading.Lock()
        self._aborted = False

    @property
    def overdue(self) -> bool:
        return self._aborted or time.monotonic() >= self._deadline

    def _left(self, timeout: float | None) -> float:
        left = self._deadline - time.monotonic()
        if self._aborted or left <= 0:
            raise DeadlinePassed()
        return left if timeout is None else min(timeout, left)

    def _track(self, stream: _Tracked) -> None:
        with self._lock:
            self._streams.append(stream)
            aborted = self._aborted
        if aborted:
            stream.shut_down()

    def abort(self) -> None:
        """Shut the attempt's connections down: its blocked read or write returns now."""
        with self._lock:
            self._aborted = True
            streams = list(self._streams)
        for stream in streams:
            stream.shut_down()

    def send(self) -> int:
        """The answer's status. Raises DeadlinePassed past the deadline (or once aborted), one
        of ``WIRE_ERRORS`` when the exchange failed otherwise."""
        self._deadline = time.monotonic() + self.deadline_seconds
        watchdog = threading.Timer(self.deadline_seconds, self.abort)
        watchdog.daemon = True
        watchdog.start()
        step = self.timeout_seconds
        timeouts = {"connect": step, "read": step, "write": step, "pool": step}
        try:
            with (
                httpcore.ConnectionPool(
                    ssl_context=self.ssl_context,
                    max_connections=1,
                    network_backend=_PinnedBackend(self, self.addresses),
                ) as pool,
                pool.stream(
                    "POST",
                    self.url,
                    headers=self.headers,
                    content=self.body,
                    extensions={"timeout": timeouts},
                ) as answer,
            ):
                return answer.status
        except DeadlinePassed:
            raise
        except WIRE_ERRORS:
            if self.overdue:
                raise DeadlinePassed() from None
            raise
        finally:
            watchdog.cancel()
