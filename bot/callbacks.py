"""The callback worker (docs/callbacks.md): POSTs each queued status change to the agent's
``callback_url`` as a JWS signed with the service's key, until the receiver answers 2xx.

It reuses the outbox: entries of kind ``callback``, claimed apart from Slack's (one request's
events go out in order), retried with exponential backoff, dead after ``max_attempts``. It runs
whether or not Slack is configured. Before each attempt the URL is checked against the agent's
allow-list of the time and its host resolved and checked again (DNS rebinding); the POST then
goes to exactly those addresses, follows no redirect (a 3xx is a failure) and is abandoned at a
hard total deadline, however slowly the receiver answers. Attempts run on a small pool of
threads, at most ``per_host`` at a time to one receiver, so a slow receiver holds up neither
the others nor Slack. Each attempt signs the event afresh (``iat``, ``exp``).
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from typing import Any

import httpx

from bot.callback_post import WIRE_ERRORS, CallbackPost, DeadlinePassed
from bot.clock import utc_now
from core.callbacks import EVENT_TYPE, check_callback_url, check_resolved, url_host_port
from core.errors import ValidationFailed
from core.notices import NoticeKind
from core.service import Stepup
from core.storage import agents_repo, outbox_repo
from core.storage.outbox_repo import OutboxEntry

logger = logging.getLogger("stepup.callbacks")

CALLBACK_KINDS = (NoticeKind.CALLBACK.value,)
EVENT_LIFETIME = timedelta(minutes=5)
BATCH = (
    50  # entries run_once takes at a time  # a signed event's exp: this long after it was signed
)
Resolver = Callable[[str, int], Iterable[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def resolve_within(resolver: Resolver, host: str, port: int, seconds: float) -> list[str]:
    """``resolver``'s answer, given at most ``seconds``: ``getaddrinfo`` has no timeout of its
    own, and a name server that never answers would hold the attempt (and its thread) past
    its deadline. The lookup runs in a daemon thread left to finish on its own if it is late;
    a late one is an ``OSError`` (``TimeoutError``) like any lookup that fails."""
    done = threading.Event()
    answer: list[list[str]] = []
    failure: list[BaseException] = []

    def lookup() -> None:
        try:
            answer.append(list(resolver(host, port)))
        except BaseException as exc:  # handed to the caller
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name=f"resolve {host}", daemon=True).start()
    if not done.wait(seconds):
        raise TimeoutError(f"no answer within {seconds:g}s")
    if failure:
        raise failure[0]
    return answer[0]


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
        deadline_seconds: float = 10.0,
        threads: int = 4,
        per_host: int = 2,
        clock: Callable[[], datetime] = utc_now,
        resolver: Resolver = resolve,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if threads < 1 or per_host < 1 or deadline_seconds <= 0:
            raise ValueError("threads and per_host: at least 1; deadline_seconds: above 0")
        self.service = service
        self.db = service.db
        self.poll_seconds = poll_seconds
        self.base_backoff_seconds = base_backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_attempts = max_attempts
        self.timeout_seconds = timeout_seconds
        self.deadline_seconds = deadline_seconds  # a whole attempt, however slow the answer
        self.threads = threads
        self.per_host = per_host  # attempts in flight to one host:port at most
        # A claimed entry is left alone this long (by other replicas too): well past the
        # deadline of its attempt, so it is never delivered twice at once.
        self.lease = timedelta(seconds=max(60.0, 2 * deadline_seconds + timeout_seconds))
        self.clock = clock
        self.resolver = resolver
        self.ssl_context = ssl_context or httpx.create_ssl_context()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="callback")
        self._lock = threading.Lock()
        self._in_flight: dict[int, CallbackPost | None] = {}  # entry id -> its POST, once sent
        self._hosts: Counter[tuple[str, int]] = Counter()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        # Woken when a commit queued a callback; its poll finds the rest (other processes'
        # entries, retries falling due). Not at every change: most queue no callback.
        callback = NoticeKind.CALLBACK.value
        self.service.on_outbox(lambda kinds: self._wake.set() if callback in kinds else None)
        self._thread = threading.Thread(target=self._run, name="callbacks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop taking work, abandon the attempts in flight (retried later), and wait."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            posts = [post for post in self._in_flight.values() if post is not None]
        for post in posts:
            post.abort()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                started = len(self._dispatch())
            except Exception:
                logger.exception("callback pass failed; retrying")
                started = 0
            if not started:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()

    def run_once(self) -> int:
        """Deliver one batch of due callbacks (up to 50, on the pool's threads, whatever their
        receivers) and wait for them; returns how many were tried. For tests and one-off runs:
        the running worker keeps to ``per_host``."""
        futures = self._dispatch(batch=BATCH)
        wait(futures)
        return len(futures)

    def _dispatch(self, *, batch: int | None = None) -> list[Future[None]]:
        """Claim as many due entries as there are free threads and start them; an entry whose
        receiver already has ``per_host`` attempts in flight goes back, unattempted. With
        ``batch``: that many, queued for the threads, without a cap per receiver."""
        with self._lock:
            free = batch or self.threads - len(self._in_flight)
        if free <= 0 or self._stop.is_set():
            return []
        now = self.clock()
        taken: list[tuple[OutboxEntry, tuple[str, int]]] = []
        with self.db.write() as session:
            # A batch waits for the threads in turns: its lease covers them all.
            turns = -(-free // self.threads)
            lease = self.lease + timedelta(seconds=(turns - 1) * self.deadline_seconds)
            entries = outbox_repo.claim_due(
                session, now, kinds=CALLBACK_KINDS, limit=free, lease=lease
            )
            for entry in entries:
                receiver = _receiver(entry)
                with self._lock:
                    busy = batch is None and self._hosts[receiver] >= self.per_host
                    if not busy:
                        self._hosts[receiver] += 1
                        self._in_flight[entry.id] = None
                if busy:
                    later = now + timedelta(seconds=self.poll_seconds)
                    outbox_repo.release(session, entry.id, at=later)
                    continue
                taken.append((entry, receiver))
        return [self._pool.submit(self._attempt, entry, receiver) for entry, receiver in taken]

    def _attempt(self, entry: OutboxEntry, receiver: tuple[str, int]) -> None:
        try:
            self._deliver_and_settle(entry)
        except Exception:
            logger.exception("settling callback %d failed (retried when its lease ends)", entry.id)
        finally:
            with self._lock:
                self._in_flight.pop(entry.id, None)
                self._hosts[receiver] -= 1
                if self._hosts[receiver] <= 0:
                    del self._hosts[receiver]
            self._wake.set()  # a thread is free

    # -- one event -------------------------------------------------------------------------

    def _deliver_and_settle(self, entry: OutboxEntry) -> None:
        try:
            self.deliver(entry)
        except Exception as exc:
            error = str(exc) if isinstance(exc, CallbackFailed) else f"{type(exc).__name__}: {exc}"
            if entry.attempts >= self.max_attempts:
                with self.db.write() as session:
                    outbox_repo.mark_dead(
                        session,
                        entry.id,
                        error=f"{error} (gave up after {entry.attempts} attempts)",
                        at=self.clock(),
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
            with self.db.write() as session:
                outbox_repo.reschedule(
                    session, entry.id, at=self.clock() + timedelta(seconds=delay), error=error
                )
            return
        with self.db.write() as session:
            outbox_repo.mark_sent(session, entry.id, self.clock())

    def retry_delay(self, attempts: int) -> float:
        """Exponential backoff (base, twice that, four times...), at most the maximum."""
        backoff = self.base_backoff_seconds * 2.0 ** min(attempts - 1, 30)
        return min(self.max_backoff_seconds, backoff)

    def signed_event(self, url: str, event: dict[str, Any], *, agent: str) -> str:
        """The event as a compact JWS: its fields as claims, for this URL, from this service,
        about ``agent``'s request, valid for ``EVENT_LIFETIME`` from now (each attempt signs
        afresh, so a redelivery is never stale)."""
        signed_at = self.clock()
        claims = dict(event) | {
            "agent": agent,
            "iss": self.service.issuer_url,
            "aud": url,
            "jti": event["id"],
            "iat": int(signed_at.timestamp()),
            "exp": int((signed_at + EVENT_LIFETIME).timestamp()),
        }
        return self.service.keyring.sign(claims, typ=EVENT_TYPE)

    def deliver(self, entry: OutboxEntry) -> None:
        payload: dict[str, Any] = json.loads(entry.payload)
        url = str(payload["url"])
        event = dict(payload["event"])
        with self.db.read() as session:
            target = agents_repo.callback_target(session, str(entry.request_id))
        if target is None:
            raise CallbackFailed(f"no request {entry.request_id}")
        agent, allowed = target
        try:
            check_callback_url(url, allowed)  # the allow-list may have changed since submit
        except ValidationFailed as exc:
            raise CallbackFailed(f"{exc.detail} (now)") from None
        host, port = url_host_port(url)
        started = time.monotonic()
        try:
            addresses = resolve_within(self.resolver, host, port, self.deadline_seconds)
        except OSError as exc:
            raise CallbackFailed(f"cannot resolve {host}: {exc}") from None
        # The lookup's time counts against the attempt's one deadline.
        left = max(self.deadline_seconds - (time.monotonic() - started), 0.001)
        try:
            check_resolved(host, addresses)
        except ValueError as exc:
            raise CallbackFailed(str(exc)) from None
        post = CallbackPost(
            url,
            self.signed_event(url, event, agent=agent).encode("ascii"),
            addresses=addresses,
            ssl_context=self.ssl_context,
            deadline_seconds=left,
            timeout_seconds=self.timeout_seconds,
            headers=[("Content-Type", "application/jwt"), ("User-Agent", "stepup-callbacks")],
        )
        with self._lock:
            self._in_flight[entry.id] = post
        if self._stop.is_set():
            post.abort()
        try:
            status = post.send()
        except DeadlinePassed:
            raise CallbackFailed(
                f"POST {host} abandoned: no complete answer within {self.deadline_seconds:g}s"
            ) from None
        except WIRE_ERRORS as exc:
            raise CallbackFailed(f"POST {host} failed: {type(exc).__name__}: {exc}") from None
        if 300 <= status < 400:
            raise CallbackFailed(f"answered {status} (a redirect; not followed)")
        if not 200 <= status < 300:
            raise CallbackFailed(f"answered {status}")


def _receiver(entry: OutboxEntry) -> tuple[str, int]:
    """The host and port an entry goes to ("", 0 when its payload is unreadable)."""
    try:
        return url_host_port(str(json.loads(entry.payload)["url"]))
    except (ValueError, KeyError, TypeError):
        return "", 0
