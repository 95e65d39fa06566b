"""The callback worker (docs/callbacks.md): POSTs each queued status change to the agent's
``callback_url`` as a JWS signed with the service's key, until the receiver answers 2xx.

It reuses the outbox: entries of kind ``callback``, claimed apart from Slack's (one request's
events go out in order), retried with exponential backoff, dead after ``max_attempts``. It runs
whether or not Slack is configured. No redirect is followed (a 3xx is a failure), every attempt
has a timeout, and the host is resolved and checked again before each attempt (DNS rebinding).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from bot.clock import utc_now
from core.callbacks import EVENT_TYPE, check_resolved
from core.notices import NoticeKind
from core.outbox import Outbox, OutboxEntry
from core.service import Stepup

logger = logging.getLogger("stepup.callbacks")

CALLBACK_KINDS = (NoticeKind.CALLBACK.value,)
Resolver = Callable[[str, int], Iterable[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class CallbackFailed(Exception):
    pass


class CallbackWorker:
    def __init__(
        self,
        service: Stepup,
        *,
        poll_seconds: float = 1.0,
        base_backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 600.0,
        max_attempts: int = 10,
        timeout_seconds: float = 10.0,
        clock: Callable[[], datetime] = utc_now,
        resolver: Resolver = resolve,
    ) -> None:
        self.service = service
        self.outbox = Outbox(service.db)
        self.poll_seconds = poll_seconds
        self.base_backoff_seconds = base_backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_attempts = max_attempts
        self.clock = clock
        self.resolver = resolver
        self._http = httpx.Client(follow_redirects=False, timeout=timeout_seconds, trust_env=False)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.service.subscribe(lambda _snapshot: self._wake.set())
        self._thread = threading.Thread(target=self._run, name="callbacks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._http.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once() > 0
            except Exception:
                logger.exception("callback pass failed; retrying")
                busy = False
            if not busy:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()

    def run_once(self) -> int:
        """Deliver one batch of due callbacks; returns how many were attempted."""
        entries = self.outbox.claim_due(self.clock(), kinds=CALLBACK_KINDS)
        for entry in entries:
            self._deliver_and_settle(entry)
        return len(entries)

    # -- one event -------------------------------------------------------------------------

    def _deliver_and_settle(self, entry: OutboxEntry) -> None:
        try:
            self.deliver(entry)
        except Exception as exc:
            error = str(exc) if isinstance(exc, CallbackFailed) else f"{type(exc).__name__}: {exc}"
            if entry.attempts >= self.max_attempts:
                self.outbox.mark_dead(
                    entry,
                    error=f"{error} (gave up after {entry.attempts} attempts)",
                    now=self.clock(),
                    report_to=None,
                )
                logger.error(
                    "callback for %s given up on after %d attempts: %s",
                    entry.request_id,
                    entry.attempts,
                    error,
                )
                return
            delay = self.retry_delay(entry.attempts)
            logger.warning(
                "callback for %s failed (attempt %d of %d), retrying in %.1fs: %s",
                entry.request_id,
                entry.attempts,
                self.max_attempts,
                delay,
                error,
            )
            self.outbox.reschedule(
                entry.id, at=self.clock() + timedelta(seconds=delay), error=error
            )
            return
        self.outbox.mark_sent(entry.id, self.clock())

    def retry_delay(self, attempts: int) -> float:
        """Exponential backoff (base, twice that, four times...), at most the maximum."""
        backoff = self.base_backoff_seconds * 2.0 ** min(attempts - 1, 30)
        return min(self.max_backoff_seconds, backoff)

    def signed_event(self, url: str, event: dict[str, Any]) -> str:
        """The event as a compact JWS: its fields as claims, for this URL, from this service."""
        claims = dict(event) | {
            "iss": self.service.issuer_url,
            "aud": url,
            "jti": event["id"],
            "iat": int(self.clock().timestamp()),
        }
        return self.service.keyring.sign(claims, typ=EVENT_TYPE)

    def deliver(self, entry: OutboxEntry) -> None:
        payload: dict[str, Any] = json.loads(entry.payload)
        url = str(payload["url"])
        event = dict(payload["event"])
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = list(self.resolver(host, port))
        except OSError as exc:
            raise CallbackFailed(f"cannot resolve {host}: {exc}") from None
        try:
            check_resolved(host, addresses)
        except ValueError as exc:
            raise CallbackFailed(str(exc)) from None
        try:
            # Streamed and never read: the status is the answer, and a receiver (the agent's
            # own) cannot make stepup hold a body of any size in memory.
            with self._http.stream(
                "POST",
                url,
                content=self.signed_event(url, event).encode("ascii"),
                headers={"Content-Type": "application/jwt", "User-Agent": "stepup-callbacks"},
            ) as answer:
                status, redirect, success = (
                    answer.status_code,
                    answer.is_redirect,
                    answer.is_success,
                )
        except httpx.HTTPError as exc:
            raise CallbackFailed(f"POST {host} failed: {type(exc).__name__}: {exc}") from None
        if redirect:
            raise CallbackFailed(f"answered {status} (a redirect; not followed)")
        if not success:
            raise CallbackFailed(f"answered {status}")
