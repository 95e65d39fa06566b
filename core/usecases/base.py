"""State and helpers shared by the use cases: the parts, listeners, reading, telling."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from core.audit.events import AuditLog
from core.canonical import parameters_digest
from core.credentials import (
    CredentialIssuer,
    introspection_response,
    verify_credential,
)
from core.eligibility import GroupMembers
from core.errors import InvalidToken
from core.keys import KeyRing
from core.model import Intent
from core.notices import Notices
from core.policy import PolicyDecision, PolicyHolder
from core.snapshots import RequestSnapshot
from core.storage import requests_repo as repo
from core.storage.database import Database
from core.storage.tables import CredentialRow, RequestRow, RevocationRow
from core.terms import Terms

logger = logging.getLogger(__name__)


ChangeListener = Callable[[RequestSnapshot], None]
"""Called after a commit that changed a request (long-polls, Slack cards). Must not raise."""


def clock_text(at: datetime) -> str:
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


class StepupBase:
    """The engine's parts and what every use case shares."""

    def __init__(
        self,
        db: Database,
        policy: PolicyHolder,
        keyring: KeyRing,
        issuer: CredentialIssuer,
        *,
        issuer_url: str,
        security_channel: str | None = None,
    ) -> None:
        self.db = db
        self.policy = policy
        self.keyring = keyring
        self.issuer = issuer
        self.issuer_url = issuer_url
        self.security_channel = security_channel  # break-glass and revocation alerts
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
        if not terms.has_card:
            return
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
        """Put the credential on the revocation list now (introspection answers inactive at
        once) and queue the issuer-side revocation, which is retried until it succeeds."""
        if row.credential_jti in self._revoke_credentials(session, [row], reason=reason, now=now):
            audit.credential_revoked(row.id, row.credential_jti, by, reason, now)

    @staticmethod
    def _revoke_credentials(
        session: Session, rows: Sequence[RequestRow], *, reason: str, now: datetime
    ) -> set[str]:
        """The revocation list now, the issuer-side revocation queued, for several rows;
        the caller writes the audit entries. Returns the jtis that were not yet on the list."""
        revoked = repo.revoke_credential_rows(
            session, [r.credential_jti for r in rows if r.credential_jti], now=now, reason=reason
        )
        session.add_all(
            RevocationRow(
                jti=row.credential_jti,
                request_id=row.id,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            for row in rows
            if row.credential_jti in revoked
        )
        return revoked

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
