"""Every use case through the one transition path, on the in-memory store."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from core.audit.events import AuditKind as K
from core.credentials import JwtIssuer
from core.errors import Conflict, IllegalTransition, NotEligible, ValidationFailed
from core.facts import Fact, FactKind
from core.lifecycle import Event
from core.model import ActionClass, Approver, SessionOutcome, Status, Vote
from core.usecases.transition import Step, changing
from tests.support import ISSUER, SPONSOR, intent
from tests.unit.usecases.conftest import AGENT, AGENT_KEY, T0, World, build_world

ALICE = Approver("U0ALICE", "alice@example.com", "Alice")
BOB = Approver("U0BOB", "bob@example.com", "Bob")
DAVE = Approver("U0DAVE", "dave@example.com", "Dave")


def pending(world: World, *, verified: bool = True, **extra: object) -> str:
    """A pending request whose sponsor is verified (named by the agent's workload token)
    unless ``verified`` is False (only stated by the agent)."""
    agent = replace(AGENT, sponsors=frozenset({SPONSOR} if verified else ()))
    snap, created = world.service.submit(
        agent, intent(AGENT, on_behalf_of=SPONSOR, **extra), now=T0
    )
    assert snap.sponsor_verified is verified
    assert created and snap.status is Status.PENDING
    return snap.id


def approved(world: World) -> str:
    request_id = pending(world)
    world.service.vote(request_id, ALICE, Vote.APPROVE, now=T0)
    world.service.vote(request_id, BOB, Vote.APPROVE, now=T0)
    return request_id


def facts(world: World, request_id: str) -> list[FactKind]:
    return [
        Fact.from_json(n.payload["fact"]).kind for n in world.notices(request_id, "thread.note")
    ]


def test_submit_records_audits_posts_the_card_and_publishes(world: World) -> None:
    request_id = pending(world)
    assert world.audit_kinds(request_id) == [K.INTENT_SUBMITTED, K.POLICY_DECIDED]
    assert [n.kind for n in world.notices(request_id)] == ["card.post"]
    assert [s.id for s in world.published] == [request_id]


def test_submit_by_key_refuses_an_unknown_key_and_writes_nothing(world: World) -> None:
    from core.errors import Unauthenticated

    with pytest.raises(Unauthenticated):
        world.service.submit_by_key("stpa_nope", lambda a: intent(a), now=T0)
    assert world.store.state.requests == {} and world.store.state.audit == []
    snap, _ = world.service.submit_by_key(AGENT_KEY, lambda a: intent(a), now=T0)
    assert snap.agent_id == AGENT.id


def test_quorum_counts_distinct_people_and_the_sponsor_hears_the_decision(world: World) -> None:
    request_id = pending(world)
    first = world.service.vote(request_id, DAVE, Vote.APPROVE, now=T0)  # a member by email
    assert (first.counted, first.changed, first.snapshot.status) == (True, False, Status.PENDING)
    # The same person from another Slack account counts once.
    again = world.service.vote(
        request_id, Approver("U0DAVE2", "DAVE@example.com"), Vote.APPROVE, now=T0
    )
    assert not again.counted and world.stored(request_id).version == 2
    second = world.service.vote(request_id, BOB, Vote.APPROVE, now=T0 + timedelta(seconds=5))
    assert second.changed and second.snapshot.status is Status.APPROVED
    assert second.snapshot.expires_at == T0 + timedelta(seconds=5, minutes=5)
    assert second.snapshot == world.stored(request_id)
    assert facts(world, request_id) == [FactKind.APPROVAL_COUNTED, FactKind.APPROVED]
    approved_entry = [e for e in world.store.state.audit if e.kind is K.REQUEST_APPROVED]
    assert approved_entry[0].data == {"approvers": ["bob@example.com", "dave@example.com"]}
    dms = world.notices(request_id, "direct")
    assert [n.payload["email"] for n in dms] == [SPONSOR]
    assert Fact.from_json(dms[0].payload["fact"]).kind is FactKind.APPROVED


def test_a_denial_needs_a_reason_and_a_refused_click_changes_nothing(world: World) -> None:
    request_id = pending(world)
    with pytest.raises(ValidationFailed):
        world.service.vote(request_id, ALICE, Vote.DENY, now=T0, reason="  ")
    outsider = Approver("U0EVE", "eve@example.com")
    with pytest.raises(NotEligible):
        world.service.vote(request_id, outsider, Vote.APPROVE, now=T0)
    assert world.stored(request_id).version == 1 and world.stored(request_id).votes == ()
    assert world.audit_kinds(request_id)[-1] is K.CLICK_REFUSED  # kept for review
    denied = world.service.vote(request_id, ALICE, Vote.DENY, now=T0, reason="not today")
    assert denied.snapshot.status is Status.DENIED
    assert denied.snapshot.status_reason == "not today" and denied.snapshot.expires_at is None
    assert world.audit_kinds(request_id)[-2:] == [K.DECISION_RECORDED, K.REQUEST_DENIED]


def test_claim_then_complete_revokes_the_credential_and_settles_the_builtin_jwt(
    world: World,
) -> None:
    """The built-in JWT's revocation is the list alone: recorded done, with its audit entry,
    in the complete's transaction; nothing is left for the revocation pass."""
    request_id = approved(world)
    claimed, issued = world.service.claim(request_id, AGENT, now=T0 + timedelta(minutes=1))
    assert claimed.status is Status.ACTIVE and claimed.credential is not None
    assert claimed.credential.jti == issued.handle and claimed == world.stored(request_id)
    assert world.service.introspect(issued.token, now=T0 + timedelta(minutes=2))["active"]
    done = world.service.complete(
        request_id, AGENT, SessionOutcome.SUCCEEDED, "ok", now=T0 + timedelta(minutes=3)
    )
    assert done.status is Status.COMPLETED and done == world.stored(request_id)
    assert done.credential is not None and done.credential.revoked_at is not None
    assert world.audit_kinds(request_id)[-4:] == [
        K.CREDENTIAL_ISSUED,
        K.CREDENTIAL_REVOKED,
        K.ISSUER_REVOKED,
        K.SESSION_COMPLETED,
    ]
    assert world.store.state.revocations[issued.handle]["status"] == "done"
    assert world.service.introspect(issued.token, now=T0 + timedelta(minutes=4)) == {
        "active": False
    }
    assert world.service.process_revocations(now=T0 + timedelta(minutes=4)) == 0


def test_an_issuer_that_overrides_revoke_is_still_called_by_the_pass(tmp_path: Path) -> None:
    """A subclass of the built-in issuer with work to do in ``revoke`` is not settled early."""
    calls: list[str] = []

    class Recording(JwtIssuer):
        def revoke(self, handle: str, now: datetime) -> None:
            calls.append(handle)

    world = build_world(tmp_path)
    world.service.parts.issuer = Recording(world.service.keyring, issuer_url=ISSUER)
    request_id = approved(world)
    _, issued = world.service.claim(request_id, AGENT, now=T0)
    world.service.complete(request_id, AGENT, SessionOutcome.SUCCEEDED, "", now=T0)
    assert world.store.state.revocations[issued.handle]["status"] == "pending"
    assert world.audit_kinds(request_id)[-1] is K.SESSION_COMPLETED
    assert world.service.process_revocations(now=T0 + timedelta(seconds=1)) == 1
    assert calls == [issued.handle]


@pytest.mark.parametrize("exit_by", ["complete", "revoke", "expire"])
def test_every_exit_from_active_revokes_the_credential(tmp_path: Path, exit_by: str) -> None:
    world = build_world(tmp_path)
    request_id = approved(world)
    _, issued = world.service.claim(request_id, AGENT, now=T0)
    if exit_by == "complete":
        world.service.complete(request_id, AGENT, SessionOutcome.FAILED, "", now=T0)
    elif exit_by == "revoke":
        world.service.revoke(request_id, by="admin", reason="incident", now=T0)
    else:
        assert world.service.expire_due(now=issued.expires_at)[0].status is Status.REVOKED
    assert world.store.state.credentials[issued.handle].revoked_at is not None
    assert world.audit_kinds(request_id).count(K.CREDENTIAL_REVOKED) == 1


def test_a_passed_deadline_refuses_a_claim_before_anything_is_minted(world: World) -> None:
    request_id = approved(world)
    before = (len(world.store.state.audit), len(world.store.state.credentials))
    with pytest.raises(IllegalTransition):
        world.service.claim(request_id, AGENT, now=T0 + timedelta(minutes=5))
    assert (len(world.store.state.audit), len(world.store.state.credentials)) == before
    assert world.stored(request_id).status is Status.APPROVED


def test_a_stale_snapshot_loses_the_compare_and_set_and_nothing_is_kept(world: World) -> None:
    request_id = pending(world)
    stale = world.stored(request_id)
    world.service.vote(request_id, ALICE, Vote.APPROVE, now=T0)
    published = len(world.published)
    with pytest.raises(Conflict), changing(world.service.parts, T0) as unit:
        unit.apply(Step(stale, Event.CANCEL, AGENT.id))
    assert world.stored(request_id).status is Status.PENDING
    assert world.audit_kinds(request_id).count(K.REQUEST_CANCELLED) == 0
    assert len(world.published) == published  # nothing published for a rolled-back change


def test_listeners_hear_each_change_after_it_is_stored(world: World) -> None:
    seen: list[Status] = []
    world.service.subscribe(lambda s: seen.append(world.stored(s.id).status))
    request_id = pending(world)
    world.service.cancel(request_id, AGENT, now=T0)
    assert seen == [Status.PENDING, Status.CANCELLED]


def test_a_broken_listener_does_not_undo_the_change(world: World) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("listener bug")

    world.service.subscribe(broken)
    request_id = pending(world)
    world.service.cancel(request_id, AGENT, now=T0)
    assert world.stored(request_id).status is Status.CANCELLED


def test_expiry_of_pending_and_approved_requests_tells_the_sponsor(world: World) -> None:
    waiting = pending(world)
    unclaimed = approved(world)
    results = world.service.expire_due(now=T0 + timedelta(hours=1))
    assert {(r.request_id, r.previous, r.status) for r in results} == {
        (waiting, Status.PENDING, Status.EXPIRED),
        (unclaimed, Status.APPROVED, Status.EXPIRED),
    }
    assert world.stored(waiting).status_reason == "approval deadline passed"
    assert world.stored(unclaimed).status_reason == "claim window passed"
    for request_id in (waiting, unclaimed):
        assert world.audit_kinds(request_id)[-1] is K.REQUEST_EXPIRED
        assert [n.payload["email"] for n in world.notices(request_id, "direct")][-1] == SPONSOR
    assert world.service.expire_due(now=T0 + timedelta(hours=2)) == []  # once


def test_break_glass_review_is_published_like_every_change(tmp_path: Path) -> None:
    policy = """\
version: 1
approver_groups:
  sre: { slack_users: [U0ALICE] }
channels: { approvals: C0APPROVALS }
rules:
  - name: glass
    match: { environment: production }
    decision: approve
    approvers: sre
    channel: approvals
    break_glass: true
"""
    world = build_world(tmp_path, policy)
    snap, _ = world.service.submit(AGENT, intent(AGENT, break_glass=True), now=T0)
    assert snap.status is Status.APPROVED
    assert [n.kind for n in world.notices(snap.id)] == ["alert.break_glass"]
    published = len(world.published)
    reviewed = world.service.review_break_glass(snap.id, ALICE, now=T0)
    assert reviewed.break_glass_reviewed_by == "alice@example.com"
    assert [s.id for s in world.published[published:]] == [snap.id]
    assert world.audit_kinds(snap.id)[-1] is K.BREAK_GLASS_REVIEWED
    with pytest.raises(Conflict):
        world.service.review_break_glass(snap.id, ALICE, now=T0)


def test_escalation_reminds_then_admits_the_secondary_group(tmp_path: Path) -> None:
    policy = """\
version: 1
approver_groups:
  sre: { slack_users: [U0ALICE, U0BOB] }
  oncall: { slack_users: [U0DAVE] }
channels: { approvals: C0APPROVALS }
rules:
  - name: prod
    match: { environment: production }
    decision: approve
    approvers: sre
    quorum: 2
    channel: approvals
    escalate_after: 10m
    escalate_to: oncall
"""
    world = build_world(tmp_path, policy)
    request_id = pending(world)
    world.service.vote(request_id, ALICE, Vote.APPROVE, now=T0)
    assert world.service.escalate_due(now=T0 + timedelta(minutes=5)) == [request_id]
    reminder = Fact.from_json(world.notices(request_id, "thread.note")[-1].payload["fact"])
    assert reminder.kind is FactKind.ESCALATION_REMINDER and reminder.data["missing"] == 1
    with pytest.raises(NotEligible):
        world.service.vote(request_id, DAVE, Vote.APPROVE, now=T0 + timedelta(minutes=6))
    assert world.service.escalate_due(now=T0 + timedelta(minutes=10)) == [request_id]
    assert world.notices(request_id, "card.post")[-1].payload["dm_users"] == ["U0DAVE"]
    result = world.service.vote(request_id, DAVE, Vote.APPROVE, now=T0 + timedelta(minutes=11))
    assert result.snapshot.status is Status.APPROVED
    assert world.audit_kinds(request_id).count(K.REQUEST_ESCALATED) == 2


def test_a_pre_authorised_read_needs_no_human(world: World) -> None:
    snap, _ = world.service.submit(AGENT, intent(AGENT, action_class=ActionClass.READ), now=T0)
    assert snap.status is Status.APPROVED and world.notices(snap.id) == []
    claimed, _ = world.service.claim(snap.id, AGENT, now=T0)
    assert claimed.status is Status.ACTIVE


def test_revoking_an_unclaimed_approval_is_audited(world: World) -> None:
    request_id = approved(world)
    world.service.revoke(request_id, by="admin@example.com", reason="wrong target", now=T0)
    entry = world.store.state.audit[-1]
    assert (entry.kind, entry.actor, entry.data) == (
        K.REQUEST_REVOKED,
        "admin@example.com",
        {"reason": "wrong target"},
    )
    assert world.stored(request_id).status is Status.REVOKED


def test_a_sponsor_only_the_agent_named_hears_the_outcome_alone(world: World) -> None:
    """Unverified, the sponsor gets no DM of the approval, only of how the request ended."""
    request_id = pending(world, verified=False)
    world.service.vote(request_id, ALICE, Vote.APPROVE, now=T0)
    world.service.vote(request_id, BOB, Vote.APPROVE, now=T0)
    assert world.stored(request_id).status is Status.APPROVED
    assert world.notices(request_id, "direct") == []
    world.service.revoke(request_id, by="admin", reason="not needed", now=T0)
    dms = world.notices(request_id, "direct")
    assert [Fact.from_json(n.payload["fact"]).kind for n in dms] == [FactKind.REVOKED]
    assert [n.payload["email"] for n in dms] == [SPONSOR]


def test_a_verified_sponsor_hears_the_approval(world: World) -> None:
    request_id = approved(world)
    dms = world.notices(request_id, "direct")
    assert [Fact.from_json(n.payload["fact"]).kind for n in dms] == [FactKind.APPROVED]
