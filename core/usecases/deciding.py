"""Approver decisions: eligibility, signed votes, quorum, what approvers see."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.audit.events import AuditLog
from core.decisions import DecisionRecord, sign_decision
from core.eligibility import check_eligible
from core.errors import NotEligible, ValidationFailed
from core.lifecycle import Event, check_deadline, next_status
from core.model import Approver, Status, Vote
from core.notices import Notices
from core.snapshots import RequestSnapshot
from core.storage import requests_repo as repo
from core.storage.audit_store import SqlAuditAppender
from core.storage.tables import VoteRow
from core.terms import Terms
from core.usecases.base import StepupBase, clock_text


@dataclass(frozen=True, slots=True)
class VoteResult:
    snapshot: RequestSnapshot
    counted: bool  # False when this person's click had already been counted
    changed: bool  # the request left ``pending`` because of this click


class Deciding(StepupBase):
    """vote, dashboard, card refresh on a stale click."""

    def vote(
        self,
        request_id: str,
        approver: Approver,
        vote: Vote,
        *,
        now: datetime,
        reason: str | None = None,
        confirmation: str | None = None,
        usergroup_members: dict[str, frozenset[str]] | None = None,
    ) -> VoteResult:
        """Record one approver's click. Ineligible clicks raise NotEligible and are audited."""
        try:
            with self.db.write() as session:
                result = self._vote(
                    session,
                    request_id,
                    approver,
                    vote,
                    now,
                    reason,
                    confirmation,
                    usergroup_members,
                )
        except NotEligible as refusal:
            if refusal.why in ("ineligible", "sponsor", "owner"):
                with self.db.write() as session:
                    AuditLog(SqlAuditAppender(session)).click_refused(
                        request_id, approver.email or approver.slack_user_id, refusal.why, now
                    )
            raise
        except IntegrityError:
            # The same person's concurrent click got there first: count it once.
            snap = self.get(request_id)
            return VoteResult(snap, counted=False, changed=False)
        if result.counted:
            self._changed(result.snapshot)
        return result

    def _vote(
        self,
        session: Session,
        request_id: str,
        approver: Approver,
        vote: Vote,
        now: datetime,
        reason: str | None,
        confirmation: str | None,
        usergroup_members: dict[str, frozenset[str]] | None,
    ) -> VoteResult:
        row = repo.load_row(session, request_id, lock=True)
        status = Status(row.status)
        if status is not Status.PENDING:
            raise NotEligible(f"this request is already {status.value}", why="already_decided")
        check_deadline(status, row.expires_at, now)
        terms = Terms.from_json(row.terms)
        check_eligible(
            approver,
            groups=self.eligible_groups(row, terms, now),
            sponsor_email=row.on_behalf_of,
            owner_email=row.owner_email,
            usergroup_members=usergroup_members,
        )
        if vote is Vote.DENY and not (reason and reason.strip()):
            raise ValidationFailed("a denial needs a reason")
        if vote is Vote.APPROVE and terms.step_up and confirmation != row.target:
            raise ValidationFailed(f"type the target's name exactly to approve: {row.target}")
        votes = repo.votes_for(session, row.id)
        email = (approver.email or "").lower()
        if any(
            v.approver_slack_id == approver.slack_user_id
            or (v.approver_email or "").lower() == email
            for v in votes
        ):
            return VoteResult(repo.snapshot(session, row), counted=False, changed=False)
        record = DecisionRecord(
            request_id=row.id,
            parameters_digest=row.parameters_digest,
            decision=vote,
            approver_slack_id=approver.slack_user_id,
            approver_email=approver.email,
            decided_at=now,
            rule=row.rule,
            reason=reason,
        )
        signed = sign_decision(record, self.keyring)
        session.add(
            VoteRow(
                request_id=row.id,
                approver_slack_id=approver.slack_user_id,
                approver_email=approver.email,
                approver_name=approver.name,
                vote=vote.value,
                reason=reason,
                created_at=now,
                signature=signed,
            )
        )
        session.flush()  # one vote per person: a racing duplicate fails here
        audit = AuditLog(SqlAuditAppender(session))
        who = approver.email or approver.slack_user_id
        audit.decision_recorded(row.id, who, vote.value, signed, now)
        changed = False
        if vote is Vote.DENY:
            repo.compare_and_set(
                session,
                row,
                now=now,
                status=next_status(status, Event.DENY).value,
                decided_at=now,
                expires_at=None,
                status_reason=reason,
            )
            audit.request_denied(row.id, who, reason or "", now)
            self._tell(session, row, terms, now, f"Denied by {who}: {reason}", sponsor=True)
            changed = True
        else:
            approvers = {
                (v.approver_email or v.approver_slack_id).lower()
                for v in votes
                if v.vote == Vote.APPROVE.value
            }
            approvers.add(who.lower())
            if len(approvers) >= terms.quorum:
                repo.compare_and_set(
                    session,
                    row,
                    now=now,
                    status=next_status(status, Event.APPROVE).value,
                    decided_at=now,
                    expires_at=now + timedelta(seconds=terms.claim_window_seconds),
                )
                audit.request_approved(row.id, sorted(approvers), now)
                self._tell(
                    session,
                    row,
                    terms,
                    now,
                    f"Approved by {', '.join(sorted(approvers))}; the agent may claim its "
                    f"credential until {clock_text(row.expires_at or now)}",
                    sponsor=True,
                )
                changed = True
            else:
                repo.compare_and_set(session, row, now=now)
                self._tell(
                    session, row, terms, now, f"{who} approved ({len(approvers)} of {terms.quorum})"
                )
        return VoteResult(repo.snapshot(session, row), counted=True, changed=changed)

    def request_card_refresh(self, request_id: str, *, now: datetime) -> None:
        """Queue a refresh of the request's card (a click on a stale card)."""
        with self.db.write() as session:
            row = repo.load_row(session, request_id)
            terms = Terms.from_json(row.terms)
            if terms.has_card:
                Notices(session, now).refresh_card(row.id)

    def dashboard(
        self,
        person: Approver,
        *,
        now: datetime,
        usergroup_members: dict[str, frozenset[str]] | None = None,
    ) -> tuple[list[RequestSnapshot], list[RequestSnapshot]]:
        """Pending requests this person may decide, and live credentials they approved."""
        pending: list[RequestSnapshot] = []
        with self.db.read() as session:
            for row in repo.list_rows(session, status=[Status.PENDING.value], limit=500):
                try:
                    check_eligible(
                        person,
                        groups=self.eligible_groups(row, Terms.from_json(row.terms), now),
                        sponsor_email=row.on_behalf_of,
                        owner_email=row.owner_email,
                        usergroup_members=usergroup_members,
                    )
                except NotEligible:
                    continue
                pending.append(repo.snapshot(session, row))
            active = [
                snap
                for snap in (
                    repo.snapshot(session, row)
                    for row in repo.list_rows(
                        session, status=[Status.APPROVED.value, Status.ACTIVE.value], limit=500
                    )
                )
                if any(v.slack_user_id == person.slack_user_id for v in snap.approvals)
            ]
        return pending, active
