"""What happened, as data: core says what, to which request, who and when; the edges choose
the words (``bot/slack/notes.py`` renders every fact for Slack).

A fact is queued in the outbox in the transaction of the change it reports, so it is told
exactly when the change commits. Its ``data`` holds only JSON values (times as ISO 8601).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class FactKind(StrEnum):
    APPROVAL_COUNTED = "approval.counted"  # one approval short of (or before) the quorum
    APPROVED = "approved"
    DENIED = "denied"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REVOKED = "revoked"
    EXPIRED = "expired"
    ESCALATION_REMINDER = "escalation.reminder"
    ESCALATED = "escalated"
    ISSUER_REVOKE_FAILING = "issuer_revoke.failing"
    ISSUER_REVOKE_RECOVERED = "issuer_revoke.recovered"


@dataclass(frozen=True, slots=True)
class Fact:
    kind: FactKind
    request_id: str
    at: datetime
    actor: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "request_id": self.request_id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "data": self.data,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Fact:
        return cls(
            kind=FactKind(raw["kind"]),
            request_id=str(raw["request_id"]),
            at=datetime.fromisoformat(raw["at"]),
            actor=raw.get("actor"),
            data=dict(raw.get("data") or {}),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)
