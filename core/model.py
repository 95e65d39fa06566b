"""Domain vocabulary: statuses, action classes, decisions and the intent an agent submits."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    ACTIVE = "active"
    COMPLETED = "completed"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    REVOKED = "revoked"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {Status.COMPLETED, Status.DENIED, Status.EXPIRED, Status.CANCELLED, Status.REVOKED}
)


class ActionClass(StrEnum):
    READ = "read"
    WRITE = "write"
    DESTRUCTIVE = "destructive"
    SECRET_READ = "secret_read"  # noqa: S105 - an action class, not a secret
    DATA_EXPORT = "data_export"
    PRIVILEGE_CHANGE = "privilege_change"


class Outcome(StrEnum):
    """What the policy says about a request."""

    ALLOW = "allow"  # pre-authorised, no human needed
    APPROVE = "approve"  # explicit human approval required
    DENY = "deny"


class Tier(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Vote(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


class SessionOutcome(StrEnum):
    """What the agent reports when it completes."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class Intent:
    """What an agent says it is about to do; the agent id comes from its key, never the body."""

    agent: str
    action: str
    action_class: ActionClass
    target: str
    environment: str
    justification: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    requested_ttl_seconds: int | None = None
    data_volume_bytes: int | None = None
    on_behalf_of: str | None = None
    parent_request_id: str | None = None
    break_glass: bool = False
    callback_url: str | None = None  # status changes POSTed there, signed (docs/callbacks.md)


@dataclass(frozen=True, slots=True)
class Approver:
    """A person who clicked: their Slack user id, and email when known."""

    slack_user_id: str
    email: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """An authenticated agent: its id and the email of the person who owns it. Authenticated
    by a workload token (docs/identity.md): ``sponsors``, the people its ``on_behalf_of`` claim
    names (lower case), whom a request may name as its verified sponsor."""

    id: str
    owner_email: str
    sponsors: frozenset[str] = frozenset()

    def vouches_for(self, sponsor: str | None) -> bool:
        """True if ``sponsor`` (a request's ``on_behalf_of``) comes from the token's claims."""
        return sponsor is not None and sponsor.strip().lower() in self.sponsors
