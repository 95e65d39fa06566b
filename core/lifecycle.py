"""The request lifecycle as pure functions of (state, event, now); how a change is applied:
docs/architecture.md, "The one transition path".

Nothing here touches the database: the store applies the result with a compare-and-set on
the request's version, so a transition happens once however many callers race for it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from core.errors import IllegalTransition
from core.model import Status


class Event(StrEnum):
    APPROVE = "approve"  # quorum reached
    DENY = "deny"
    EXPIRE = "expire"  # approval deadline, claim window or credential TTL passed
    CANCEL = "cancel"  # the agent withdrew
    CLAIM = "claim"  # the agent took its credential
    COMPLETE = "complete"  # the agent reported an outcome
    REVOKE = "revoke"  # an approver, admin, parent revocation or break-glass review


_TRANSITIONS: dict[tuple[Status, Event], Status] = {
    (Status.PENDING, Event.APPROVE): Status.APPROVED,
    (Status.PENDING, Event.DENY): Status.DENIED,
    (Status.PENDING, Event.EXPIRE): Status.EXPIRED,
    (Status.PENDING, Event.CANCEL): Status.CANCELLED,
    (Status.APPROVED, Event.CLAIM): Status.ACTIVE,
    (Status.APPROVED, Event.EXPIRE): Status.EXPIRED,
    (Status.APPROVED, Event.CANCEL): Status.CANCELLED,
    (Status.APPROVED, Event.REVOKE): Status.REVOKED,
    (Status.ACTIVE, Event.COMPLETE): Status.COMPLETED,
    (Status.ACTIVE, Event.REVOKE): Status.REVOKED,
    # A credential whose TTL ran out is revoked, not "expired": it existed and was cut off.
    (Status.ACTIVE, Event.EXPIRE): Status.REVOKED,
}


def allowed_events(status: Status) -> frozenset[Event]:
    return frozenset(event for (source, event) in _TRANSITIONS if source is status)


def next_status(status: Status, event: Event) -> Status:
    """The status after ``event``, or IllegalTransition naming both."""
    try:
        return _TRANSITIONS[(status, event)]
    except KeyError:
        raise IllegalTransition(
            f"cannot {event.value} a request that is {status.value}",
            status=status.value,
            event=event.value,
        ) from None


def check_deadline(status: Status, deadline: datetime | None, now: datetime) -> None:
    """Refuse work on a request whose current deadline has passed, even if no sweep ran yet."""
    if deadline is not None and now >= deadline and not status.is_final:
        raise IllegalTransition(
            f"the request's deadline passed at {deadline.isoformat()}",
            status=status.value,
            event="deadline",
        )
