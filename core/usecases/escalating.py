"""Escalation: remind the approvers, then bring in the secondary group (rule's escalate_to).

Stage 1 at half of ``escalate_after``: a reminder in the card's thread. Stage 2 at
``escalate_after``: the secondary group gets the card by DM and may decide from then on.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from core.approvals import tally
from core.errors import Conflict
from core.facts import Fact, FactKind
from core.model import Status
from core.usecases.parts import Parts
from core.usecases.transition import Step, changing


class Escalating:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def escalate_due(self, *, now: datetime, limit: int = 500) -> list[str]:
        with self.parts.store.read() as tx:
            due = tx.due_escalations(now, limit=limit)
        return [rid for rid in due if self.escalate_one(rid, now=now)]

    def escalate_one(self, request_id: str, *, now: datetime) -> bool:
        """Advance one request's escalation if it is due; False when nothing was due."""
        try:
            with changing(self.parts, now) as unit:
                snap = unit.load(request_id)
                due = snap.next_escalation_at
                terms = snap.terms
                if snap.status is not Status.PENDING or due is None or due > now:
                    return False
                if terms.escalate_after_seconds is None or terms.escalate_to is None:
                    return False
                escalate_at = snap.created_at + timedelta(seconds=terms.escalate_after_seconds)
                if snap.escalation_stage == 0:
                    stage = 1
                    step = Step(
                        snap,
                        None,
                        "scheduler",
                        {"escalation_stage": 1, "next_escalation_at": escalate_at},
                        fact=Fact(
                            FactKind.ESCALATION_REMINDER,
                            snap.id,
                            now,
                            "scheduler",
                            {
                                "missing": tally(snap.votes, terms.quorum).missing,
                                "groups": list(terms.approver_groups),
                                "escalate_to": terms.escalate_to,
                                "escalate_at": escalate_at.isoformat(),
                            },
                        ),
                        refresh_card=False,
                    )
                else:
                    stage = 2
                    group = self.parts.policy.current.groups.get(terms.escalate_to)
                    targets = sorted(group.slack_users) + sorted(group.emails) if group else []
                    unit.notices.post_card(snap.id, None, targets)
                    step = Step(
                        snap,
                        None,
                        "scheduler",
                        {"escalation_stage": 2, "next_escalation_at": None},
                        fact=Fact(
                            FactKind.ESCALATED,
                            snap.id,
                            now,
                            "scheduler",
                            {"to": terms.escalate_to},
                        ),
                    )
                unit.audit.request_escalated(snap.id, stage, terms.escalate_to, now)
                unit.apply(step)
        except Conflict:
            return False
        return True
