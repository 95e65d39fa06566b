"""Approver decisions: eligibility, signed votes, quorum."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.approvals import check_eligible, eligible_groups, has_voted, tally
from core.decisions import DecisionRecord, sign_decision
from core.errors import DuplicateVote, NotEligible, ValidationFailed
from core.facts import Fact, FactKind
from core.lifecycle import Event, check_deadline
from core.model import Approver, Status, Vote
from core.snapshots import RequestSnapshot, VoteInfo
from core.store import NewVote
from core.usecases.parts import Parts
from core.usecases.transition import Step, UnitOfWork, changing

# Refusals that are kept in the audit log for review (the digest counts them).
_AUDITED_REFUSALS = frozenset({"ineligible", "sponsor", "owner"})


@dataclass(frozen=True, slots=True)
class VoteResult:
    snapshot: RequestSnapshot
    counted: bool  # False when this person's click had already been counted
    changed: bool  # the request left ``pending`` because of this click


class Deciding:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def vote(
        self,
        request_id: str,
        approver: Approver,
        vote: Vote,
        *,
        now: datetime,
        reason: str | None = None,
        confirmation: str | None = None,
        usergroup_members: Mapping[str, frozenset[str]] | None = None,
    ) -> VoteResult:
        """Record one approver's click. Ineligible clicks raise NotEligible and are audited."""
        try:
            with changing(self.parts, now) as unit:
                return self._vote(
                    unit, request_id, approver, vote, reason, confirmation, usergroup_members
                )
        except NotEligible as refusal:
            if refusal.why in _AUDITED_REFUSALS:
                with self.parts.store.write() as tx:
                    tx.audit.click_refused(
                        request_id, approver.email or approver.slack_user_id, refusal.why, now
                    )
            raise
        except DuplicateVote:
            # The same person's concurrent click got there first: count it once.
            with self.parts.store.read() as tx:
                return VoteResult(tx.load(request_id), counted=False, changed=False)

    def _vote(
        self,
        unit: UnitOfWork,
        request_id: str,
        approver: Approver,
        vote: Vote,
        reason: str | None,
        confirmation: str | None,
        usergroup_members: Mapping[str, frozenset[str]] | None,
    ) -> VoteResult:
        now = unit.now
        snap = unit.load(request_id)
        if snap.status is not Status.PENDING:
            raise NotEligible(f"this request is already {snap.status.value}", why="already_decided")
        check_deadline(snap.status, snap.expires_at, now)
        check_eligible(
            approver,
            groups=eligible_groups(
                snap.terms, snap.created_at, self.parts.policy.current.groups, now
            ),
            sponsor_email=snap.on_behalf_of,
            owner_email=snap.owner_email,
            usergroup_members=usergroup_members,
        )
        if vote is Vote.DENY and not (reason and reason.strip()):
            raise ValidationFailed("a denial needs a reason")
        if vote is Vote.APPROVE and snap.terms.step_up and confirmation != snap.target:
            raise ValidationFailed(f"type the target's name exactly to approve: {snap.target}")
        if has_voted(snap.votes, approver):
            return VoteResult(snap, counted=False, changed=False)
        info = VoteInfo(
            approver.slack_user_id, approver.email, approver.name, vote.value, reason, now
        )
        signed = sign_decision(
            DecisionRecord(
                request_id=snap.id,
                parameters_digest=snap.parameters_digest,
                decision=vote,
                approver_slack_id=approver.slack_user_id,
                approver_email=approver.email,
                decided_at=now,
                rule=snap.rule,
                reason=reason,
            ),
            self.parts.keyring,
        )
        unit.tx.add_vote(snap.id, NewVote(info, signed))
        who = approver.email or approver.slack_user_id
        unit.audit.decision_recorded(snap.id, who, vote.value, signed, now)
        voted = dataclasses.replace(snap, votes=(*snap.votes, info))
        if vote is Vote.DENY:
            step = Step(
                voted,
                Event.DENY,
                who,
                {"decided_at": now, "expires_at": None, "status_reason": reason},
                reason=reason,
            )
        else:
            count = tally(voted.votes, snap.terms.quorum)
            if count.reached:
                step = Step(
                    voted,
                    Event.APPROVE,
                    who,
                    {
                        "decided_at": now,
                        "expires_at": now + timedelta(seconds=snap.terms.claim_window_seconds),
                    },
                    detail={
                        "approvers": list(count.approvers),
                        "claim_until": (
                            now + timedelta(seconds=snap.terms.claim_window_seconds)
                        ).isoformat(),
                    },
                )
            else:
                step = Step(
                    voted,
                    None,
                    who,
                    fact=Fact(
                        FactKind.APPROVAL_COUNTED,
                        snap.id,
                        now,
                        who,
                        {"received": count.received, "required": count.required},
                    ),
                )
        (after,) = unit.apply(step)
        return VoteResult(after, counted=True, changed=step.event is not None)

    def request_card_refresh(self, request_id: str, *, now: datetime) -> None:
        """Queue a refresh of the request's card (a click on a stale card)."""
        with changing(self.parts, now) as unit:
            snap = unit.tx.load(request_id)
            if snap.terms.has_card:
                unit.notices.refresh_card(snap.id)
