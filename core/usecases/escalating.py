"""Escalation: remind the approvers, then bring in the secondary group (rule's escalate_to).

Stage 1 at half of ``escalate_after``: a reminder in the card's thread. Stage 2 at
``escalate_after``: the secondary group gets the card by DM and may decide from then on.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from core.audit.events import AuditLog
from core.errors import Conflict
from core.model import Status
from core.notices import Notices
from core.storage import requests_repo as repo
from core.storage.audit_store import SqlAuditAppender
from core.storage.tables import RequestRow
from core.terms import Terms
from core.usecases.base import StepupBase, clock_text


def first_escalation_at(created_at: datetime, terms: Terms) -> datetime | None:
    if terms.escalate_after_seconds is None or terms.escalate_to is None:
        return None
    return created_at + timedelta(seconds=terms.escalate_after_seconds / 2)


class Escalating(StepupBase):
    def escalate_due(self, *, now: datetime, limit: int = 500) -> list[str]:
        with self.db.read() as session:
            due = list(
                session.execute(
                    select(RequestRow.id)
                    .where(
                        RequestRow.status == Status.PENDING.value,
                        RequestRow.next_escalation_at <= now,
                    )
                    .order_by(RequestRow.next_escalation_at)
                    .limit(limit)
                ).scalars()
            )
        return [rid for rid in due if self.escalate_one(rid, now=now)]

    def escalate_one(self, request_id: str, *, now: datetime) -> bool:
        """Advance one request's escalation if it is due; False when nothing was due."""
        try:
            with self.db.write() as session:
                row = repo.load_row(session, request_id, lock=True)
                due = row.next_escalation_at
                if row.status != Status.PENDING.value or due is None or due > now:
                    return False
                terms = Terms.from_json(row.terms)
                if terms.escalate_after_seconds is None or terms.escalate_to is None:
                    return False
                escalate_at = row.created_at + timedelta(seconds=terms.escalate_after_seconds)
                notices = Notices(session, now)
                if row.escalation_stage == 0:
                    missing = terms.quorum - len(
                        {
                            v.approver_slack_id
                            for v in repo.votes_for(session, row.id)
                            if v.vote == "approve"
                        }
                    )
                    repo.compare_and_set(
                        session, row, now=now, escalation_stage=1, next_escalation_at=escalate_at
                    )
                    notices.thread_note(
                        row.id,
                        f":bell: Reminder: {missing} more approval(s) needed from "
                        f"{', '.join(terms.approver_groups)}; escalating to {terms.escalate_to} at "
                        f"{clock_text(escalate_at)}",
                    )
                    stage = 1
                else:
                    repo.compare_and_set(
                        session, row, now=now, escalation_stage=2, next_escalation_at=None
                    )
                    group = self.policy.current.groups.get(terms.escalate_to)
                    targets = sorted(group.slack_users) + sorted(group.emails) if group else []
                    notices.post_card(row.id, None, targets)
                    notices.thread_note(
                        row.id,
                        f":arrow_up: Escalated to {terms.escalate_to}: its members may now decide",
                    )
                    notices.refresh_card(row.id)
                    stage = 2
                AuditLog(SqlAuditAppender(session)).request_escalated(
                    row.id, stage, terms.escalate_to, now
                )
                snapshot = repo.snapshot(session, row)
        except Conflict:
            return False
        self._changed(snapshot)
        return True
