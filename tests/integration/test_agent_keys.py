"""Agent keys rotated with a grace period, over real HTTP on SQLite and PostgreSQL. The API's
clock is set, not waited for: an old key works until its grace ends, then gets exactly what an
unknown key gets; the new key works throughout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from bot.api.app import create_app
from bot.api.context import ApiContext
from core.agents import AgentRegistry
from core.errors import Conflict, NotFound, ValidationFailed
from core.storage.database import Database
from core.storage.tables import AuditRow
from tests.conftest import T0
from tests.integration.live import running
from tests.support import OWNER, Engine, build_engine, submit_body

READ = submit_body(action="db.query", action_class="read")
GRACE = timedelta(minutes=10)


@dataclass
class Clocked:
    url: str
    engine: Engine
    registry: AgentRegistry
    key: str
    now: datetime

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def status(self, key: str) -> int:
        """What the key gets on a submission and on a read, which must agree."""
        with self.client(key) as c:
            submitted = c.post("/v1/requests", json=READ)
            read = c.get("/v1/requests/req_none")
        assert (submitted.status_code == 401) == (read.status_code == 401), read.text
        return submitted.status_code

    def refusal(self, key: str) -> tuple[int, dict[str, object], str | None]:
        with self.client(key) as c:
            answer = c.get("/v1/requests/req_none")
        return answer.status_code, answer.json(), answer.headers.get("www-authenticate")


@pytest.fixture
def api(db: Database, tmp_path: Path) -> Iterator[Clocked]:
    engine = build_engine(db, tmp_path)
    registry = engine.registry
    key = registry.add("deploy-bot", OWNER, by="test", now=T0)
    clocked = Clocked("", engine, registry, key, T0)
    context = ApiContext(service=engine.service, registry=registry, clock=lambda: clocked.now)
    with running(create_app(context)) as url:
        clocked.url = url
        yield clocked


def live_keys(api: Clocked) -> int:
    [agent] = api.registry.list_agents(now=api.now)
    return agent.live_keys


def test_the_old_key_works_until_its_grace_ends_then_gets_what_an_unknown_key_gets(
    api: Clocked,
) -> None:
    unknown = api.refusal("stpa_" + "x" * 43)
    assert unknown[0] == 401
    rotated = api.registry.rotate_key("deploy-bot", by="test", now=T0, grace=GRACE)
    assert (rotated.old_keys, rotated.old_keys_until) == (1, T0 + GRACE)
    assert rotated.key != api.key and rotated.key.startswith("stpa_")
    assert live_keys(api) == 2

    api.now = T0 + GRACE - timedelta(microseconds=1)
    assert api.status(api.key) == 201
    assert api.status(rotated.key) == 201
    api.now = T0 + GRACE
    assert api.refusal(api.key) == unknown
    assert api.status(api.key) == 401
    assert api.status(rotated.key) == 201
    assert live_keys(api) == 1
    api.now = T0 + timedelta(days=30)
    assert api.status(api.key) == 401 and api.status(rotated.key) == 201


def test_no_grace_stops_the_old_key_at_once(api: Clocked) -> None:
    rotated = api.registry.rotate_key("deploy-bot", by="test", now=T0, grace=timedelta(0))
    assert api.status(api.key) == 401
    assert api.status(rotated.key) == 201
    assert live_keys(api) == 1


def test_a_later_rotation_shortens_a_grace_but_never_extends_one(api: Clocked) -> None:
    first = api.registry.rotate_key("deploy-bot", by="test", now=T0, grace=timedelta(minutes=1))
    second = api.registry.rotate_key("deploy-bot", by="test", now=T0, grace=GRACE)
    assert second.old_keys == 2  # the original key, in its grace, and the first rotation's
    api.now = T0 + timedelta(minutes=1)
    assert api.status(api.key) == 401  # still ends after its own 1 minute, not 10
    assert api.status(first.key) == 201
    third = api.registry.rotate_key("deploy-bot", by="test", now=api.now, grace=timedelta(0))
    assert (third.old_keys, api.status(first.key), api.status(second.key)) == (2, 401, 401)
    assert api.status(third.key) == 201


def test_disabling_stops_every_key_including_those_in_grace(api: Clocked) -> None:
    rotated = api.registry.rotate_key("deploy-bot", by="test", now=T0, grace=GRACE)
    api.registry.disable("deploy-bot", by="test", now=T0)
    assert api.status(api.key) == 401 and api.status(rotated.key) == 401
    assert live_keys(api) == 0
    with pytest.raises(Conflict, match="disabled"):
        api.registry.rotate_key("deploy-bot", by="test", now=T0)


def audit_entries(api: Clocked) -> list[AuditRow]:
    with api.engine.db.read() as session:
        return list(session.execute(select(AuditRow).order_by(AuditRow.seq)).scalars())


def test_refused_rotations_change_nothing(api: Clocked) -> None:
    before = len(audit_entries(api))
    for grace in (timedelta(seconds=-1), timedelta(hours=24, seconds=1)):
        with pytest.raises(ValidationFailed, match="grace"):
            api.registry.rotate_key("deploy-bot", by="test", now=T0, grace=grace)
    with pytest.raises(NotFound):
        api.registry.rotate_key("nobody", by="test", now=T0)
    assert len(audit_entries(api)) == before
    assert live_keys(api) == 1 and api.status(api.key) == 201


def test_a_rotation_is_audited_without_the_key(api: Clocked) -> None:
    rotated = api.registry.rotate_key("deploy-bot", by="admin", now=T0, grace=GRACE)
    entries = audit_entries(api)
    [entry] = [e for e in entries if e.kind == "agent.key_rotated"]
    assert entry.actor == "admin" and entry.at == T0
    assert json.loads(entry.data) == {
        "agent": "deploy-bot",
        "old_keys": 1,
        "old_keys_until": (T0 + GRACE).isoformat(),
    }
    assert all(rotated.key not in e.data and api.key not in e.data for e in entries)
