"""Break-glass review: someone other than the requester's side acknowledges the use."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from core.approvals import check_eligible, eligible_groups
from core.errors import Conflict, ValidationFailed
from core.model import Approver
from core.snapshots import RequestSnapshot
from core.usecases.parts import Parts
from core.usecases.transition import Step, changing


class BreakGlass:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def review_break_glass(
        self,
        request_id: str,
        reviewer: Approver,
        *,
        now: datetime,
        usergroup_members: Mapping[str, frozenset[str]] | None = None,
    ) -> RequestSnapshot:
        """Record that an eligible approver (never the sponsor or owner) reviewed the use."""
        with changing(self.parts, now) as unit:
            snap = unit.load(request_id)
            if not (snap.break_glass and snap.terms.break_glass):
                raise ValidationFailed("this request did not use break-glass")
            if snap.break_glass_reviewed_at is not None:
                raise Conflict(f"already reviewed by {snap.break_glass_reviewed_by}")
            check_eligible(
                reviewer,
                groups=eligible_groups(
                    snap.terms, snap.created_at, self.parts.policy.current.groups, now
                ),
                sponsor_email=snap.on_behalf_of,
                owner_email=snap.owner_email,
                usergroup_members=usergroup_members,
            )
            who = reviewer.email or reviewer.slack_user_id
            unit.audit.break_glass_reviewed(snap.id, who, now)
            (reviewed,) = unit.apply(
                Step(
                    snap,
                    None,
                    who,
                    {"break_glass_reviewed_at": now, "break_glass_reviewed_by": who},
                )
            )
        return reviewed
