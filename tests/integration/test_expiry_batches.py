"""Expiry in batches: many due requests, several transactions, each expired exactly once."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from core.audit.chain import verify_chain
from core.model import ActionClass, Status
from core.snapshots import RequestSnapshot
from core.storage.audit_store import chain_snapshot, iter_entries, read_head
from core.storage.database import Database
from core.storage.tables import AuditRow, OutboxRow, RevocationRow
from tests.conftest import T0
from tests.support import OWNER, build_engine, intent


def test_a_dozen_due_requests_in_batches_of_five(db: Database, tmp_path: Path) -> None:
    engine = build_engine(db, tmp_path)
    engine.service.expiry_batch = 5
    agent = engine.registry.authenticate(engine.registry.add("bot", OWNER, by="test", now=T0))
    active = []
    for ttl in range(60, 180, 10):  # twelve credentials, each with its own deadline
        req, _ = engine.service.submit(
            agent, intent(agent, action_class=ActionClass.READ, requested_ttl_seconds=ttl), now=T0
        )
        engine.service.claim(req.id, agent, now=T0)
        active.append(req.id)
    pending, _ = engine.service.submit(agent, intent(agent), now=T0)  # has a Slack card
    seen: list[RequestSnapshot] = []
    engine.service.subscribe(seen.append)

    later = T0 + timedelta(hours=1)
    results = engine.service.expire_due(now=later)
    assert [r.request_id for r in results] == [pending.id, *active]  # pending first, by deadline
    assert {r.status for r in results} == {Status.REVOKED, Status.EXPIRED}
    assert [s.id for s in seen] == [pending.id, *active]
    for snap in seen[1:]:
        assert snap.status is Status.REVOKED and snap.status_reason == "credential TTL elapsed"
        assert snap.credential is not None and snap.credential.revoked_at == later
        assert snap.version == 3 and snap.updated_at == later  # submit, claim, expire
    assert seen[0].status is Status.EXPIRED and seen[0].status_reason == "approval deadline passed"
    assert engine.service.expire_due(now=later) == []
    assert engine.service.expire_one(active[0], now=later) is None

    def audit_at(at: datetime) -> list[tuple[str, str | None]]:
        with db.read() as session:
            return [
                (kind, request_id)
                for kind, request_id in session.execute(
                    select(AuditRow.kind, AuditRow.request_id)
                    .where(AuditRow.at == at)
                    .order_by(AuditRow.seq)
                )
            ]

    # The built-in JWT's revocation is the list alone: settled in the expiry's transaction.
    assert audit_at(later) == [
        ("request.expired", pending.id),
        *(
            entry
            for request_id in active
            for entry in (
                ("credential.revoked", request_id),
                ("credential.issuer_revoked", request_id),
            )
        ),
    ]
    with db.read() as session:
        queued = set(session.execute(select(RevocationRow.request_id)).scalars())
        notes = list(
            session.execute(select(OutboxRow.kind).where(OutboxRow.request_id == pending.id))
        )
    assert queued == set(active)
    assert ("thread.note",) in notes  # the card of the pending request is told
    revoked_at = later + timedelta(seconds=1)
    assert engine.service.process_revocations(now=revoked_at) == 0  # nothing left to do
    assert audit_at(revoked_at) == []
    with chain_snapshot(db) as session:
        report = verify_chain(iter_entries(session), head=read_head(session))
    assert report.entries == report.head_seq
