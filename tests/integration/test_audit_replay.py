"""``stepup audit verify`` replays every request's audit entries and compares the result with
the stored request, on SQLite and PostgreSQL.

Each test makes one change behind the service's back with raw SQL — the hash chain is not
touched, so it still verifies — and checks that verify exits 1 naming the request and the
field. The first shows the attack is real: a pending request set to ``approved`` in the
database can be claimed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text, update

from core.audit.chain import entry_hash
from core.canonical import canonical_json, parameters_digest
from core.model import ActionClass, AgentIdentity, Approver, SessionOutcome, Status, Vote
from core.storage.audit_store import read_head
from core.storage.database import Database
from core.storage.tables import AuditHeadRow, AuditRow, CredentialRow, RequestRow, VoteRow
from tests.conftest import T0
from tests.integration import test_cli
from tests.integration.test_cli import Cli
from tests.support import OWNER, build_engine, intent

cli, cli_db = test_cli.cli, test_cli.cli_db  # the CLI's fixtures: STEPUP_* only, scratch cwd
ALICE = Approver("U0ALICE", "alice@example.com")
BOB = Approver("U0BOB", "bob@example.com")


@dataclass
class Requests:
    done: str  # approved by Alice and Bob, claimed, completed
    active: str  # approved by Alice and Bob, claimed: holds a live credential
    pending: str  # one vote (Alice's) of the two it needs
    allowed: str  # a read the policy allowed, never claimed


@pytest.fixture
def requests(cli_db: Cli, db: Database, tmp_path: Path) -> Requests:
    """Real traffic through the engine, with the keys the CLI is given."""
    engine = build_engine(db, tmp_path)
    svc = engine.service
    agent = engine.registry.authenticate(engine.registry.add("deploy-bot", OWNER, by="t", now=T0))
    at = T0

    def approved() -> str:
        nonlocal at
        snap, _ = svc.submit(agent, intent(agent), now=at)
        svc.vote(snap.id, ALICE, Vote.APPROVE, now=at + timedelta(seconds=1))
        svc.vote(snap.id, BOB, Vote.APPROVE, now=at + timedelta(seconds=2))
        svc.claim(snap.id, agent, now=at + timedelta(seconds=3))
        at += timedelta(minutes=1)
        return snap.id

    done = approved()
    svc.complete(done, agent, SessionOutcome.SUCCEEDED, "ok", now=at)
    active = approved()
    pending, _ = svc.submit(agent, intent(agent, parameters={"replicas": 5}), now=at)
    svc.vote(pending.id, ALICE, Vote.APPROVE, now=at + timedelta(seconds=1))
    read = intent(agent, action="db.query", action_class=ActionClass.READ)
    allowed, _ = svc.submit(agent, read, now=at + timedelta(seconds=2))
    clean = cli_db.invoke("audit", "verify")
    assert clean.code == 0, clean.stderr
    assert "requests: 4 compared with their audit entries, all match" in clean.stdout
    return Requests(done, active, pending.id, allowed.id)


def sql(db: Database, statement: str, **params: Any) -> None:
    """A change behind the service's back: no audit entry, the chain untouched."""
    with db.engine.begin() as conn:
        conn.execute(text(statement), params)


def verify_fails(cli: Cli) -> list[str]:
    """``audit verify`` exits 1; its error lines (without the ``error: `` prefix)."""
    out = cli.invoke("audit", "verify")
    assert out.code == 1, out.stdout
    assert "intact" not in out.stdout
    lines = [line.removeprefix("error: ") for line in out.stderr.splitlines()]
    assert "the database does not match its audit log" in lines[-1]
    assert "the chain itself verifies" in lines[-1]
    return lines[:-1]


def test_a_request_approved_in_the_database_is_named(
    cli_db: Cli, db: Database, tmp_path: Path, requests: Requests
) -> None:
    sql(db, "UPDATE requests SET status = 'approved' WHERE id = :id", id=requests.pending)
    assert verify_fails(cli_db) == [
        f"request {requests.pending}: status is 'approved' in the database, "
        "the audit log says 'pending'"
    ]
    # The attack is real: the service hands out a credential only one person approved.
    engine = build_engine(db, tmp_path)
    claimed, _ = engine.service.claim(
        requests.pending, AgentIdentity("deploy-bot", OWNER), now=T0 + timedelta(minutes=3)
    )
    assert claimed.status is Status.ACTIVE
    lines = verify_fails(cli_db)
    assert lines[0].startswith(
        f"request {requests.pending}: the audit log is not a valid lifecycle: entry "
    )
    assert lines[0].endswith("credential.issued while the request was pending")
    assert lines[1] == (
        f"request {requests.pending}: status is 'active' in the database, "
        "the audit log says 'pending'"
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            "UPDATE votes SET vote = 'deny' WHERE request_id = :done AND approver_slack_id = 'U0BOB'",
            "vote by 'bob@example.com' (entry {bob_entry}): vote is 'deny' in the database, "
            "its signed decision says 'approve'",
            id="vote-changed",
        ),
        pytest.param(
            "DELETE FROM votes WHERE request_id = :pending",
            "vote by 'alice@example.com' ('approve', entry {alice_pending_entry}) is in the "
            "audit log but not in the database",
            id="vote-deleted",
        ),
        pytest.param(
            "UPDATE votes SET approver_email = 'mallory@example.com' "
            "WHERE request_id = :done AND approver_slack_id = 'U0BOB'",
            "vote by 'bob@example.com' (entry {bob_entry}): approver_email is "
            "'mallory@example.com' in the database, its signed decision says 'bob@example.com'",
            id="vote-reattributed",
        ),
    ],
)
def test_a_vote_changed_in_the_database_is_named(
    cli_db: Cli, db: Database, requests: Requests, change: str, expected: str
) -> None:
    entries = decision_entries(db)
    sql(db, change, done=requests.done, pending=requests.pending)
    message = expected.format(
        bob_entry=entries[(requests.done, "bob@example.com")],
        alice_pending_entry=entries[(requests.pending, "alice@example.com")],
    )
    request = requests.pending if "DELETE" in change else requests.done
    assert verify_fails(cli_db) == [f"request {request}: {message}"]


def test_a_forged_vote_that_reaches_the_quorum_is_named(
    cli_db: Cli, db: Database, requests: Requests
) -> None:
    """The second approval the pending request lacks, inserted with a real signature copied
    from another request's vote, and the request set to approved: both are named."""
    with db.read() as session:
        bob = session.execute(
            select(VoteRow).where(
                VoteRow.request_id == requests.done, VoteRow.approver_slack_id == "U0BOB"
            )
        ).scalar_one()
    sql(
        db,
        "INSERT INTO votes (request_id, approver_slack_id, approver_email, approver_name, vote, "
        "reason, created_at, signature) VALUES (:r, 'U0BOB', 'bob@example.com', 'Bob', "
        "'approve', NULL, :at, :sig)",
        r=requests.pending,
        at=T0 + timedelta(hours=1),
        sig=bob.signature,
    )
    sql(db, "UPDATE requests SET status = 'approved' WHERE id = :id", id=requests.pending)
    assert verify_fails(cli_db) == [
        f"request {requests.pending}: status is 'approved' in the database, "
        "the audit log says 'pending'",
        f"request {requests.pending}: vote by 'bob@example.com' ('approve') is in the database "
        f"but not in the audit log; its signed decision is for request '{requests.done}'",
    ]


def test_a_credential_revived_in_the_database_is_named(
    cli_db: Cli, db: Database, requests: Requests
) -> None:
    jti = credential_jti(db, requests.done)
    sql(db, "UPDATE credentials SET revoked_at = NULL, revoke_reason = NULL WHERE jti = :j", j=jti)
    assert verify_fails(cli_db) == [
        f"request {requests.done}: credential '{jti}' is not revoked in the database, "
        "the audit log says revoked"
    ]


def test_a_credential_revoked_in_the_database_is_named(
    cli_db: Cli, db: Database, requests: Requests
) -> None:
    """Cutting a credential off behind the service's back is a difference too."""
    jti = credential_jti(db, requests.active)
    sql(db, "UPDATE credentials SET revoked_at = expires_at WHERE jti = :j", j=jti)
    assert verify_fails(cli_db) == [
        f"request {requests.active}: credential '{jti}' is revoked in the database, "
        "the audit log says not revoked"
    ]


def test_a_credential_extended_in_the_database_is_named(
    cli_db: Cli, db: Database, requests: Requests
) -> None:
    jti = credential_jti(db, requests.active)
    with db.read() as session:
        logged = session.execute(
            select(CredentialRow.expires_at).where(CredentialRow.jti == jti)
        ).scalar_one()
    later = logged + timedelta(days=1)
    with db.engine.begin() as conn:  # through the column types: each backend's time format
        conn.execute(update(CredentialRow).where(CredentialRow.jti == jti).values(expires_at=later))
        conn.execute(
            update(RequestRow)
            .where(RequestRow.id == requests.active)
            .values(credential_expires_at=later)
        )
    assert verify_fails(cli_db) == [
        f"request {requests.active}: credential_expires_at is {later.isoformat()} in the "
        f"database, the audit log says {logged.isoformat()}",
        f"request {requests.active}: credential '{jti}': expires_at is {later.isoformat()} in "
        f"the database, the audit log says {logged.isoformat()}",
    ]


def test_a_credential_swapped_in_the_database_is_named(
    cli_db: Cli, db: Database, requests: Requests
) -> None:
    """The active request pointed at the completed one's credential."""
    other = credential_jti(db, requests.done)
    mine = credential_jti(db, requests.active)
    sql(db, "UPDATE requests SET credential_jti = :j WHERE id = :id", j=other, id=requests.active)
    assert verify_fails(cli_db) == [
        f"request {requests.active}: credential_jti is '{other}' in the database, "
        f"the audit log says '{mine}'"
    ]


@pytest.mark.parametrize(
    ("column", "value", "logged"),
    [
        ("target", "payments-db", "payments-api"),
        ("environment", "staging", "production"),
        ("action", "k8s.delete_namespace", "k8s.rollout_restart"),
        ("agent_id", "ops-bot", "deploy-bot"),
    ],
)
def test_a_bound_field_changed_in_the_database_is_named(
    cli_db: Cli, db: Database, requests: Requests, column: str, value: str, logged: str
) -> None:
    """What the credential is bound to: the approvers saw and approved the logged value."""
    sql(db, f"UPDATE requests SET {column} = :v WHERE id = :id", v=value, id=requests.active)
    field = "agent" if column == "agent_id" else column
    expected = [
        f"request {requests.active}: {field} is '{value}' in the database, "
        f"the audit log says '{logged}'"
    ]
    assert verify_fails(cli_db) == expected


def test_a_parameters_digest_changed_in_the_database_is_named(
    cli_db: Cli, db: Database, requests: Requests
) -> None:
    """Both the parameters and their digest rewritten: the digest is compared with the log."""
    forged = {"replicas": 0, "drop": True}
    with db.read() as session:
        logged = json.loads(
            session.execute(
                select(AuditRow.data).where(
                    AuditRow.request_id == requests.pending, AuditRow.kind == "intent.submitted"
                )
            ).scalar_one()
        )["parameters_digest"]
    sql(
        db,
        "UPDATE requests SET parameters = :p, parameters_digest = :d WHERE id = :id",
        p=canonical_json(forged),
        d=parameters_digest(forged),
        id=requests.pending,
    )
    assert verify_fails(cli_db) == [
        f"request {requests.pending}: parameters_digest is '{parameters_digest(forged)}' in "
        f"the database, the audit log says '{logged}'"
    ]


def test_parameters_that_no_longer_match_their_digest_are_named(
    cli_db: Cli, db: Database, requests: Requests
) -> None:
    sql(
        db,
        "UPDATE requests SET parameters = :p WHERE id = :id",
        p=canonical_json({"replicas": 500}),
        id=requests.pending,
    )
    (line,) = verify_fails(cli_db)
    assert line.startswith(
        f"request {requests.pending}: parameters in the database do not hash to its "
        "parameters_digest 'sha256:"
    )


def test_a_request_without_entries_and_entries_without_a_request_are_named(
    cli_db: Cli, db: Database, requests: Requests
) -> None:
    with db.read() as session:
        first = session.execute(
            select(AuditRow.seq)
            .where(AuditRow.request_id == requests.allowed)
            .order_by(AuditRow.seq)
            .limit(1)
        ).scalar_one()
    # A request copied into a new row with no entry; the allowed read deleted.
    columns = (
        "agent_id, owner_email, status, version, action, action_class, target, "
        "environment, justification, parameters, parameters_digest, requested_ttl_seconds, "
        "data_volume_bytes, on_behalf_of, parent_request_id, break_glass, rule, tier, reasons, "
        "policy_digest, terms, created_at, updated_at, expires_at, decided_at, escalation_stage"
    )
    sql(
        db,
        f"INSERT INTO requests (id, {columns}) SELECT 'req_planted', {columns} FROM requests "
        "WHERE id = :id",
        id=requests.allowed,
    )
    sql(db, "DELETE FROM requests WHERE id = :id", id=requests.allowed)
    assert verify_fails(cli_db) == [
        "request req_planted: in the database, but the audit log has no entry",
        f"request {requests.allowed}: in the audit log (first at entry {first}) but not in "
        "the database",
    ]


def test_every_difference_is_listed_and_a_process_exits_1(
    cli_db: Cli, db: Database, requests: Requests
) -> None:
    """Several changes at once, through the installed command: each is named."""
    sql(db, "UPDATE requests SET status = 'approved' WHERE id = :id", id=requests.pending)
    sql(db, "UPDATE requests SET target = 'x' WHERE id = :id", id=requests.active)
    out = cli_db.run("audit", "verify")
    assert out.code == 1
    assert f"error: request {requests.pending}: status is 'approved'" in out.stderr
    assert f"error: request {requests.active}: target is 'x' in the database" in out.stderr
    assert "the database does not match its audit log: 2 differences" in out.stderr


def decision_entries(db: Database) -> dict[tuple[str, str], int]:
    with db.read() as session:
        rows = session.execute(
            select(AuditRow.request_id, AuditRow.actor, AuditRow.seq).where(
                AuditRow.kind == "decision.recorded"
            )
        ).all()
    return {(str(r), str(a)): s for r, a, s in rows}


def credential_jti(db: Database, request_id: str) -> str:
    with db.read() as session:
        return str(
            session.execute(
                select(CredentialRow.jti).where(CredentialRow.request_id == request_id)
            ).scalar_one()
        )


def test_an_approval_appended_to_the_log_without_signatures_is_named(
    cli_db: Cli, db: Database, requests: Requests
) -> None:
    """The careful attacker: the request set to approved *and* a well-formed request.approved
    entry chained onto the head (the chain has no secret). The log and the row agree; the
    approval names someone who never signed one."""
    with db.read() as session:
        seq, head = read_head(session)
    at = T0 + timedelta(hours=1)
    fields = {
        "seq": seq + 1,
        "at": at,
        "kind": "request.approved",
        "request_id": requests.pending,
        "actor": None,
        "data": canonical_json({"approvers": ["alice@example.com", "bob@example.com"]}),
        "prev_hash": head,
    }
    forged = entry_hash(**fields)  # type: ignore[arg-type]
    with db.engine.begin() as conn:
        conn.execute(insert(AuditRow).values(**fields, hash=forged))
        conn.execute(update(AuditHeadRow).values(seq=seq + 1, hash=forged))
        conn.execute(
            update(RequestRow).where(RequestRow.id == requests.pending).values(status="approved")
        )
    assert verify_fails(cli_db) == [
        f"request {requests.pending}: the audit log is not a valid lifecycle: entry {seq + 1}: "
        "request.approved names no one, or someone without a signed approve in the log "
        "('bob@example.com')"
    ]


def test_weakened_terms_are_named_and_the_approval_they_allowed_is_refused(
    cli_db: Cli, db: Database, tmp_path: Path, requests: Requests
) -> None:
    """The service holds a request to its stored terms (quorum, approvers, TTL): an insider
    who lowers the quorum to one and raises the TTL gets a one-person approval and a day-long
    credential — each named, because the policy decision logged the terms."""
    engine = build_engine(db, tmp_path)
    agent = AgentIdentity("deploy-bot", OWNER)
    now = T0 + timedelta(minutes=5)
    snap, _ = engine.service.submit(agent, intent(agent, parameters={"n": 1}), now=now)
    terms = json.loads(snap.terms.to_json())
    assert (terms["quorum"], terms["max_ttl_seconds"]) == (2, 600)
    weak = canonical_json(terms | {"quorum": 1, "max_ttl_seconds": 86_400})
    sql(db, "UPDATE requests SET terms = :t WHERE id = :id", t=weak, id=snap.id)
    (line,) = verify_fails(cli_db)
    assert line.startswith(f"request {snap.id}: terms is ")
    assert "'quorum': 1" in line.split("the audit log says")[0]
    assert "'quorum': 2" in line.split("the audit log says")[1]

    # The attack is real: Alice alone approves, and the credential lives a day.
    approved = engine.service.vote(snap.id, ALICE, Vote.APPROVE, now=now + timedelta(seconds=1))
    assert engine.service.get(snap.id).status is Status.APPROVED, approved
    _, issued = engine.service.claim(snap.id, agent, now=now + timedelta(seconds=2))
    assert issued.expires_at - now > timedelta(hours=23)
    found = "\n".join(verify_fails(cli_db))
    assert f"request {snap.id}: terms is " in found
    assert "approved by 1 of the 2 people the logged policy decision requires" in found
    assert "a credential living past the 600 s the logged policy decision allows" in found


def test_a_rule_or_tier_edited_in_the_database_is_named(
    cli_db: Cli, db: Database, requests: Requests
) -> None:
    sql(
        db,
        "UPDATE requests SET rule = 'reads', tier = 'low' WHERE id = :id",
        id=requests.active,
    )
    lines = verify_fails(cli_db)
    assert any(line.startswith(f"request {requests.active}: rule is 'reads'") for line in lines)
    assert any(line.startswith(f"request {requests.active}: tier is 'low'") for line in lines)
