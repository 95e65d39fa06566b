"""Request changes carried between replicas that share one PostgreSQL database.

Each replica wakes its own long-polls the moment it commits a change. So that a long-poll
held by one replica also wakes when another replica commits, every replica publishes the
ids of the requests it changed with ``NOTIFY`` and listens on the same channel with
``LISTEN`` (PostgreSQL delivers a notification to every listening session, after the
sending transaction commits). A notification only says "re-read this request": receivers
read the database, never trust the payload, so a lost or forged notification costs at
most a read. When the listening connection drops, the relay reconnects and asks for every
waiter to re-read, since changes made meanwhile were not heard.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import uuid
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from core.snapshots import RequestSnapshot

logger = logging.getLogger(__name__)

CHANNEL = "stepup_changes"
MAX_PAYLOAD_BYTES = 7900  # PostgreSQL refuses payloads of 8000 bytes or more


def conninfo(url: str) -> str:
    """A libpq URI from a SQLAlchemy URL (``postgresql+psycopg://…`` → ``postgresql://…``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def payloads(origin: str, request_ids: list[str]) -> list[str]:
    """``origin:id,id,…`` strings, each under PostgreSQL's payload limit."""
    out: list[str] = []
    batch: list[str] = []
    size = len(origin) + 1
    for request_id in request_ids:
        if batch and size + len(request_id) + 1 > MAX_PAYLOAD_BYTES:
            out.append(f"{origin}:{','.join(batch)}")
            batch, size = [], len(origin) + 1
        batch.append(request_id)
        size += len(request_id) + 1
    if batch:
        out.append(f"{origin}:{','.join(batch)}")
    return out


class PgChangeRelay:
    """Publishes this replica's request changes and hears the other replicas' ones.

    ``on_change(request_id)`` is called (from the listening thread) for each request another
    replica changed; ``on_resync()`` after the listening connection was re-established.
    """

    def __init__(
        self,
        url: str,
        on_change: Callable[[str], None] = lambda _request_id: None,
        on_resync: Callable[[], None] = lambda: None,
        *,
        poll_seconds: float = 1.0,
        retry_seconds: float = 1.0,
    ) -> None:
        self._conninfo = conninfo(url)
        self._on_change = on_change
        self._on_resync = on_resync
        self._poll_seconds = poll_seconds
        self._retry_seconds = retry_seconds
        self.origin = uuid.uuid4().hex[:12]  # this replica; its own notifications are skipped
        self._outbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.listening = threading.Event()  # set while LISTEN is in effect

    def publish(self, snapshot: RequestSnapshot) -> None:
        """Service listener: queue the changed request's id; never blocks the committer.

        A request just created is skipped: nobody can be waiting on it yet.
        """
        if not snapshot.just_created:
            self._outbox.put(snapshot.id)

    def start(self, *, listen: bool = True) -> None:
        """Start publishing, and listening unless ``listen`` is false (a short-lived process
        such as the CLI only publishes)."""
        loops = [(self._send_loop, "send")]
        if listen:
            loops.append((self._listen_loop, "listen"))
        for target, name in loops:
            thread = threading.Thread(target=target, name=f"stepup-changes-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop, once the changes queued so far are published (within ``timeout``)."""
        self._stopping.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)

    def _next_batch(self) -> list[str] | None:
        first = self._outbox.get()
        if first is None:
            return None
        ids = [first]
        with contextlib.suppress(queue.Empty):
            while len(ids) < 10_000:
                more = self._outbox.get_nowait()
                if more is None:
                    self._outbox.put(None)  # seen again by the next call, which then stops
                    break
                ids.append(more)
        return list(dict.fromkeys(ids))

    def _send_loop(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        try:
            while (ids := self._next_batch()) is not None:
                try:
                    if conn is None or conn.closed:
                        conn = self._connect()
                    for payload in payloads(self.origin, ids):
                        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                except Exception as exc:  # the sender must outlive any one failure
                    # Other replicas' long-polls fall back on their periodic re-read.
                    if isinstance(exc, psycopg.Error):
                        logger.warning("could not publish %d change(s): %s", len(ids), exc)
                    else:
                        logger.exception("could not publish %d change(s)", len(ids))
                    if conn is not None:
                        conn.close()
                    conn = None
                    if self._stopping.wait(self._retry_seconds):
                        break  # stopping with the database unreachable: drop the rest
        finally:
            if conn is not None:
                conn.close()

    def _listen_loop(self) -> None:
        first, backoff = True, self._retry_seconds
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    backoff = self._retry_seconds
                    if not first:
                        self._on_resync()  # changes made while deaf: every waiter re-reads
                    first = False
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=self._poll_seconds):
                            self._deliver(note.payload)
            except Exception as exc:  # the listener must outlive any one failure
                self.listening.clear()
                if self._stopping.is_set():
                    break
                if isinstance(exc, psycopg.Error):
                    logger.warning("change listener: %s; retrying in %.0f s", exc, backoff)
                else:
                    logger.exception("change listener failed; retrying in %.0f s", backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        self.listening.clear()

    def _deliver(self, payload: str) -> None:
        origin, _, ids = payload.partition(":")
        if origin == self.origin or not ids:
            return
        for request_id in ids.split(","):
            try:
                self._on_change(request_id)
            except Exception:  # a broken callback must not stop the listener
                logger.exception("change callback failed for %s", request_id)
