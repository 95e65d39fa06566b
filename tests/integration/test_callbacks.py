"""Signed callbacks (docs/callbacks.md) over real HTTP, on SQLite and PostgreSQL: a receiver on
loopback gets every status change of a request as a JWS verifiable with the JWKS, redelivered
with the same event id until it answers 2xx; hosts off the agent's allow-list are refused."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from bot.api.app import create_app
from bot.api.context import ApiContext
from bot.callbacks import CallbackWorker
from bot.cli import app
from core.storage import agents_repo
from core.storage.database import Database
from core.storage.tables import AuditRow, OutboxRow, RequestRow
from stepup_client import InvalidEvent, Status, verify_event
from tests.integration.live import running
from tests.integration.test_cli_admin import make_cli_env
from tests.support import ISSUER, OWNER, build_engine, eventually, submit_body

READ = submit_body(
    action="db.query", action_class="read", justification="order 42", parameters={"n": 1}
)


@dataclass
class Receiver:
    """A tiny HTTP receiver: answers ``answers`` in turn (then 200), records every body."""

    answers: list[int] = field(default_factory=list)
    redirect_to: str = ""
    claimed_length: int = 0  # an answer announcing this many bytes and sending none
    bodies: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


@contextmanager
def receiving(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                assert self.headers["Content-Type"] == "application/jwt"
                receiver.bodies.append(body)
                code = receiver.answers.pop(0) if receiver.answers else 200
            self.send_response(code)
            if 300 <= code < 400:
                self.send_header("Location", receiver.redirect_to)
            self.send_header("Content-Length", str(receiver.claimed_length))
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/stepup"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Setup:
    url: str
    key: str
    worker: CallbackWorker
    db: Database


@contextmanager
def stepup(
    db: Database, tmp_path: Path, *hosts: str, max_attempts: int = 10, **options: Any
) -> Iterator[Setup]:
    """The API and a started callback worker (``options``: the worker's), for agent
    ``hook-bot`` whose callback allow-list is ``hosts``."""
    engine = build_engine(db, tmp_path)
    key = engine.registry.add(
        "hook-bot", OWNER, by="test", now=datetime.now(UTC), callback_hosts=hosts
    )
    worker = CallbackWorker(
        engine.service,
        poll_seconds=0.05,
        base_backoff_seconds=0.05,
        max_backoff_seconds=0.2,
        max_attempts=max_attempts,
        **({"timeout_seconds": 5} | options),
    )
    worker.start()
    context = ApiContext(service=engine.service, registry=engine.registry)
    try:
        with running(create_app(context)) as url:
            yield Setup(url, key, worker, db)
    finally:
        worker.stop()


def client(setup: Setup) -> httpx.Client:
    return httpx.Client(
        base_url=setup.url, headers={"Authorization": f"Bearer {setup.key}"}, timeout=30
    )


def outbox_rows(db: Database) -> list[OutboxRow]:
    with db.read() as session:
        rows = session.execute(
            select(OutboxRow).where(OutboxRow.kind == "callback").order_by(OutboxRow.id)
        ).scalars()
        return [
            OutboxRow(status=r.status, attempts=r.attempts, last_error=r.last_error) for r in rows
        ]


def test_every_change_is_posted_signed_and_redelivered_until_acknowledged(
    db: Database, tmp_path: Path
) -> None:
    with (
        receiving(Receiver(answers=[500, 500])) as receiver,
        stepup(db, tmp_path, "127.0.0.1") as setup,
        client(setup) as c,
    ):
        created = c.post("/v1/requests", json=READ | {"callback_url": receiver.url})
        assert created.status_code == 201, created.text
        req = created.json()
        assert req["status"] == "approved"
        # Submitted (approved) is the first event: refused twice, then acknowledged.
        eventually(lambda: len(receiver.bodies), until=lambda n: n >= 3, timeout=15)
        assert c.post(f"/v1/requests/{req['id']}/credential").status_code == 200
        done = c.post(f"/v1/requests/{req['id']}/complete", json={"outcome": "succeeded"})
        assert done.status_code == 200
        eventually(lambda: len(receiver.bodies), until=lambda n: n >= 5, timeout=15)
        jwks = httpx.get(f"{setup.url}/.well-known/jwks.json").json()
        events = [
            verify_event(body, jwks=jwks, issuer=ISSUER, audience=receiver.url)
            for body in receiver.bodies
        ]

    assert len(events) == 5
    # The same event, three times: the receiver de-duplicates on its id.
    assert events[0] == events[1] == events[2]
    assert [e.status for e in events[2:]] == [Status.APPROVED, Status.ACTIVE, Status.COMPLETED]
    assert {e.request_id for e in events} == {req["id"]}
    assert len({e.id for e in events}) == 3
    assert events[2].at <= events[3].at <= events[4].at
    rows = outbox_rows(db)
    assert [(r.status, r.attempts) for r in rows] == [("sent", 3), ("sent", 1), ("sent", 1)]
    # A token for another receiver, or from another issuer, is refused.
    with pytest.raises(InvalidEvent):
        verify_event(receiver.bodies[0], jwks=jwks, issuer=ISSUER, audience="https://other/")
    with pytest.raises(InvalidEvent):
        verify_event(receiver.bodies[0], jwks=jwks, issuer="https://evil", audience=receiver.url)
    with pytest.raises(InvalidEvent):
        verify_event(receiver.bodies[0], jwks={"keys": []}, issuer=ISSUER, audience=receiver.url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://hooks.example.net/x", "allow-list"),  # not allow-listed
        ("http://hooks.example.com/x", "https only"),  # http to a non-loopback host
        ("https://user:pw@hooks.example.com/x", "user name"),
        ("ftp://hooks.example.com/x", "https URL"),
        ("https://hooks.example.com.evil.net/x", "allow-list"),
        ("http://localhost:9/x", "allow-list"),  # loopback, not allow-listed
        ("https://169.254.169.254/latest", "allow-list"),
    ],
)
def test_callback_urls_off_the_allow_list_are_refused(
    db: Database, tmp_path: Path, url: str, why: str
) -> None:
    with stepup(db, tmp_path, "hooks.example.com") as setup, client(setup) as c:
        answer = c.post("/v1/requests", json=READ | {"callback_url": url})
        assert answer.status_code == 422, answer.text
        assert "callback_url" in answer.text and why in answer.text
    with db.read() as session:
        assert session.execute(select(RequestRow)).first() is None
    assert outbox_rows(db) == []


def test_a_redirect_is_not_followed_and_counts_as_a_failure(db: Database, tmp_path: Path) -> None:
    with (
        receiving(Receiver()) as target,
        receiving(Receiver(answers=[302, 302], redirect_to="")) as receiver,
    ):
        receiver.redirect_to = target.url
        with stepup(db, tmp_path, "127.0.0.1", max_attempts=2) as setup, client(setup) as c:
            created = c.post("/v1/requests", json=READ | {"callback_url": receiver.url})
            assert created.status_code == 201, created.text
            rows = eventually(
                lambda: outbox_rows(db), until=lambda r: r and r[0].status == "dead", timeout=15
            )
    assert len(receiver.bodies) == 2 and target.bodies == []
    assert rows[0].attempts == 2 and "redirect" in (rows[0].last_error or "")


def test_cli_agents_add_callback_hosts(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    env = make_cli_env(database_url, tmp_path)
    args = ["agents", "add", "hook-bot", "--owner", OWNER]
    hosts = ["--callback-host", "Hooks.Example.com", "--callback-host", "127.0.0.1"]
    result = CliRunner().invoke(app, args + hosts, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    bad = ["agents", "add", "bad-bot", "--owner", OWNER, "--callback-host", "https://x/"]
    refused = CliRunner().invoke(app, bad, env=env, catch_exceptions=False)
    assert refused.exit_code != 0 and "callback host" in refused.output
    db = Database(database_url)
    try:
        with db.read() as session:
            assert agents_repo.callback_hosts(session, "hook-bot") == {
                "hooks.example.com",
                "127.0.0.1",
            }
            assert agents_repo.callback_hosts(session, "bad-bot") == frozenset()
            added = session.execute(select(AuditRow).where(AuditRow.kind == "agent.added"))
            data = [json.loads(row.data) for row in added.scalars()]
    finally:
        db.dispose()
    assert data[-1]["callback_hosts"] == ["hooks.example.com", "127.0.0.1"]


def test_a_pending_request_tells_its_submission_and_its_cancellation(
    db: Database, tmp_path: Path
) -> None:
    with (
        receiving(Receiver()) as receiver,
        stepup(db, tmp_path, "127.0.0.1") as setup,
        client(setup) as c,
    ):
        url = receiver.url
        created = c.post("/v1/requests", json=submit_body() | {"callback_url": url})
        assert created.status_code == 201 and created.json()["status"] == "pending"
        request_id = created.json()["id"]
        eventually(lambda: len(receiver.bodies), until=lambda n: n >= 1, timeout=15)
        assert c.post(f"/v1/requests/{request_id}/cancel").status_code == 200
        eventually(lambda: len(receiver.bodies), until=lambda n: n >= 2, timeout=15)
        jwks = httpx.get(f"{setup.url}/.well-known/jwks.json").json()
        events = [verify_event(b, jwks=jwks, issuer=ISSUER, audience=url) for b in receiver.bodies]
    assert [(e.request_id, e.status) for e in events] == [
        (request_id, Status.PENDING),
        (request_id, Status.CANCELLED),
    ]


def test_the_answer_body_is_never_read(db: Database, tmp_path: Path) -> None:
    """The receiver is the agent's: an answer announcing gigabytes (then sending nothing) must
    not be read into the server's memory, nor fail the delivery (review finding)."""
    with (
        receiving(Receiver(claimed_length=5 * 2**30)) as receiver,
        stepup(db, tmp_path, "127.0.0.1") as setup,
        client(setup) as c,
    ):
        created = c.post("/v1/requests", json=READ | {"callback_url": receiver.url})
        assert created.status_code == 201, created.text
        rows = eventually(
            lambda: outbox_rows(db), until=lambda r: r and r[0].status == "sent", timeout=15
        )
    assert rows[0].attempts == 1 and rows[0].last_error is None


def test_cli_agents_callback_hosts_changes_the_list_and_audits_it(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    env = make_cli_env(database_url, tmp_path)

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)

    added = run("agents", "add", "hook-bot", "--owner", OWNER, "--callback-host", "a.example.com")
    assert added.exit_code == 0, added.output
    shown = run("agents", "callback-hosts", "hook-bot")
    assert (shown.exit_code, shown.stdout) == (0, "a.example.com\n")
    changed = run(
        "agents", "callback-hosts", "hook-bot",
        "--add", "B.example.com:8443", "--add", "[::1]:9000", "--add", "127.0.0.1",
        "--remove", "a.example.com",
    )  # fmt: skip
    assert changed.exit_code == 0, changed.output
    assert changed.stdout.splitlines() == ["127.0.0.1", "[::1]:9000", "b.example.com:8443"]
    # Refused as a whole, nothing applied: an entry not on the list, a bad entry, no agent.
    for args, why in [
        (["--add", "c.example.com", "--remove", "z.example.com"], "not on the callback"),
        (["--add", "c.example.com", "--add", "c.example.com:0"], "port from 1 to 65535"),
    ]:
        refused = run("agents", "callback-hosts", "hook-bot", *args)
        assert refused.exit_code != 0 and why in refused.output
    missing = run("agents", "callback-hosts", "nobody", "--add", "c.example.com")
    assert missing.exit_code != 0 and "no agent nobody" in missing.output
    as_json = run("agents", "callback-hosts", "hook-bot", "--json")
    assert json.loads(as_json.stdout) == {
        "agent": "hook-bot",
        "callback_hosts": ["127.0.0.1", "[::1]:9000", "b.example.com:8443"],
    }
    cleared = run("agents", "callback-hosts", "hook-bot", "--clear")
    assert (cleared.exit_code, cleared.stdout) == (0, "")
    unchanged = run("agents", "callback-hosts", "hook-bot", "--clear")  # nothing to audit
    assert unchanged.exit_code == 0
    db = Database(database_url)
    try:
        with db.read() as session:
            assert agents_repo.callback_hosts(session, "hook-bot") == frozenset()
            rows = session.execute(
                select(AuditRow)
                .where(AuditRow.kind == "agent.callback_hosts_changed")
                .order_by(AuditRow.seq)
            ).scalars()
            entries = [(row.actor, json.loads(row.data)) for row in rows]
    finally:
        db.dispose()
    assert entries == [
        (
            "cli",
            {
                "agent": "hook-bot",
                "added": ["127.0.0.1", "[::1]:9000", "b.example.com:8443"],
                "removed": ["a.example.com"],
                "hosts": ["127.0.0.1", "[::1]:9000", "b.example.com:8443"],
            },
        ),
        (
            "cli",
            {
                "agent": "hook-bot",
                "added": [],
                "removed": ["127.0.0.1", "[::1]:9000", "b.example.com:8443"],
                "hosts": [],
            },
        ),
    ]


def test_entries_stored_by_an_earlier_release_are_listed_and_removed_in_todays_form(
    db: Database, tmp_path: Path
) -> None:
    """Earlier releases stored IPv6 literals as written (``0:0::1``): listed and removable as
    ``::1``, the form ``--add`` writes."""
    engine = build_engine(db, tmp_path)
    now = datetime.now(UTC)
    engine.registry.add("hook-bot", OWNER, by="t", now=now)
    with db.write() as session:
        agents_repo.add_callback_hosts(session, "hook-bot", ["0:0::1", "Old.Example.com"])
    assert engine.registry.callback_hosts("hook-bot") == ["::1", "old.example.com"]
    after = engine.registry.change_callback_hosts("hook-bot", by="t", now=now, remove=["[::1]"])
    assert after == ["old.example.com"]
    with db.read() as session:
        assert agents_repo.callback_hosts(session, "hook-bot") == {"Old.Example.com"}
