"""A request as read in one transaction: the read model every use case and edge works from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.model import ActionClass, Status, Tier
from core.terms import Terms


@dataclass(frozen=True, slots=True)
class VoteInfo:
    slack_user_id: str
    email: str | None
    name: str | None
    vote: str
    reason: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    jti: str
    expires_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None


@dataclass(frozen=True, slots=True)
class RequestSnapshot:
    """A request as read in one transaction, with its votes and credential metadata."""

    id: str
    agent_id: str
    owner_email: str
    status: Status
    version: int
    action: str
    action_class: ActionClass
    target: str
    environment: str
    justification: str
    parameters: dict[str, Any]
    parameters_digest: str
    requested_ttl_seconds: int | None
    data_volume_bytes: int | None
    on_behalf_of: str | None
    parent_request_id: str | None
    break_glass: bool
    rule: str | None
    tier: Tier
    reasons: tuple[str, ...]
    policy_digest: str
    terms: Terms
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    decided_at: datetime | None
    outcome: str | None
    outcome_detail: str | None
    status_reason: str | None
    votes: tuple[VoteInfo, ...]
    credential: CredentialInfo | None
    next_escalation_at: datetime | None = None
    escalation_stage: int = 0
    break_glass_reviewed_at: datetime | None = None
    break_glass_reviewed_by: str | None = None
    delegation_id: str | None = None  # the delegation a child request was submitted under
    sponsor_verified: bool = False  # on_behalf_of from the workload token, not only stated
    callback_url: str | None = None  # status changes POSTed there (docs/callbacks.md)

    @property
    def approvals(self) -> tuple[VoteInfo, ...]:
        return tuple(v for v in self.votes if v.vote == "approve")

    @property
    def just_created(self) -> bool:
        """Submitted in the change being reported: every later change bumps the version."""
        return self.version == 1
