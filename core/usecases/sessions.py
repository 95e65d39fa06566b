"""The agent's session: claim the credential, complete, cancel; revocation."""

from __future__ import annotations

from datetime import datetime, timedelta

from core.audit.events import AuditLog
from core.credentials import (
    CredentialGrant,
    IssuedCredential,
)
from core.eligibility import check_eligible
from core.lifecycle import Event, check_deadline, next_status
from core.model import Approver, SessionOutcome, Status
from core.snapshots import RequestSnapshot
from core.storage import requests_repo as repo
from core.storage.agents_repo import AgentIdentity
from core.storage.audit_store import SqlAuditAppender
from core.storage.tables import CredentialRow
from core.terms import Terms
from core.usecases.base import StepupBase, clock_text


class Sessions(StepupBase):
    """claim, complete, cancel, revoke."""

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
                f"Credential issued to {row.agent_id}, "
                f"active until {clock_text(issued.expires_at)}",
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
