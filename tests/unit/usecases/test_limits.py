"""Limits per agent on the in-memory store: the pending cap and the submission rate."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.errors import TooManyRequests
from core.model import ActionClass, Status
from tests.support import intent
from tests.unit.usecases.conftest import AGENT, AGENT_KEY, T0, World

READ = {"action": "db.query", "action_class": ActionClass.READ, "target": "orders-db"}


def state_size(world: World) -> tuple[int, int, int]:
    state = world.store.state
    return len(state.requests), len(state.audit), len(state.outbox)


def test_the_pending_cap_refuses_the_next_pending_and_writes_nothing(world: World) -> None:
    world.service.parts.limits.max_pending_per_agent = 3
    for _ in range(3):
        snap, _ = world.service.submit(AGENT, intent(AGENT), now=T0)
        assert snap.status is Status.PENDING
    before = state_size(world)
    with pytest.raises(TooManyRequests) as refused:
        world.service.submit(AGENT, intent(AGENT), now=T0, idempotency_key="k-11")
    assert refused.value.reason == "pending" and refused.value.retry_after >= 1
    with pytest.raises(TooManyRequests):
        world.service.submit_by_key(AGENT_KEY, lambda a: intent(a), now=T0)
    assert state_size(world) == before
    # Pre-authorised (and denied) requests are not what people must decide: they pass.
    allowed, _ = world.service.submit(AGENT, intent(AGENT, **READ), now=T0)
    assert allowed.status is Status.APPROVED
    # A decision frees a place.
    some = next(s for s in world.store.state.requests.values() if s.status is Status.PENDING)
    world.service.cancel(some.id, AGENT, now=T0)
    again, _ = world.service.submit(AGENT, intent(AGENT), now=T0, idempotency_key="k-11")
    assert again.status is Status.PENDING


def test_the_cap_is_per_agent_and_zero_turns_it_off(world: World) -> None:
    world.service.parts.limits.max_pending_per_agent = 1
    world.service.submit(AGENT, intent(AGENT), now=T0)
    with pytest.raises(TooManyRequests):
        world.service.submit(AGENT, intent(AGENT), now=T0)
    world.service.parts.limits.max_pending_per_agent = 0
    world.service.submit(AGENT, intent(AGENT), now=T0)
    world.service.submit(AGENT, intent(AGENT), now=T0)


def test_the_rate_refuses_over_its_budget_and_refills_with_time(world: World) -> None:
    world.service.parts.limits.submit_rate_per_agent = 6  # one every 10 s, bursts of 6
    for _ in range(6):
        world.service.submit(AGENT, intent(AGENT, **READ), now=T0)
    before = state_size(world)
    with pytest.raises(TooManyRequests) as refused:
        world.service.submit(AGENT, intent(AGENT, **READ), now=T0)
    assert (refused.value.reason, refused.value.retry_after) == ("rate", 10)
    with pytest.raises(TooManyRequests):
        world.service.submit_by_key(AGENT_KEY, lambda a: intent(a, **READ), now=T0)
    assert state_size(world) == before
    # An idempotent replay costs nothing and is not refused.
    world.service.parts.limits.submit_rate_per_agent = 0
    first, _ = world.service.submit(AGENT, intent(AGENT, **READ), now=T0, idempotency_key="r")
    world.service.parts.limits.submit_rate_per_agent = 6
    replay, created = world.service.submit(
        AGENT, intent(AGENT, **READ), now=T0, idempotency_key="r"
    )
    assert (replay.id, created) == (first.id, False)
    later = T0 + timedelta(seconds=10)
    world.service.submit(AGENT, intent(AGENT, **READ), now=later)
    with pytest.raises(TooManyRequests):
        world.service.submit(AGENT, intent(AGENT, **READ), now=later)
