"""The engine on a real database (SQLite and PostgreSQL): the whole lifecycle and its audit."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from sqlalchemy import func, select, text

from core.audit.chain import verify_chain
from core.audit.signatures import decision_signature_check
from core.errors import Conflict, IllegalTransition, NotEligible, NotFound, ValidationFailed
from core.model import ActionClass, Approver, SessionOutcome, Status, Vote
from core.storage.agents_repo import AgentIdentity
from core.storage.audit_store import iter_entries, read_head
from core.storage.database import Database
from core.storage.tables import AuditRow, CredentialRow, RequestRow, VoteRow
from tests.conftest import T0
from tests.support import ISSUER, OWNER, SPONSOR, Engine, build_engine, intent

ALICE = Approver("U0ALICE", "alice@example.com", "Alice")
BOB = Approver("U0BOB", "bob@example.com", "Bob")
CAROL = Approver("U0CAROL", "carol@example.com", "Carol")


@pytest.fixture
def engine(db: Database, tmp_path: Path) -> Engine:
    return build_engine(db, tmp_path)


@pytest.fixture
def agent(engine: Engine) -> AgentIdentity:
    return engine.registry.authenticate(engine.registry.add("deploy-bot", OWNER, by="test", now=T0))


def audit_kinds(engine: Engine, request_id: str) -> list[str]:
    with engine.db.read() as session:
        return list(
            session.execute(
                select(AuditRow.kind)
                .where(AuditRow.request_id == request_id)
                .order_by(AuditRow.seq)
            ).scalars()
        )


def verify(engine: Engine) -> int:
    with engine.db.read() as session:
        report = verify_chain(
            iter_entries(session),
            head=read_head(session),
            check_signature=decision_signature_check(engine.keyring),
        )
    return report.entries


def test_allowed_request_journey(engine: Engine, agent: AgentIdentity) -> None:
    snap, created = engine.service.submit(
        agent, intent(agent, action="db.query", action_class=ActionClass.READ), now=T0
    )
    assert created and snap.status is Status.APPROVED and snap.rule == "reads"
    assert snap.expires_at == T0 + timedelta(minutes=5)  # claim window
    claimed, issued = engine.service.claim(snap.id, agent, now=T0 + timedelta(seconds=10))
    assert claimed.status is Status.ACTIVE
    # reads rule caps TTL at 5m
    assert issued.expires_at == T0 + timedelta(seconds=10) + timedelta(minutes=5)
    claims = jwt.decode(
        issued.token,
        engine.keyring.public_key(engine.keyring.active_kid),
        algorithms=["EdDSA"],
        audience="payments-api",
        options={"verify_exp": False},
    )
    assert (
        claims["scope"] == "db.query"
        and claims["request_id"] == snap.id
        and claims["args_digest"] == snap.parameters_digest
    )
    assert engine.service.introspect(issued.token, now=T0 + timedelta(seconds=20))["active"] is True
    done = engine.service.complete(
        snap.id, agent, SessionOutcome.SUCCEEDED, "ok", now=T0 + timedelta(seconds=30)
    )
    assert (
        done.status is Status.COMPLETED
        and done.credential is not None
        and done.credential.revoked_at is not None
    )
    assert engine.service.introspect(issued.token, now=T0 + timedelta(seconds=31)) == {
        "active": False
    }
    assert audit_kinds(engine, snap.id) == [
        "intent.submitted",
        "policy.decided",
        "credential.issued",
        "credential.revoked",
        "credential.issuer_revoked",  # the built-in JWT's: settled in the same transaction
        "session.completed",
    ]
    # The token itself is nowhere in the database.
    with engine.db.read() as session:
        dumped = " ".join(
            str(v) for row in session.execute(text("select * from audit_log")).all() for v in row
        )
        dumped += " ".join(
            str(v) for row in session.execute(text("select * from credentials")).all() for v in row
        )
        dumped += " ".join(
            str(v) for row in session.execute(text("select * from requests")).all() for v in row
        )
    assert issued.token not in dumped
    assert issued.token.split(".")[2] not in dumped
    assert verify(engine) >= 5


@pytest.mark.parametrize(
    "fields",
    [
        {"action": "db.query", "action_class": ActionClass.READ},  # allowed
        {},  # approval required: pending, with an escalation deadline
        {"action": "db.drop_database"},  # denied by a rule
        {"environment": "dev", "action_class": ActionClass.DATA_EXPORT},  # denied by default
    ],
)
def test_submit_answers_what_was_stored(
    engine: Engine, agent: AgentIdentity, fields: dict[str, object]
) -> None:
    """submit builds its answer from the values it inserts, without reading the row back; the
    answer must be the very snapshot a later read of the row gives, field for field."""
    answered, created = engine.service.submit(
        agent, intent(agent, requested_ttl_seconds=120, **fields), now=T0
    )
    assert created
    assert answered == engine.service.get(answered.id)
    by_key, _ = engine.service.submit_by_key(
        engine.registry.add("other-bot", OWNER, by="test", now=T0),
        lambda agent_id: intent(agent_id, **fields),
        now=T0,
    )
    assert by_key.agent_id == "other-bot" and by_key == engine.service.get(by_key.id)


def test_denied_by_rule_and_by_default(engine: Engine, agent: AgentIdentity) -> None:
    snap, _ = engine.service.submit(agent, intent(agent, action="db.drop_database"), now=T0)
    assert snap.status is Status.DENIED and snap.rule == "never-drop-prod-db"
    assert "Dropping a production database is never automated" in snap.reasons
    nothing, _ = engine.service.submit(
        agent, intent(agent, action_class=ActionClass.DATA_EXPORT, environment="dev"), now=T0
    )
    assert nothing.status is Status.DENIED and nothing.rule is None
    with pytest.raises(IllegalTransition):
        engine.service.claim(snap.id, agent, now=T0)


def test_quorum_two_with_separation_of_duties(engine: Engine, agent: AgentIdentity) -> None:
    snap, _ = engine.service.submit(agent, intent(agent, on_behalf_of=SPONSOR), now=T0)
    assert snap.status is Status.PENDING and snap.terms.quorum == 2
    for refused, why in [
        (Approver("U0EVE", "eve@example.com"), "ineligible"),
        (Approver("U0BOB", SPONSOR), "sponsor"),
        (Approver("U0BOB", OWNER), "owner"),
    ]:
        with pytest.raises(NotEligible) as info:
            engine.service.vote(snap.id, refused, Vote.APPROVE, now=T0)
        assert info.value.why == why
    first = engine.service.vote(snap.id, ALICE, Vote.APPROVE, now=T0 + timedelta(seconds=1))
    assert first.counted and not first.changed and first.snapshot.status is Status.PENDING
    again = engine.service.vote(snap.id, ALICE, Vote.APPROVE, now=T0 + timedelta(seconds=2))
    assert not again.counted  # a double click counts once
    second = engine.service.vote(snap.id, BOB, Vote.APPROVE, now=T0 + timedelta(seconds=3))
    assert second.changed and second.snapshot.status is Status.APPROVED
    assert [v.email for v in second.snapshot.approvals] == ["alice@example.com", "bob@example.com"]
    with pytest.raises(NotEligible) as late:
        engine.service.vote(snap.id, CAROL, Vote.APPROVE, now=T0 + timedelta(seconds=4))
    assert late.value.why == "already_decided"
    _, issued = engine.service.claim(snap.id, agent, now=T0 + timedelta(seconds=5))
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert claims["approvers"] == ["alice@example.com", "bob@example.com"]
    assert claims["on_behalf_of"] == SPONSOR
    assert claims["exp"] - claims["iat"] == 600  # rule max_ttl 10m
    kinds = audit_kinds(engine, snap.id)
    assert kinds.count("click.refused") == 3 and kinds.count("decision.recorded") == 2
    assert "request.approved" in kinds
    assert verify(engine) == len(kinds) + 1  # plus agent.added


def test_deny_needs_a_reason_and_ends_it(engine: Engine, agent: AgentIdentity) -> None:
    snap, _ = engine.service.submit(agent, intent(agent), now=T0)
    with pytest.raises(ValidationFailed):
        engine.service.vote(snap.id, ALICE, Vote.DENY, now=T0, reason="  ")
    assert engine.service.get(snap.id).status is Status.PENDING
    result = engine.service.vote(snap.id, ALICE, Vote.DENY, now=T0, reason="not during the freeze")
    assert (
        result.snapshot.status is Status.DENIED
        and result.snapshot.status_reason == "not during the freeze"
    )


def test_step_up_requires_the_exact_target(engine: Engine, agent: AgentIdentity) -> None:
    snap, _ = engine.service.submit(agent, intent(agent, action_class=ActionClass.WRITE), now=T0)
    with pytest.raises(ValidationFailed):
        engine.service.vote(snap.id, ALICE, Vote.APPROVE, now=T0, confirmation="payments-API")
    with engine.db.read() as session:
        assert session.execute(select(func.count()).select_from(VoteRow)).scalar_one() == 0
    ok = engine.service.vote(snap.id, ALICE, Vote.APPROVE, now=T0, confirmation="payments-api")
    assert ok.snapshot.status is Status.APPROVED


def test_expiry_of_each_deadline(engine: Engine, agent: AgentIdentity) -> None:
    pending, _ = engine.service.submit(agent, intent(agent), now=T0)
    unclaimed, _ = engine.service.submit(
        agent, intent(agent, action_class=ActionClass.READ), now=T0
    )
    active, _ = engine.service.submit(agent, intent(agent, action_class=ActionClass.READ), now=T0)
    engine.service.claim(active.id, agent, now=T0)
    assert engine.service.expire_due(now=T0 + timedelta(minutes=4)) == []
    results = {
        r.request_id: r.status for r in engine.service.expire_due(now=T0 + timedelta(minutes=31))
    }
    assert results == {
        pending.id: Status.EXPIRED,
        unclaimed.id: Status.EXPIRED,
        active.id: Status.REVOKED,
    }
    assert engine.service.expire_due(now=T0 + timedelta(minutes=32)) == []  # idempotent
    with engine.db.read() as session:
        cred = session.execute(select(CredentialRow)).scalar_one()
    assert cred.revoked_at == T0 + timedelta(minutes=31) and cred.revoke_reason == "ttl elapsed"


def test_claim_after_window_refused_even_before_sweep(engine: Engine, agent: AgentIdentity) -> None:
    snap, _ = engine.service.submit(agent, intent(agent, action_class=ActionClass.READ), now=T0)
    with pytest.raises(IllegalTransition):
        engine.service.claim(snap.id, agent, now=T0 + timedelta(minutes=5))
    assert engine.service.get(snap.id).status is Status.APPROVED


def test_idempotency(engine: Engine, agent: AgentIdentity) -> None:
    body = intent(agent, action_class=ActionClass.READ)
    first, created = engine.service.submit(agent, body, now=T0, idempotency_key="k1")
    again, created_again = engine.service.submit(agent, body, now=T0, idempotency_key="k1")
    assert created and not created_again and again.id == first.id
    with pytest.raises(Conflict):
        engine.service.submit(
            agent,
            intent(agent, action_class=ActionClass.READ, parameters={"x": 1}),
            now=T0,
            idempotency_key="k1",
        )
    with engine.db.read() as session:
        assert session.execute(select(func.count()).select_from(RequestRow)).scalar_one() == 1


def test_other_agents_cannot_see_or_touch(engine: Engine, agent: AgentIdentity) -> None:
    engine.registry.add("other-bot", "x@example.com", by="test", now=T0)
    other = engine.registry.authenticate(
        engine.registry.add("third-bot", "y@example.com", by="test", now=T0)
    )
    snap, _ = engine.service.submit(agent, intent(agent, action_class=ActionClass.READ), now=T0)
    with pytest.raises(NotFound):
        engine.service.get(snap.id, agent_id=other.id)
    with pytest.raises(NotFound):
        engine.service.claim(snap.id, other, now=T0)


def test_revoke_and_cancel(engine: Engine, agent: AgentIdentity) -> None:
    a, _ = engine.service.submit(agent, intent(agent, action_class=ActionClass.READ), now=T0)
    _, issued = engine.service.claim(a.id, agent, now=T0)
    revoked = engine.service.revoke(
        a.id, by="alice@example.com", reason="suspicious", now=T0 + timedelta(seconds=5)
    )
    assert revoked.status is Status.REVOKED
    assert engine.service.introspect(issued.token, now=T0 + timedelta(seconds=6)) == {
        "active": False
    }
    b, _ = engine.service.submit(agent, intent(agent), now=T0)
    assert engine.service.cancel(b.id, agent, now=T0).status is Status.CANCELLED
    with pytest.raises(IllegalTransition):
        engine.service.cancel(b.id, agent, now=T0)


def test_disable_agent_revokes_live_credentials(engine: Engine, agent: AgentIdentity) -> None:
    key = engine.registry.add("batch-bot", OWNER, by="test", now=T0)
    batch = engine.registry.authenticate(key)
    snap, _ = engine.service.submit(batch, intent(batch, action_class=ActionClass.READ), now=T0)
    _, issued = engine.service.claim(snap.id, batch, now=T0)
    assert engine.registry.disable("batch-bot", by="admin", now=T0) == [snap.id]
    assert engine.service.get(snap.id).status is Status.REVOKED
    assert engine.service.introspect(issued.token, now=T0) == {"active": False}
    from core.errors import Unauthenticated

    with pytest.raises(Unauthenticated):
        engine.registry.authenticate(key)


def test_disabling_revokes_every_live_credential_even_if_one_ends_meanwhile(
    engine: Engine, agent: AgentIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that ends between the listing and its revocation must not stop the others
    from being revoked (the listing is taken, then each is revoked on its own)."""
    key = engine.registry.add("batch-bot", OWNER, by="test", now=T0)
    batch = engine.registry.authenticate(key)
    live = []
    for _ in range(3):
        snap, _ = engine.service.submit(batch, intent(batch, action_class=ActionClass.READ), now=T0)
        live.append((snap.id, engine.service.claim(snap.id, batch, now=T0)[1]))
    revoke = engine.service.revoke
    ended: list[str] = []

    def first_one_ends_meanwhile(request_id: str, **kwargs: object) -> object:
        if not ended:  # the agent completes it just before its revocation
            ended.append(request_id)
            engine.service.complete(request_id, batch, SessionOutcome.SUCCEEDED, "", now=T0)
        return revoke(request_id, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine.service, "revoke", first_one_ends_meanwhile)
    revoked = engine.registry.disable("batch-bot", by="admin", now=T0)
    assert len(ended) == 1 and sorted(revoked) == sorted(i for i, _ in live if i not in ended)
    for request_id, issued in live:
        assert engine.service.introspect(issued.token, now=T0) == {"active": False}
        expected = Status.COMPLETED if request_id in ended else Status.REVOKED
        assert engine.service.get(request_id).status is expected


def test_audit_detects_tampering_in_the_database(engine: Engine, agent: AgentIdentity) -> None:
    snap, _ = engine.service.submit(agent, intent(agent), now=T0)
    engine.service.vote(snap.id, ALICE, Vote.APPROVE, now=T0)
    total = verify(engine)
    with engine.db.write() as session:
        row = session.execute(
            select(AuditRow).where(AuditRow.kind == "decision.recorded")
        ).scalar_one()
        data = json.loads(row.data)
        header, payload, sig = data["signed_decision"].split(".")
        data["signed_decision"] = f"{header}.{payload}.{sig[:-4]}AAAA"
        bad_seq = row.seq
        session.execute(
            text("update audit_log set data = :d where seq = :s"),
            {"d": json.dumps(data), "s": bad_seq},
        )
    from core.errors import AuditChainBroken

    with pytest.raises(AuditChainBroken) as info:
        verify(engine)
    assert info.value.seq == bad_seq and total > bad_seq - 1


def test_issuer_url_and_jwks(engine: Engine, agent: AgentIdentity) -> None:
    snap, _ = engine.service.submit(agent, intent(agent, action_class=ActionClass.READ), now=T0)
    _, issued = engine.service.claim(snap.id, agent, now=T0)
    assert jwt.get_unverified_header(issued.token)["kid"] == engine.keyring.jwks()["keys"][0]["kid"]
    assert jwt.decode(issued.token, options={"verify_signature": False})["iss"] == ISSUER


RACE_POLICY = """\
version: 1
approver_groups:
  many:
    slack_users: [%s]
channels:
  approvals: C0APPROVALS
rules:
  - name: one-of-many
    match: {}
    decision: approve
    approvers: many
    quorum: 1
    channel: approvals
""".replace("%s", ", ".join(f"U{i:03d}" for i in range(20)))


@pytest.mark.postgres
def test_twenty_threads_racing_on_quorum_one(db: Database, tmp_path: Path) -> None:
    """20 different approvers click at once on PostgreSQL: exactly one transition."""
    if db.is_sqlite:
        pytest.skip("the race is the PostgreSQL case; SQLite serialises writers")
    engine = build_engine(db, tmp_path, RACE_POLICY)
    bot = engine.registry.authenticate(engine.registry.add("deploy-bot", OWNER, by="test", now=T0))
    snap, _ = engine.service.submit(bot, intent(bot), now=T0)
    barrier = threading.Barrier(20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def click(i: int) -> None:
        approver = Approver(f"U{i:03d}", f"user{i}@example.com")
        barrier.wait()
        try:
            result = engine.service.vote(
                snap.id, approver, Vote.APPROVE, now=T0 + timedelta(seconds=1)
            )
            label = "changed" if result.changed else "counted"
        except NotEligible as exc:
            label = exc.why
        except Conflict:
            label = "conflict"
        with lock:
            outcomes.append(label)

    threads = [threading.Thread(target=click, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == 20
    assert outcomes.count("changed") == 1
    assert outcomes.count("already_decided") + outcomes.count("conflict") == 19
    final = engine.service.get(snap.id)
    assert final.status is Status.APPROVED and len(final.votes) == 1
    with engine.db.read() as session:
        kinds = list(
            session.execute(select(AuditRow.kind).where(AuditRow.request_id == snap.id)).scalars()
        )
    assert kinds.count("request.approved") == 1 and kinds.count("decision.recorded") == 1
    assert verify(engine) == len(kinds) + 1  # plus agent.added
