"""A key with an end (a rotation's grace period) works before it and not from it on: the use
case checks the key at the time it was given, with and without an Idempotency-Key."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.errors import Unauthenticated
from tests.support import intent
from tests.unit.usecases.conftest import AGENT, AGENT_KEY, T0, World

ENDS = T0 + timedelta(minutes=10)


@pytest.mark.parametrize("idempotency_key", [None, "retry-1"])
def test_a_key_works_until_its_end_and_not_at_it(world: World, idempotency_key: str | None) -> None:
    world.store.state.key_ends[AGENT_KEY] = ENDS
    before = ENDS - timedelta(microseconds=1)
    snap, created = world.service.submit_by_key(
        AGENT_KEY, lambda a: intent(a), now=before, idempotency_key=idempotency_key
    )
    assert created and snap.agent_id == AGENT.id
    for at in (ENDS, ENDS + timedelta(days=1)):
        with pytest.raises(Unauthenticated):
            world.service.submit_by_key(
                AGENT_KEY, lambda a: intent(a), now=at, idempotency_key=idempotency_key
            )
    assert list(world.store.state.requests) == [snap.id]
