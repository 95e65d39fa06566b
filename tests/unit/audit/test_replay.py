"""Replaying a request's entries, and comparing the result with a stored request (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.audit.chain import AuditEntry
from core.audit.crosscheck import StoredCredential, StoredRequest, StoredVote, compare
from core.audit.replay import replay
from core.canonical import canonical_json, parameters_digest
from core.decisions import DecisionRecord, sign_decision
from core.keys import KeyRing
from core.model import Status, Vote

T0 = datetime(2026, 3, 1, tzinfo=UTC)
RID = "req_1"
PARAMETERS = {"replicas": 3}
INTENT = {
    "agent": "deploy-bot",
    "action": "k8s.rollout_restart",
    "action_class": "destructive",
    "target": "payments-api",
    "environment": "production",
    "justification": "fix",
    "parameters_digest": parameters_digest(PARAMETERS),
    "requested_ttl_seconds": None,
    "data_volume_bytes": None,
    "on_behalf_of": None,
    "parent_request_id": None,
    "break_glass": False,
}
EXPIRES = T0 + timedelta(minutes=10)


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys")


class Log:
    """Entries of one request, as the service writes them (hashes are not the point here)."""

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    def add(self, kind: str, data: dict[str, Any], actor: str | None = None) -> None:
        seq = len(self.entries) + 1
        at = T0 + timedelta(seconds=seq)
        self.entries.append(AuditEntry(seq, at, kind, RID, actor, canonical_json(data), "", ""))


def decision(ring: KeyRing, who: str, vote: Vote = Vote.APPROVE) -> str:
    record = DecisionRecord(
        RID, INTENT["parameters_digest"], vote, f"U0{who.upper()}", f"{who}@x.test", T0, "r", None
    )
    return sign_decision(record, ring)


def lifecycle(ring: KeyRing, *, end: str) -> tuple[Log, list[str]]:
    """Submitted, approved by two, claimed, then ``end``: complete, revoke or expire."""
    log, signed = Log(), [decision(ring, "alice"), decision(ring, "bob")]
    log.add("intent.submitted", INTENT, "deploy-bot")
    log.add("policy.decided", {"status": "pending"}, "policy")
    for who, jws in zip(["alice", "bob"], signed, strict=True):
        log.add("decision.recorded", {"vote": "approve", "signed_decision": jws}, f"{who}@x.test")
    log.add("request.approved", {"approvers": ["alice@x.test", "bob@x.test"]})
    credential = {"jti": "j1", "expires_at": EXPIRES.isoformat(), "scope": "s", "aud": "a"}
    log.add("credential.issued", credential, "deploy-bot")
    if end in ("complete", "revoke", "expire"):
        log.add("credential.revoked", {"jti": "j1", "reason": end}, "x")
    if end == "complete":
        log.add("session.completed", {"outcome": "succeeded", "detail": ""}, "deploy-bot")
    return log, signed


def stored(signed: list[str], *, status: str, revoked: bool, **changes: Any) -> StoredRequest:
    votes = tuple(
        StoredVote(f"U0{who.upper()}", f"{who}@x.test", "approve", jws)
        for who, jws in zip(["alice", "bob"], signed, strict=False)
    )
    request = StoredRequest(
        id=RID,
        status=status,
        intent=dict(INTENT),
        parameters=canonical_json(PARAMETERS),
        credential_jti="j1",
        credential_expires_at=EXPIRES,
        reviewed_by=None,
        votes=votes,
        credentials=(StoredCredential("j1", "deploy-bot", "s", "a", EXPIRES, revoked),),
    )
    return replace(request, **changes)


@pytest.mark.parametrize(
    ("end", "status", "revoked"),
    [
        ("complete", Status.COMPLETED, True),
        ("revoke", Status.REVOKED, True),
        ("expire", Status.REVOKED, True),  # a credential whose TTL ran out: revoked
        ("none", Status.ACTIVE, False),
    ],
)
def test_a_lifecycle_replays_to_its_status(
    ring: KeyRing, end: str, status: Status, revoked: bool
) -> None:
    log, signed = lifecycle(ring, end=end)
    replayed = replay(RID, log.entries)
    assert replayed is not None
    assert (replayed.status, replayed.problems) == (status, [])
    assert replayed.credentials["j1"].revoked is revoked
    request = stored(signed, status=status.value, revoked=revoked)
    assert list(compare(replayed, request, ring)) == []


def test_an_event_the_lifecycle_forbids_is_named(ring: KeyRing) -> None:
    log, _ = lifecycle(ring, end="complete")
    log.add("request.approved", {"approvers": ["alice@x.test", "bob@x.test"]})
    replayed = replay(RID, log.entries)
    assert replayed is not None
    assert replayed.status is Status.COMPLETED
    assert replayed.problems == ["entry 9: request.approved while the request was completed"]


@pytest.mark.parametrize(
    ("approvers", "named"),
    [(["alice@x.test", "mallory@x.test"], "'mallory@x.test'"), ([], "nobody"), (None, "nobody")],
)
def test_an_approval_without_signed_approvals_is_named(
    ring: KeyRing, approvers: object, named: str
) -> None:
    """An entry added with the chain recomputed carries no signature: a request.approved
    must name people who each signed an approval before it."""
    log = Log()
    log.add("intent.submitted", INTENT, "deploy-bot")
    log.add("policy.decided", {"status": "pending"}, "policy")
    jws = decision(ring, "alice")
    log.add("decision.recorded", {"vote": "approve", "signed_decision": jws}, "Alice@x.test")
    log.add("request.approved", {"approvers": approvers})
    replayed = replay(RID, log.entries)
    assert replayed is not None and replayed.status is Status.APPROVED
    assert replayed.problems == [
        "entry 4: request.approved names no one, or someone without a signed approve in the "
        f"log ({named})"
    ]
    ok = Log()
    ok.entries = log.entries[:3]
    ok.add("request.approved", {"approvers": ["alice@x.test"]})  # its person id: lowercased
    assert replay(RID, ok.entries).problems == []  # type: ignore[union-attr]


def test_a_denial_needs_the_deniers_signed_denial(ring: KeyRing) -> None:
    log = Log()
    log.add("intent.submitted", INTENT, "deploy-bot")
    log.add("policy.decided", {"status": "pending"}, "policy")
    log.add("request.denied", {"reason": "no"}, "carol@x.test")
    replayed = replay(RID, log.entries)
    assert replayed is not None and replayed.status is Status.DENIED
    assert replayed.problems == [
        "entry 3: request.denied names no one, or someone without a signed deny in the log "
        "('carol@x.test')"
    ]


def test_no_policy_decision_leaves_no_status(ring: KeyRing) -> None:
    log = Log()
    log.add("intent.submitted", INTENT)
    replayed = replay(RID, log.entries)
    assert replayed is not None and replayed.status is None
    request = replace(stored([], status="pending", revoked=False), credential_jti=None)
    messages = [str(m) for m in compare(replayed, request, ring)]
    assert "request req_1: status is 'pending' in the database, the audit log says none" in (
        messages
    )


def test_each_stored_difference_is_one_message_naming_the_field(ring: KeyRing) -> None:
    log, signed = lifecycle(ring, end="none")
    replayed = replay(RID, log.entries)
    bob = StoredVote("U0BOB", "bob@x.test", "deny", signed[1])
    request = stored(
        signed,
        status="active",
        revoked=True,
        intent=INTENT | {"target": "payments-db"},
        votes=(stored(signed, status="", revoked=False).votes[0], bob),
        reviewed_by="sec@x.test",
    )
    assert [(m.field, m.detail) for m in compare(replayed, request, ring)] == [
        ("target", "target is 'payments-db' in the database, the audit log says 'payments-api'"),
        (
            "votes",
            "vote by 'bob@x.test' (entry 4): vote is 'deny' in the database, its signed "
            "decision says 'approve'",
        ),
        (
            "credentials",
            "credential 'j1' is revoked in the database, the audit log says not revoked",
        ),
        (
            "break_glass_reviewed_by",
            "break_glass_reviewed_by is 'sec@x.test' in the database, the audit log says none",
        ),
    ]


def test_a_vote_whose_signature_is_not_in_the_log_is_checked(ring: KeyRing, tmp_path: Path) -> None:
    log, signed = lifecycle(ring, end="none")
    forged = decision(KeyRing.load_or_create(tmp_path / "other"), "carol")
    carol = StoredVote("U0CAROL", "carol@x.test", "approve", forged)
    request = stored(signed, status="active", revoked=False)
    request = replace(request, votes=(*request.votes, carol))
    (mismatch,) = compare(replay(RID, log.entries), request, ring)
    assert mismatch.detail == (
        "vote by 'carol@x.test' ('approve') is in the database but not in the audit log; its "
        "signature does not verify"
    )


def test_values_are_shown_escaped_and_cut(ring: KeyRing) -> None:
    log, signed = lifecycle(ring, end="none")
    request = stored(
        signed, status="active", revoked=False, intent=INTENT | {"action": "\x1b[2J" + "a" * 200}
    )
    (mismatch,) = compare(replay(RID, log.entries), request, ring)
    assert mismatch.detail == (
        "action is '\\x1b[2J" + "a" * 76 + "'… in the database, the audit log says "
        "'k8s.rollout_restart'"
    )


def test_missing_on_either_side_is_named() -> None:
    log = Log()
    log.add("intent.submitted", INTENT)
    (orphan,) = compare(replay(RID, log.entries), None, None)
    assert (
        str(orphan) == "request req_1: in the audit log (first at entry 1) but not in the database"
    )
    request = stored([], status="pending", revoked=False)
    (unlogged,) = compare(None, request, None)
    assert str(unlogged) == "request req_1: in the database, but the audit log has no entry"
