"""Signed callbacks, review findings of issue 15 (docs/callbacks.md), over real loopback HTTP on
SQLite and PostgreSQL: a receiver trickling its answer is abandoned at the attempt's deadline
and holds up no other receiver; the allow-list's ports are enforced at submit and at delivery;
an allow-listed name resolving to an IPv6 address that embeds a private IPv4 one is refused; a
name server that never answers ends the attempt at its deadline;
events carry the agent and expire a few minutes after each signing."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest

from bot.callbacks import EVENT_LIFETIME, CallbackWorker
from core.model import ActionClass
from core.storage.database import Database
from stepup_client import InvalidEvent, verify_event
from tests.integration.test_callback_metrics import closed_port
from tests.integration.test_callbacks import (
    READ,
    Receiver,
    client,
    outbox_rows,
    receiving,
    stepup,
)
from tests.support import ISSUER, OWNER, build_engine, eventually, intent

HEAD = b"HTTP/1.1 200 OK\r\nX-Slow: "


@dataclass
class Trickler:
    """A receiver that reads the request, then answers one header byte every ``interval``
    seconds, never finishing: a timeout per socket read never fires on it."""

    interval: float = 0.1
    connections: int = 0  # accepted
    closed: int = 0  # of which the client gave up on (the connection closed under it)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.connections, self.closed


@contextmanager
def trickling(trickler: Trickler) -> Iterator[Trickler]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                request += chunk
            sent = 0
            while not stop.is_set():
                byte = HEAD[sent : sent + 1] or b"a"
                try:
                    conn.sendall(byte)
                except OSError:  # the client closed the connection
                    with trickler.lock:
                        trickler.closed += 1
                    return
                sent += 1
                stop.wait(trickler.interval)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with trickler.lock:
                trickler.connections += 1
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    trickler.url = f"http://127.0.0.1:{server.getsockname()[1]}/hooks/slow"
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield trickler
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def test_a_trickling_receiver_is_abandoned_at_the_deadline(db: Database, tmp_path: Path) -> None:
    """Each read gets a byte well within the per-read timeout (5 s), so only a deadline on
    the whole attempt ends it: the attempt fails, is retried, and each connection is closed."""
    with (
        trickling(Trickler()) as slow,
        stepup(db, tmp_path, "127.0.0.1", max_attempts=2, deadline_seconds=1) as setup,
        client(setup) as c,
    ):
        created = c.post("/v1/requests", json=READ | {"callback_url": slow.url})
        assert created.status_code == 201, created.text
        rows = eventually(
            lambda: outbox_rows(db), until=lambda r: r and r[0].status == "dead", timeout=30
        )
        eventually(slow.counts, until=lambda n: n[1] >= 2, timeout=30)
    assert rows[0].attempts == 2
    assert "abandoned: no complete answer within 1s" in (rows[0].last_error or "")
    assert slow.counts() == (2, 2)  # two attempts, both connections closed by stepup


def test_a_slow_receiver_holds_up_no_other(db: Database, tmp_path: Path) -> None:
    """While a receiver trickles (and would for a minute), another receiver gets its event;
    and one receiver never has more than ``per_host`` attempts in flight."""
    with (
        trickling(Trickler()) as slow,
        receiving(Receiver()) as fast,
        stepup(db, tmp_path, "127.0.0.1", deadline_seconds=60, per_host=1) as setup,
        client(setup) as c,
    ):
        for _ in range(2):
            created = c.post("/v1/requests", json=READ | {"callback_url": slow.url})
            assert created.status_code == 201, created.text
        eventually(slow.counts, until=lambda n: n[0] >= 1, timeout=30)
        created = c.post("/v1/requests", json=READ | {"callback_url": fast.url})
        assert created.status_code == 201, created.text
        eventually(lambda: len(fast.bodies), until=lambda n: n >= 1, timeout=30)
        assert slow.counts() == (1, 0)  # still held; the second waits its turn, unattempted
        rows = eventually(
            lambda: outbox_rows(db), until=lambda r: r[2].status == "sent", timeout=30
        )
        assert [(r.status, r.attempts) for r in rows] == [
            ("pending", 1),
            ("pending", 0),
            ("sent", 1),
        ]
    # Stopping the worker abandoned the attempt in flight (closed, to be retried).
    eventually(slow.counts, until=lambda n: n[1] >= 1, timeout=30)
    assert outbox_rows(db)[0].status == "pending"


@pytest.mark.parametrize("entry", ["127.0.0.1:{port}", "127.0.0.1"])
def test_a_host_port_entry_allows_that_port_only(db: Database, tmp_path: Path, entry: str) -> None:
    with receiving(Receiver()) as receiver:
        port = int(receiver.url.split(":")[2].split("/")[0])
        with stepup(db, tmp_path, entry.format(port=port)) as setup, client(setup) as c:
            created = c.post("/v1/requests", json=READ | {"callback_url": receiver.url})
            assert created.status_code == 201, created.text
            eventually(lambda: len(receiver.bodies), until=lambda n: n >= 1, timeout=30)
            elsewhere = closed_port()
            other = receiver.url.replace(f":{port}/", f":{elsewhere}/")
            answer = c.post("/v1/requests", json=READ | {"callback_url": other})
    if ":" in entry:
        assert answer.status_code == 422, answer.text
        assert "callback_url" in answer.text and f"port {elsewhere}" in answer.text
    else:  # a bare host allows any port, as before
        assert answer.status_code == 201, answer.text


def test_delivery_checks_the_allow_list_of_the_time(db: Database, tmp_path: Path) -> None:
    """The allow-list is checked again before each attempt: narrowed to another port after
    submit, the event is not POSTed; allowed again, it is."""
    engine = build_engine(db, tmp_path)
    now = datetime.now(UTC)
    with receiving(Receiver()) as receiver:
        port = int(receiver.url.split(":")[2].split("/")[0])
        key = engine.registry.add("hook-bot", OWNER, by="t", now=now, callback_hosts=["127.0.0.1"])
        agent = engine.registry.authenticate(key)
        submitted = intent(agent, action_class=ActionClass.READ, callback_url=receiver.url)
        engine.service.submit(agent, submitted, now=now)
        engine.registry.change_callback_hosts(
            "hook-bot", by="t", now=now, clear=True, add=[f"127.0.0.1:{port + 1}"]
        )
        worker = CallbackWorker(engine.service, base_backoff_seconds=0.01, max_backoff_seconds=0.01)
        try:
            assert worker.run_once() == 1
            [row] = outbox_rows(db)
            assert row.status == "pending" and receiver.bodies == []
            assert f"port {port} of 127.0.0.1 is not on" in (row.last_error or "")
            engine.registry.change_callback_hosts(
                "hook-bot", by="t", now=now, add=[f"127.0.0.1:{port}"]
            )
            eventually(
                lambda: (worker.run_once(), outbox_rows(db))[1],
                until=lambda rows: rows[0].status == "sent",
                timeout=30,
            )
        finally:
            worker.stop()
    assert len(receiver.bodies) == 1


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "::ffff:10.0.0.1",  # IPv4-mapped
        "fec0::1",  # site-local
    ],
)
def test_a_name_resolving_to_an_embedded_private_address_is_refused(
    db: Database, tmp_path: Path, address: str
) -> None:
    """DNS is the edge we stand in for: the allow-listed name resolves to an IPv6 address
    that carries a private IPv4 one (or a site-local one); the attempt fails before any
    connection."""
    engine = build_engine(db, tmp_path)
    now = datetime.now(UTC)
    hosts = ["hooks.example.com"]
    agent = engine.registry.authenticate(
        engine.registry.add("hook-bot", OWNER, by="t", now=now, callback_hosts=hosts)
    )
    url = "https://hooks.example.com/stepup"
    submitted = intent(agent, action_class=ActionClass.READ, callback_url=url)
    engine.service.submit(agent, submitted, now=now)
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(f"{host}:{port}")
        return [address]

    worker = CallbackWorker(engine.service, resolver=resolver, max_attempts=1)
    try:
        assert worker.run_once() == 1
    finally:
        worker.stop()
    [row] = outbox_rows(db)
    assert asked == ["hooks.example.com:443"]
    assert row.status == "dead" and "resolves to a refused address" in (row.last_error or "")


def test_a_name_server_that_never_answers_is_given_up_on_at_the_deadline(
    db: Database, tmp_path: Path
) -> None:
    """getaddrinfo has no timeout of its own: a lookup that hangs ends the attempt at its
    deadline (the lookup's time counts against it), not when the name server gives up."""
    engine = build_engine(db, tmp_path)
    now = datetime.now(UTC)
    hosts = ["hooks.example.com"]
    agent = engine.registry.authenticate(
        engine.registry.add("hook-bot", OWNER, by="t", now=now, callback_hosts=hosts)
    )
    submitted = intent(
        agent, action_class=ActionClass.READ, callback_url="https://hooks.example.com/stepup"
    )
    engine.service.submit(agent, submitted, now=now)
    answered = threading.Event()

    def hanging(host: str, port: int) -> list[str]:
        answered.wait(20)  # a name server that does not answer
        return ["192.0.2.10"]

    worker = CallbackWorker(engine.service, resolver=hanging, max_attempts=1, deadline_seconds=0.5)
    started = time.monotonic()
    try:
        assert worker.run_once() == 1
        took = time.monotonic() - started
    finally:
        answered.set()
        worker.stop()
    [row] = outbox_rows(db)
    assert took < 5, took
    assert row.status == "dead"
    assert "cannot resolve hooks.example.com: no answer within 0.5s" in (row.last_error or "")


def test_events_name_the_agent_and_expire(db: Database, tmp_path: Path) -> None:
    with (
        receiving(Receiver(answers=[500])) as receiver,
        stepup(db, tmp_path, "127.0.0.1") as setup,
        client(setup) as c,
    ):
        created = c.post("/v1/requests", json=READ | {"callback_url": receiver.url})
        assert created.status_code == 201, created.text
        eventually(lambda: len(receiver.bodies), until=lambda n: n >= 2, timeout=30)
        jwks = httpx.get(f"{setup.url}/.well-known/jwks.json").json()
        worker = setup.worker
    event = verify_event(receiver.bodies[1], jwks=jwks, issuer=ISSUER, audience=receiver.url)
    assert event.agent == "hook-bot" and event.request_id == created.json()["id"]
    for body in receiver.bodies:  # each attempt signed afresh, for a few minutes
        claims = jwt.decode(body, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == EVENT_LIFETIME.total_seconds()
        assert set(claims) >= {"id", "request_id", "status", "at", "agent", "iat", "exp"}

    def signed_ago(ago: timedelta) -> str:
        worker.clock = lambda: datetime.now(UTC) - ago
        return worker.signed_event(
            receiver.url,
            {
                "id": event.id,
                "request_id": event.request_id,
                "status": "approved",
                "at": event.at.isoformat(),
            },
            agent="hook-bot",
        )

    # Within the leeway (30 s) of its exp, still good; past it, refused.
    late = signed_ago(EVENT_LIFETIME + timedelta(seconds=10))
    assert verify_event(late, jwks=jwks, issuer=ISSUER, audience=receiver.url).id == event.id
    stale = signed_ago(EVENT_LIFETIME + timedelta(minutes=2))
    with pytest.raises(InvalidEvent):
        verify_event(stale, jwks=jwks, issuer=ISSUER, audience=receiver.url)
    # An event without exp (as signed before) is refused too.
    worker.clock = lambda: datetime.now(UTC)
    claims = jwt.decode(receiver.bodies[0], options={"verify_signature": False})
    del claims["exp"]
    unexpiring = setup.worker.service.keyring.sign(claims, typ="stepup-event+jwt")
    with pytest.raises(InvalidEvent):
        verify_event(unexpiring, jwks=jwks, issuer=ISSUER, audience=receiver.url)
