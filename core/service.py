"""The use cases: submit, vote, claim, complete, cancel, revoke, expire, introspect.

Each runs in one write transaction: load (locked), decide with the pure lifecycle, apply with a
compare-and-set, write the audit entries of what changed. Time is always passed in.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.audit.events import AuditLog
from core.canonical import canonical_json, parameters_digest
from core.credentials import (
    CredentialGrant,
    CredentialIssuer,
    IssuedCredential,
    introspection_response,
    verify_credential,
)
from core.decisions import DecisionRecord, sign_decision
from core.eligibility import GroupMembers, check_eligible
from core.errors import Conflict, IllegalTransition, InvalidToken, NotEligible, ValidationFailed
from core.keys import KeyRing
from core.lifecycle import Event, check_deadline, next_status
from core.model import Approver, Intent, Outcome, SessionOutcome, Status, Vote
from core.notices import Notices
from core.policy import PolicyDecision, PolicyHolder
from core.records import RequestSnapshot, Terms
from core.storage import requests_repo as repo
from core.storage.agents_repo import AgentIdentity
from core.storage.audit_store import SqlAuditAppender
from core.storage.database import Database
from core.storage.tables import CredentialRow, RequestRow, VoteRow

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VoteResult:
    snapshot: RequestSnapshot
    counted: bool  # False when this person's click had already been counted
    changed: bool  # the request left ``pending`` because of this click


@dataclass(frozen=True, slots=True)
class ExpiryResult:
    request_id: str
    previous: Status
    status: Status


ChangeListener = Callable[[RequestSnapshot], None]
"""Called after a commit that changed a request (long-polls, Slack cards). Must not raise."""


def _hhmm(at: datetime) -> str:
    return at.strftime("%H:%M:%S UTC")


def terms_from(decision: PolicyDecision) -> Terms:
    return Terms(
        approver_groups=decision.approver_groups,
        quorum=decision.quorum,
        channel=decision.channel,
        notify_dm=decision.notify_dm,
        max_ttl_seconds=int(decision.max_ttl.total_seconds()),
        approval_timeout_seconds=int(decision.approval_timeout.total_seconds()),
        claim_window_seconds=int(decision.claim_window.total_seconds()),
        step_up=decision.step_up,
        break_glass=decision.break_glass,
        escalate_after_seconds=int(decision.escalate_after.total_seconds())
        if decision.escalate_after
        else None,
        escalate_to=decision.escalate_to,
    )


def intent_record(intent: Intent) -> dict[str, Any]:
    return {
        "agent": intent.agent,
        "action": intent.action,
        "action_class": intent.action_class.value,
        "target": intent.target,
        "environment": intent.environment,
        "justification": intent.justification,
        "parameters_digest": parameters_digest(intent.parameters),
        "requested_ttl_seconds": intent.requested_ttl_seconds,
        "data_volume_bytes": intent.data_volume_bytes,
        "on_behalf_of": intent.on_behalf_of,
        "parent_request_id": intent.parent_request_id,
        "break_glass": intent.break_glass,
    }


class Stepup:
    def __init__(
        self,
        db: Database,
        policy: PolicyHolder,
        keyring: KeyRing,
        issuer: CredentialIssuer,
        *,
        issuer_url: str,
    ) -> None:
        self.db = db
        self.policy = policy
        self.keyring = keyring
        self.issuer = issuer
        self.issuer_url = issuer_url
        self._listeners: list[ChangeListener] = []

    def subscribe(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def _changed(self, snapshot: RequestSnapshot) -> RequestSnapshot:
        for listener in self._listeners:
            try:
                listener(snapshot)
            except Exception:  # a broken listener must not undo a committed change
                logger.exception("change listener failed for %s", snapshot.id)
        return snapshot

    # -- reading ---------------------------------------------------------------------------

    def get(self, request_id: str, *, agent_id: str | None = None) -> RequestSnapshot:
        with self.db.read() as session:
            return repo.snapshot(session, repo.load_row(session, request_id, agent_id=agent_id))

    def list_requests(
        self, *, status: list[str] | None = None, agent_id: str | None = None, limit: int = 100
    ) -> list[RequestSnapshot]:
        with self.db.read() as session:
            return [
                repo.snapshot(session, row)
                for row in repo.list_rows(session, status=status, agent_id=agent_id, limit=limit)
            ]

    # -- submit ----------------------------------------------------------------------------

    def submit(
        self,
        agent: AgentIdentity,
        intent: Intent,
        *,
        now: datetime,
        idempotency_key: str | None = None,
    ) -> tuple[RequestSnapshot, bool]:
        """Evaluate and record a request. Returns (request, created)."""
        if intent.agent != agent.id:
            raise ValidationFailed("the agent is taken from its key, not from the body")
        body_digest = parameters_digest(intent_record(intent) | {"parameters": intent.parameters})
        if idempotency_key is not None:
            existing = self._replay(agent.id, idempotency_key, body_digest)
            if existing is not None:
                return existing, False
        decision = self.policy.current.evaluate(intent, now)
        try:
            with self.db.write() as session:
                if intent.parent_request_id is not None:
                    repo.load_row(session, intent.parent_request_id, agent_id=agent.id)
                row = self._new_row(agent, intent, decision, now, idempotency_key, body_digest)
                session.add(row)
                session.flush()  # the idempotency key's unique constraint fires here
                audit = AuditLog(SqlAuditAppender(session))
                audit.intent_submitted(row.id, agent.id, intent_record(intent), now)
                audit.policy_decided(
                    row.id,
                    {
                        "outcome": decision.outcome.value,
                        "status": row.status,
                        "rule": decision.rule,
                        "tier": decision.tier.value,
                        "reasons": list(decision.reasons),
                        "policy_digest": decision.policy_digest,
                    },
                    now,
                )
                if decision.break_glass and decision.outcome is Outcome.ALLOW:
                    audit.break_glass_used(row.id, agent.id, decision.rule, now)
                if row.status == Status.PENDING.value and decision.channel is not None:
                    Notices(session, now).post_card(
                        row.id, decision.channel, self._dm_targets(decision)
                    )
                created = repo.snapshot(session, row)
        except IntegrityError:
            # Two submissions with one idempotency key raced; the other one won.
            if idempotency_key is None:
                raise
            existing = self._replay(agent.id, idempotency_key, body_digest)
            if existing is None:
                raise
            return existing, False
        return self._changed(created), True

    def _replay(self, agent_id: str, key: str, body_digest: str) -> RequestSnapshot | None:
        with self.db.read() as session:
            row = repo.find_by_idempotency_key(session, agent_id, key)
            if row is None:
                return None
            if row.body_digest != body_digest:
                raise Conflict("this Idempotency-Key was already used with a different body")
            return repo.snapshot(session, row)

    @staticmethod
    def _new_row(
        agent: AgentIdentity,
        intent: Intent,
        decision: PolicyDecision,
        now: datetime,
        idempotency_key: str | None,
        body_digest: str,
    ) -> RequestRow:
        if decision.outcome is Outcome.DENY:
            status, expires_at, decided_at = Status.DENIED, None, now
        elif decision.outcome is Outcome.ALLOW:
            status, expires_at, decided_at = Status.APPROVED, now + decision.claim_window, now
        else:
            status, expires_at, decided_at = Status.PENDING, now + decision.approval_timeout, None
        return RequestRow(
            id="req_" + uuid.uuid4().hex,
            agent_id=agent.id,
            owner_email=agent.owner_email,
            status=status.value,
            version=1,
            action=intent.action,
            action_class=intent.action_class.value,
            target=intent.target,
            environment=intent.environment,
            justification=intent.justification,
            parameters=canonical_json(intent.parameters),
            parameters_digest=parameters_digest(intent.parameters),
            requested_ttl_seconds=intent.requested_ttl_seconds,
            data_volume_bytes=intent.data_volume_bytes,
            on_behalf_of=intent.on_behalf_of,
            parent_request_id=intent.parent_request_id,
            break_glass=intent.break_glass,
            rule=decision.rule,
            tier=decision.tier.value,
            reasons=json.dumps(list(decision.reasons)),
            policy_digest=decision.policy_digest,
            terms=terms_from(decision).to_json(),
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
            decided_at=decided_at,
            idempotency_key=idempotency_key,
            body_digest=body_digest,
        )

    # -- approver clicks -------------------------------------------------------------------

    def eligible_groups(self, row: RequestRow, terms: Terms, now: datetime) -> list[GroupMembers]:
        """The groups whose members may decide now (the escalation group once it is due)."""
        names = list(terms.approver_groups)
        escalation_due = (
            terms.escalate_to is not None
            and terms.escalate_after_seconds is not None
            and now >= row.created_at + timedelta(seconds=terms.escalate_after_seconds)
        )
        if escalation_due and terms.escalate_to is not None:
            names.append(terms.escalate_to)
        policy = self.policy.current
        groups = []
        for name in names:
            if name in policy.groups:  # a group removed by a reload admits nobody
                g = policy.groups[name]
                groups.append(GroupMembers(g.name, g.slack_users, g.emails, g.slack_usergroup))
        return groups

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
                    f"credential until {_hhmm(now + timedelta(seconds=terms.claim_window_seconds))}",
                    sponsor=True,
                )
                changed = True
            else:
                repo.compare_and_set(session, row, now=now)
                self._tell(
                    session, row, terms, now, f"{who} approved ({len(approvers)} of {terms.quorum})"
                )
        return VoteResult(repo.snapshot(session, row), counted=True, changed=changed)

    def revoke_by_person(
        self,
        request_id: str,
        person: Approver,
        *,
        now: datetime,
        usergroup_members: dict[str, frozenset[str]] | None = None,
    ) -> RequestSnapshot:
        """Revoke from Slack: the request's approvers, its sponsor and the agent's owner may."""
        with self.db.read() as session:
            row = repo.load_row(session, request_id)
            terms = Terms.from_json(row.terms)
            groups = self.eligible_groups(row, terms, now)
            sponsor, owner = row.on_behalf_of, row.owner_email
        email = (person.email or "").lower()
        if not email or email not in {(sponsor or "").lower(), owner.lower()}:
            check_eligible(
                person,
                groups=groups,
                sponsor_email=None,
                owner_email=None,
                usergroup_members=usergroup_members,
            )
        who = person.email or person.slack_user_id
        return self.revoke(
            request_id, by=who, reason=f"revoked in Slack by {person.name or who}", now=now
        )

    def request_card_refresh(self, request_id: str, *, now: datetime) -> None:
        """Queue a refresh of the request's card (a click on a stale card)."""
        with self.db.write() as session:
            row = repo.load_row(session, request_id)
            terms = Terms.from_json(row.terms)
            if terms.channel is not None and terms.approver_groups:
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

    # -- agent side ------------------------------------------------------------------------

    def claim(
        self, request_id: str, agent: AgentIdentity, *, now: datetime
    ) -> tuple[RequestSnapshot, IssuedCredential]:
        """Mint the credential of an approved request, once."""
        with self.db.write() as session:
            row = repo.load_row(session, request_id, agent_id=agent.id, lock=True)
            status = Status(row.status)
            new_status = next_status(status, Event.CLAIM)
            check_deadline(status, row.expires_at, now)
            terms = Terms.from_json(row.terms)
            ttl = terms.max_ttl
            if row.requested_ttl_seconds:
                ttl = min(ttl, timedelta(seconds=row.requested_ttl_seconds))
            approvers = tuple(
                sorted(
                    {
                        v.approver_email
                        for v in repo.votes_for(session, row.id)
                        if v.vote == "approve" and v.approver_email
                    }
                )
            )
            issued = self.issuer.issue(
                CredentialGrant(
                    request_id=row.id,
                    agent=row.agent_id,
                    audience=row.target,
                    scope=row.action,
                    args_digest=row.parameters_digest,
                    environment=row.environment,
                    approvers=approvers,
                    on_behalf_of=row.on_behalf_of,
                    ttl=ttl,
                ),
                now,
            )
            session.add(
                CredentialRow(
                    jti=issued.handle,
                    request_id=row.id,
                    agent_id=row.agent_id,
                    scope=issued.scope,
                    audience=row.target,
                    issued_at=now,
                    expires_at=issued.expires_at,
                )
            )
            repo.compare_and_set(
                session,
                row,
                now=now,
                status=new_status.value,
                credential_jti=issued.handle,
                credential_expires_at=issued.expires_at,
                expires_at=None,
            )
            AuditLog(SqlAuditAppender(session)).credential_issued(
                row.id,
                row.agent_id,
                {
                    "jti": issued.handle,
                    "expires_at": issued.expires_at.isoformat(),
                    "scope": issued.scope,
                    "aud": row.target,
                    "ttl_seconds": int(ttl.total_seconds()),
                },
                now,
            )
            self._tell(
                session,
                row,
                terms,
                now,
                f"Credential issued to {row.agent_id}, active until {_hhmm(issued.expires_at)}",
            )
            claimed = repo.snapshot(session, row)
        return self._changed(claimed), issued

    def complete(
        self,
        request_id: str,
        agent: AgentIdentity,
        outcome: SessionOutcome,
        detail: str,
        *,
        now: datetime,
    ) -> RequestSnapshot:
        with self.db.write() as session:
            row = repo.load_row(session, request_id, agent_id=agent.id, lock=True)
            new_status = next_status(Status(row.status), Event.COMPLETE)
            audit = AuditLog(SqlAuditAppender(session))
            self._revoke_credential(
                session, audit, row, by=agent.id, reason=f"completed: {outcome.value}", now=now
            )
            repo.compare_and_set(
                session,
                row,
                now=now,
                status=new_status.value,
                outcome=outcome.value,
                outcome_detail=detail,
            )
            audit.session_completed(row.id, agent.id, outcome.value, detail, now)
            self._tell(
                session,
                row,
                Terms.from_json(row.terms),
                now,
                f"Completed: {outcome.value}"
                + (f" — {detail}" if detail else "")
                + "; credential revoked",
                sponsor=True,
            )
            done = repo.snapshot(session, row)
        return self._changed(done)

    def cancel(self, request_id: str, agent: AgentIdentity, *, now: datetime) -> RequestSnapshot:
        with self.db.write() as session:
            row = repo.load_row(session, request_id, agent_id=agent.id, lock=True)
            new_status = next_status(Status(row.status), Event.CANCEL)
            repo.compare_and_set(
                session,
                row,
                now=now,
                status=new_status.value,
                expires_at=None,
                status_reason="cancelled by agent",
            )
            AuditLog(SqlAuditAppender(session)).request_cancelled(row.id, agent.id, now)
            self._tell(session, row, Terms.from_json(row.terms), now, "Cancelled by the agent")
            cancelled = repo.snapshot(session, row)
        return self._changed(cancelled)

    def revoke(self, request_id: str, *, by: str, reason: str, now: datetime) -> RequestSnapshot:
        """An approver or admin cuts off an approved or active request."""
        with self.db.write() as session:
            row = repo.load_row(session, request_id, lock=True)
            new_status = next_status(Status(row.status), Event.REVOKE)
            audit = AuditLog(SqlAuditAppender(session))
            self._revoke_credential(session, audit, row, by=by, reason=reason, now=now)
            repo.compare_and_set(
                session,
                row,
                now=now,
                status=new_status.value,
                expires_at=None,
                status_reason=reason,
            )
            self._tell(
                session,
                row,
                Terms.from_json(row.terms),
                now,
                f"Revoked by {by}: {reason}",
                sponsor=True,
            )
            revoked = repo.snapshot(session, row)
        return self._changed(revoked)

    def _dm_targets(self, decision: PolicyDecision) -> list[str]:
        """Slack ids and emails of the approvers to DM, when the rule asks for DMs."""
        if not decision.notify_dm:
            return []
        targets: list[str] = []
        for name in decision.approver_groups:
            group = self.policy.current.groups.get(name)
            if group is not None:
                targets.extend(sorted(group.slack_users))
                targets.extend(sorted(group.emails))
        return list(dict.fromkeys(targets))

    @staticmethod
    def _tell(
        session: Session,
        row: RequestRow,
        terms: Terms,
        now: datetime,
        note: str,
        *,
        sponsor: bool = False,
    ) -> None:
        """Queue the card refresh, the thread note and the sponsor's DM for a change."""
        if terms.channel is None or not terms.approver_groups:
            return  # the request never had a card
        notices = Notices(session, now)
        notices.refresh_card(row.id)
        notices.thread_note(row.id, note)
        if sponsor and row.on_behalf_of:
            notices.direct(
                row.id, row.on_behalf_of, f"Request {row.id} ({row.action} on {row.target}): {note}"
            )

    def _revoke_credential(
        self,
        session: Session,
        audit: AuditLog,
        row: RequestRow,
        *,
        by: str,
        reason: str,
        now: datetime,
    ) -> None:
        if row.credential_jti and repo.revoke_credential_row(
            session, row.credential_jti, now=now, reason=reason
        ):
            self.issuer.revoke(row.credential_jti, now)
            audit.credential_revoked(row.id, row.credential_jti, by, reason, now)

    # -- time ------------------------------------------------------------------------------

    def expire_due(self, *, now: datetime, limit: int = 500) -> list[ExpiryResult]:
        """Expire every request whose deadline passed. Idempotent; safe across replicas."""
        with self.db.read() as session:
            due = repo.due_ids(session, now, limit=limit)
        results = []
        for request_id, _ in due:
            result = self.expire_one(request_id, now=now)
            if result is not None:
                results.append(result)
        return results

    def expire_one(self, request_id: str, *, now: datetime) -> ExpiryResult | None:
        """Expire one request if it is still due; None when another worker got there first."""
        try:
            with self.db.write() as session:
                row = repo.load_row(session, request_id, lock=True)
                status = Status(row.status)
                deadline = row.credential_expires_at if status is Status.ACTIVE else row.expires_at
                if status.is_final or deadline is None or deadline > now:
                    return None
                new_status = next_status(status, Event.EXPIRE)
                audit = AuditLog(SqlAuditAppender(session))
                if status is Status.ACTIVE:
                    self._revoke_credential(
                        session, audit, row, by="scheduler", reason="ttl elapsed", now=now
                    )
                    reason = "credential TTL elapsed"
                else:
                    reason = (
                        "approval deadline passed"
                        if status is Status.PENDING
                        else "claim window passed"
                    )
                    audit.request_expired(row.id, status.value, now)
                repo.compare_and_set(
                    session,
                    row,
                    now=now,
                    status=new_status.value,
                    expires_at=None,
                    status_reason=reason,
                )
                note = {
                    Status.PENDING: "Expired — no decision",
                    Status.APPROVED: "Expired — the credential was not claimed in time",
                    Status.ACTIVE: "Credential TTL elapsed — revoked",
                }[status]
                self._tell(
                    session,
                    row,
                    Terms.from_json(row.terms),
                    now,
                    note,
                    sponsor=status is not Status.ACTIVE,
                )
                expired = repo.snapshot(session, row)
        except (Conflict, IllegalTransition):
            return None
        self._changed(expired)
        return ExpiryResult(request_id, status, new_status)

    # -- target systems --------------------------------------------------------------------

    def introspect(self, token: str, *, now: datetime) -> dict[str, Any]:
        """RFC 7662: active only when the signature, times and revocation list all agree."""
        try:
            claims = verify_credential(
                token, keyring=self.keyring, issuer_url=self.issuer_url, audience=None, now=now
            )
        except InvalidToken:
            return introspection_response(None, revoked=False, now=now)
        with self.db.read() as session:
            row = session.get(CredentialRow, str(claims.get("jti", "")))
            revoked = row is None or row.revoked_at is not None
        return introspection_response(claims, revoked=revoked, now=now)
