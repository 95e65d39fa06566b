"""The snapshot a use case returns is the request as stored: the one transition path builds
it from the change it applied (no read back), so it must equal a fresh read, field for
field, on SQLite and PostgreSQL, for every kind of change."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from core.agents import AgentRegistry
from core.model import ActionClass, AgentIdentity, Approver, SessionOutcome, Status, Vote
from core.snapshots import RequestSnapshot
from core.storage.database import Database
from tests.conftest import T0
from tests.support import OWNER, SPONSOR, Engine, build_engine, intent

ALICE = Approver("U0ALICE", "alice@example.com", "Alice")
BOB = Approver("U0BOB", "bob@example.com", "Bob")


@pytest.fixture
def engine(db: Database, tmp_path: Path) -> Engine:
    return build_engine(db, tmp_path)


@pytest.fixture
def agent(engine: Engine) -> AgentIdentity:
    registry = AgentRegistry(engine.service)
    return registry.authenticate(registry.add("deploy-bot", OWNER, by="test", now=T0))


def same_as_stored(engine: Engine, returned: RequestSnapshot) -> None:
    assert returned == engine.service.get(returned.id)


def test_every_change_returns_what_is_stored(engine: Engine, agent: AgentIdentity) -> None:
    s = engine.service
    req, _ = s.submit(agent, intent(agent, on_behalf_of=SPONSOR), now=T0)
    same_as_stored(engine, req)
    first = s.vote(req.id, ALICE, Vote.APPROVE, now=T0 + timedelta(seconds=1))
    same_as_stored(engine, first.snapshot)
    second = s.vote(req.id, BOB, Vote.APPROVE, now=T0 + timedelta(seconds=2))
    assert second.snapshot.status is Status.APPROVED
    same_as_stored(engine, second.snapshot)
    claimed, _ = s.claim(req.id, agent, now=T0 + timedelta(seconds=3))
    same_as_stored(engine, claimed)
    done = s.complete(req.id, agent, SessionOutcome.SUCCEEDED, "ok", now=T0 + timedelta(seconds=4))
    assert done.credential is not None and done.credential.revoked_at is not None
    same_as_stored(engine, done)

    denied_req, _ = s.submit(agent, intent(agent), now=T0)
    denied = s.vote(denied_req.id, ALICE, Vote.DENY, now=T0, reason="no")
    same_as_stored(engine, denied.snapshot)

    cancelled_req, _ = s.submit(agent, intent(agent), now=T0)
    same_as_stored(engine, s.cancel(cancelled_req.id, agent, now=T0 + timedelta(seconds=1)))

    read, _ = s.submit(agent, intent(agent, action_class=ActionClass.READ), now=T0)
    live, _ = s.claim(read.id, agent, now=T0)
    same_as_stored(engine, s.revoke(read.id, by="admin", reason="incident", now=T0))
    assert live.status is Status.ACTIVE


def test_batch_expiry_publishes_what_is_stored(engine: Engine, agent: AgentIdentity) -> None:
    published: list[RequestSnapshot] = []
    engine.service.subscribe(published.append)
    waiting, _ = engine.service.submit(agent, intent(agent), now=T0)
    read, _ = engine.service.submit(agent, intent(agent, action_class=ActionClass.READ), now=T0)
    engine.service.claim(read.id, agent, now=T0)
    published.clear()
    results = engine.service.expire_due(now=T0 + timedelta(hours=2))
    assert {r.request_id for r in results} == {waiting.id, read.id}
    assert {p.id for p in published} == {waiting.id, read.id}
    for snapshot in published:
        same_as_stored(engine, snapshot)


def test_a_step_without_a_reason_returns_what_is_stored(
    engine: Engine, agent: AgentIdentity
) -> None:
    """The credential's revocation reason is normalised the same way in storage and in the
    returned snapshot, however a new state change builds its Step."""
    from core.lifecycle import Event
    from core.usecases.transition import Step, changing

    read, _ = engine.service.submit(agent, intent(agent, action_class=ActionClass.READ), now=T0)
    engine.service.claim(read.id, agent, now=T0)
    with changing(engine.service.parts, T0) as unit:
        (after,) = unit.apply(Step(unit.load(read.id), Event.REVOKE, "cascade"))
    same_as_stored(engine, after)


def test_an_integrity_error_that_is_not_the_idempotency_key_is_not_reported_as_one(
    engine: Engine, agent: AgentIdentity
) -> None:
    """Only the idempotency key's own constraint means 'this key was just used'."""
    import pytest
    from sqlalchemy.exc import IntegrityError

    from core.errors import DuplicateIdempotencyKey
    from core.storage import requests_repo

    first, _ = engine.service.submit(agent, intent(agent), now=T0, idempotency_key="k1")
    with engine.db.read() as session:
        row = (
            session.connection()
            .execute(
                requests_repo._REQUESTS.select().where(requests_repo._REQUESTS.c.id == first.id)
            )
            .one()
        )
    values = dict(row._mapping)
    with pytest.raises(IntegrityError), engine.db.write() as session:  # the same primary key
        requests_repo.insert_new(session, values | {"idempotency_key": "k2"})
    with pytest.raises(DuplicateIdempotencyKey), engine.db.write() as session:
        requests_repo.insert_new(session, values | {"id": "req_other"})
