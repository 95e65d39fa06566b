"""A rule's terms, frozen on the request at submission so a policy reload cannot loosen them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class Terms:
    """What the deciding rule asked for, frozen at submission so a reload cannot loosen it."""

    approver_groups: tuple[str, ...] = ()
    quorum: int = 1
    channel: str | None = None
    notify_dm: bool = False
    max_ttl_seconds: int = 900
    approval_timeout_seconds: int = 1800
    claim_window_seconds: int = 300
    step_up: bool = False
    break_glass: bool = False
    escalate_after_seconds: int | None = None
    escalate_to: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Terms:
        raw = json.loads(text)
        raw["approver_groups"] = tuple(raw.get("approver_groups", ()))
        return cls(**raw)

    @property
    def has_card(self) -> bool:
        """Requests that waited for approvers have a Slack card (break-glass ones an alert)."""
        return bool(self.approver_groups) and not self.break_glass

    @property
    def max_ttl(self) -> timedelta:
        return timedelta(seconds=self.max_ttl_seconds)
