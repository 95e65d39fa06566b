"""Every (status, event) pair: the legal ones move as core/lifecycle.py's table says, the rest are refused."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import IllegalTransition
from core.lifecycle import Event, allowed_events, check_deadline, next_status
from core.model import FINAL_STATUSES, Status

LEGAL = {
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
    (Status.ACTIVE, Event.EXPIRE): Status.REVOKED,
}

ALL_PAIRS = list(itertools.product(Status, Event))


@pytest.mark.parametrize(
    ("status", "event"), ALL_PAIRS, ids=[f"{s.value}-{e.value}" for s, e in ALL_PAIRS]
)
def test_every_status_event_pair(status: Status, event: Event) -> None:
    if (status, event) in LEGAL:
        assert next_status(status, event) is LEGAL[(status, event)]
    else:
        with pytest.raises(IllegalTransition) as info:
            next_status(status, event)
        assert info.value.status == status.value
        assert info.value.event == event.value
        assert status.value in info.value.detail


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
def test_final_statuses_accept_nothing(status: Status) -> None:
    assert allowed_events(status) == frozenset()
    assert status.is_final


def test_active_exits_always_end_the_credential() -> None:
    # Every way out of active lands in a final status (and the service revokes on each).
    exits = {next_status(Status.ACTIVE, e) for e in allowed_events(Status.ACTIVE)}
    assert exits == {Status.COMPLETED, Status.REVOKED}


def test_deadline_checks_use_the_given_time() -> None:
    deadline = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    check_deadline(Status.PENDING, deadline, deadline - timedelta(microseconds=1))
    with pytest.raises(IllegalTransition):
        check_deadline(Status.PENDING, deadline, deadline)
    check_deadline(Status.PENDING, None, deadline)
