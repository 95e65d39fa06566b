"""Break-glass review: someone other than the requester's side acknowledges the use."""

from __future__ import annotations

from datetime import datetime

from core.audit.events import AuditLog
from core.eligibility import check_eligible
from core.errors import Conflict, ValidationFailed
from core.model import Approver
from core.snapshots import RequestSnapshot
from core.storage import requests_repo as repo
from core.storage.audit_store import SqlAuditAppender
from core.terms import Terms
from core.usecases.base import StepupBase


class BreakGlass(StepupBase):
    def review_break_glass(
        self,
        request_id: str,
        reviewer: Approver,
        *,
        now: datetime,
        usergroup_members: dict[str, frozenset[str]] | None = None,
    ) -> RequestSnapshot:
        """Record that an eligible approver (never the sponsor or owner) reviewed the use."""
        with self.db.write() as session:
            row = repo.load_row(session, request_id, lock=True)
            terms = Terms.from_json(row.terms)
            if not (row.break_glass and terms.break_glass):
                raise ValidationFailed("this request did not use break-glass")
            if row.break_glass_reviewed_at is not None:
                raise Conflict(f"already reviewed by {row.break_glass_reviewed_by}")
            check_eligible(
                reviewer,
                groups=self.eligible_groups(row, terms, now),
                sponsor_email=row.on_behalf_of,
                owner_email=row.owner_email,
                usergroup_members=usergroup_members,
            )
            who = reviewer.email or reviewer.slack_user_id
            repo.compare_and_set(
                session, row, now=now, break_glass_reviewed_at=now, break_glass_reviewed_by=who
            )
            AuditLog(SqlAuditAppender(session)).break_glass_reviewed(row.id, who, now)
            return repo.snapshot(session, row)
