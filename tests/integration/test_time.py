"""Escalation, issuer revocation retries and break-glass, with explicit times."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.api.rendering import request_json
from bot.slack.notes import alert_text, note_text
from core.credentials import CredentialGrant, IssuedCredential, JwtIssuer
from core.errors import Conflict, NotEligible
from core.facts import Fact
from core.model import ActionClass, Approver, SessionOutcome, Status, Vote
from core.storage.agents_repo import AgentIdentity
from core.storage.database import Database
from core.storage.tables import AuditRow, OutboxRow, RevocationRow
from tests.conftest import T0
from tests.support import OWNER, Engine, build_engine, intent

POLICY = """\
version: 1
defaults: { approval_timeout: 30m, claim_window: 5m, max_ttl: 15m }
approver_groups:
  sre-leads: { slack_users: [U0ALICE, U0BOB] }
  security-leads: { slack_users: [U0DAVE] }
channels: { approvals: C0APPROVALS }
rules:
  - name: prod-destructive
    match: { environment: production, action_class: destructive }
    decision: approve
    approvers: sre-leads
    quorum: 1
    channel: approvals
    escalate_after: 10m
    escalate_to: security-leads
  - name: prod-secrets
    match: { environment: production, action_class: secret_read }
    decision: approve
    approvers: sre-leads
    channel: approvals
    break_glass: true
    break_glass_ttl: 2m
  - name: reads
    match: { action_class: read }
    decision: allow
"""

ALICE = Approver("U0ALICE", "alice@example.com")
DAVE = Approver("U0DAVE", "dave@example.com")


@pytest.fixture
def engine(db: Database, tmp_path: Path) -> Engine:
    engine = build_engine(db, tmp_path, POLICY)
    engine.service.security_channel = "C0SECURITY"
    return engine


@pytest.fixture
def agent(engine: Engine) -> AgentIdentity:
    return engine.registry.authenticate(engine.registry.add("deploy-bot", OWNER, by="test", now=T0))


def outbox(engine: Engine, request_id: str | None = None) -> list[tuple[str, dict[str, object]]]:
    with engine.db.read() as session:
        query = select(OutboxRow).order_by(OutboxRow.id)
        if request_id is not None:
            query = query.where(OutboxRow.request_id == request_id)
        return [(r.kind, json.loads(r.payload)) for r in session.execute(query).scalars()]


def words(payload: dict[str, object]) -> str:
    """What Slack shows for a queued fact: core queues facts, the bot renders the words."""
    fact = Fact.from_json(payload["fact"])  # type: ignore[arg-type]
    return note_text(fact) if payload.get("channel") is None else alert_text(fact)


def test_escalation_reminds_then_brings_in_the_secondary_group(
    engine: Engine, agent: AgentIdentity
) -> None:
    req, _ = engine.service.submit(agent, intent(agent), now=T0)
    assert req.next_escalation_at == T0 + timedelta(minutes=5)
    assert engine.service.escalate_due(now=T0 + timedelta(minutes=4)) == []
    with pytest.raises(NotEligible):
        engine.service.vote(req.id, DAVE, Vote.APPROVE, now=T0 + timedelta(minutes=4))

    assert engine.service.escalate_due(now=T0 + timedelta(minutes=5)) == [req.id]
    assert engine.service.escalate_due(now=T0 + timedelta(minutes=6)) == []  # once per stage
    notes = [words(p) for k, p in outbox(engine, req.id) if k == "thread.note"]
    assert any("Reminder: 1 more approval(s) needed from sre-leads" in str(n) for n in notes)
    with pytest.raises(NotEligible):  # reminded, not yet escalated
        engine.service.vote(req.id, DAVE, Vote.APPROVE, now=T0 + timedelta(minutes=9))

    assert engine.service.escalate_due(now=T0 + timedelta(minutes=10)) == [req.id]
    cards = [p for k, p in outbox(engine, req.id) if k == "card.post"]
    assert cards[-1] == {"channel": None, "dm_users": ["U0DAVE"]}
    assert engine.service.get(req.id).escalation_stage == 2
    result = engine.service.vote(req.id, DAVE, Vote.APPROVE, now=T0 + timedelta(minutes=11))
    assert result.snapshot.status is Status.APPROVED
    with engine.db.read() as session:
        stages = [
            json.loads(d)["stage"]
            for d in session.execute(
                select(AuditRow.data).where(AuditRow.kind == "request.escalated")
            ).scalars()
        ]
    assert stages == [1, 2]


def test_a_decided_request_is_not_escalated(engine: Engine, agent: AgentIdentity) -> None:
    req, _ = engine.service.submit(agent, intent(agent), now=T0)
    engine.service.vote(req.id, ALICE, Vote.APPROVE, now=T0 + timedelta(minutes=1))
    assert engine.service.escalate_due(now=T0 + timedelta(minutes=20)) == []


class FlakyIssuer(JwtIssuer):
    """An issuer whose revocation endpoint fails a given number of times (like a Vault outage)."""

    def __init__(self, inner: JwtIssuer, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls: list[str] = []
        self.revoked: list[str] = []

    def issue(self, grant: CredentialGrant, now: datetime) -> IssuedCredential:
        return self.inner.issue(grant, now)

    def revoke(self, handle: str, now: datetime) -> None:
        self.calls.append(handle)
        if len(self.calls) <= self.failures:
            raise ConnectionError("vault: 503 service unavailable")
        self.revoked.append(handle)


def test_failing_revoke_is_retried_alerted_and_cleared(
    engine: Engine, agent: AgentIdentity
) -> None:
    flaky = FlakyIssuer(engine.service.issuer, failures=3)  # type: ignore[arg-type]
    engine.service.issuer = flaky
    req, _ = engine.service.submit(agent, intent(agent, action_class=ActionClass.READ), now=T0)
    _, issued = engine.service.claim(req.id, agent, now=T0)
    engine.service.complete(
        req.id, agent, SessionOutcome.SUCCEEDED, "", now=T0 + timedelta(seconds=10)
    )
    # The revocation list acts at once, whatever the issuer does.
    assert engine.service.introspect(issued.token, now=T0 + timedelta(seconds=11)) == {
        "active": False
    }

    t = T0 + timedelta(seconds=10)
    assert engine.service.process_revocations(now=t) == 0  # failure 1
    assert (
        engine.service.process_revocations(now=t + timedelta(milliseconds=500)) == 0
    )  # not due yet
    assert len(flaky.calls) == 1
    assert (
        engine.service.process_revocations(now=t + timedelta(seconds=1)) == 0
    )  # failure 2, backoff 2 s
    assert outbox(engine) == [] or all(k != "channel" for k, _ in outbox(engine))
    assert (
        engine.service.process_revocations(now=t + timedelta(seconds=3)) == 0
    )  # failure 3 -> alert
    alerts = [p for k, p in outbox(engine) if k == "channel"]
    assert len(alerts) == 1 and alerts[0]["channel"] == "C0SECURITY"
    assert "failed 3 times" in words(alerts[0]) and "503" in words(alerts[0])
    with engine.db.read() as session:
        row = session.execute(select(RevocationRow)).scalar_one()
        assert (row.status, row.attempts, row.alerted_at) == (
            "pending",
            3,
            t + timedelta(seconds=3),
        )
    assert engine.service.process_revocations(now=t + timedelta(seconds=6)) == 0  # backoff 4 s
    assert engine.service.process_revocations(now=t + timedelta(seconds=7)) == 1  # success
    assert flaky.revoked == [issued.handle] and len(flaky.calls) == 4
    assert engine.service.process_revocations(now=t + timedelta(minutes=5)) == 0  # done for good
    alerts = [words(p) for k, p in outbox(engine) if k == "channel"]
    assert len(alerts) == 2 and "Alert cleared" in alerts[1]
    with engine.db.read() as session:
        kinds = list(
            session.execute(select(AuditRow.kind).where(AuditRow.request_id == req.id)).scalars()
        )
    assert kinds.count("credential.revoked") == 1
    assert (
        kinds.count("credential.issuer_revoke_failed") == 3
        and kinds.count("credential.issuer_revoked") == 1
    )


def test_break_glass_is_granted_at_once_alerted_and_reviewed(
    engine: Engine, agent: AgentIdentity
) -> None:
    req, _ = engine.service.submit(
        agent,
        intent(
            agent,
            action_class=ActionClass.SECRET_READ,
            break_glass=True,
            on_behalf_of="sam@example.com",
        ),
        now=T0,
    )
    assert req.status is Status.APPROVED and req.terms.break_glass
    assert any("break-glass granted" in r for r in req.reasons)
    assert outbox(engine, req.id) == [("alert.break_glass", {"channel": "C0SECURITY"})]
    _, issued = engine.service.claim(req.id, agent, now=T0)
    assert issued.expires_at == T0 + timedelta(minutes=2)  # the short break-glass TTL
    with pytest.raises(NotEligible):
        engine.service.review_break_glass(req.id, Approver("U0EVE", "eve@example.com"), now=T0)
    with pytest.raises(NotEligible):
        engine.service.review_break_glass(req.id, Approver("U0ALICE", "sam@example.com"), now=T0)
    reviewed = engine.service.review_break_glass(req.id, ALICE, now=T0 + timedelta(minutes=1))
    assert reviewed.break_glass_reviewed_by == "alice@example.com"
    assert request_json(reviewed)["break_glass_review"]["reviewed_by"] == "alice@example.com"
    with pytest.raises(Conflict):
        engine.service.review_break_glass(req.id, Approver("U0BOB", "bob@example.com"), now=T0)
    # No approval card for break-glass: no card refreshes or notes are queued for it.
    engine.service.complete(
        req.id, agent, SessionOutcome.SUCCEEDED, "", now=T0 + timedelta(minutes=1)
    )
    assert [k for k, _ in outbox(engine, req.id)] == ["alert.break_glass"]


def test_break_glass_not_permitted_keeps_approval(engine: Engine, agent: AgentIdentity) -> None:
    req, _ = engine.service.submit(agent, intent(agent, break_glass=True), now=T0)
    assert req.status is Status.PENDING
    assert any("break-glass not permitted by rule prod-destructive" in r for r in req.reasons)
