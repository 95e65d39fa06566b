"""Limits per agent on submissions: pending requests at once, and submissions a minute.

The pending cap is checked in the database, inside the transaction that would record the
request, with the agent's row locked (PostgreSQL) or the write lock held (SQLite), so it holds
across replicas. The rate is a token bucket per agent in this process: with N replicas behind a
load balancer an agent may submit up to N times the rate.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import datetime

from core.errors import TooManyRequests

PENDING_RETRY_AFTER_SECONDS = 60
"""The Retry-After hint at the pending cap: a pending request ends when people decide."""


@dataclass
class SubmitLimits:
    """0 turns a limit off."""

    max_pending_per_agent: int = 10
    submit_rate_per_agent: int = 120  # a minute


class SubmitRate:
    """A token bucket per agent: ``rate`` submissions a minute, bursts up to ``rate``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, datetime]] = {}  # agent -> (tokens, as of)

    def take(self, agent_id: str, rate: int, now: datetime) -> None:
        """Spend one token of ``agent_id``'s bucket, or raise TooManyRequests (none spent)."""
        if rate <= 0:
            return
        per_second = rate / 60.0
        with self._lock:
            tokens, as_of = self._buckets.get(agent_id, (float(rate), now))
            elapsed = max(0.0, (now - as_of).total_seconds())  # a clock step back adds nothing
            tokens = min(float(rate), tokens + elapsed * per_second)
            if tokens < 1.0:
                self._buckets[agent_id] = (tokens, max(now, as_of))
                wait = math.ceil((1.0 - tokens) / per_second)
                raise TooManyRequests(
                    f"agent {agent_id} is over its submission rate ({rate} a minute)",
                    reason="rate",
                    retry_after=wait,
                )
            self._buckets[agent_id] = (tokens - 1.0, max(now, as_of))


def check_pending(agent_id: str, pending: int, cap: int) -> None:
    """TooManyRequests when ``agent_id`` already has ``cap`` requests pending."""
    if cap > 0 and pending >= cap:
        raise TooManyRequests(
            f"agent {agent_id} has {pending} requests pending, its limit is {cap}; "
            "wait for decisions or cancel some",
            reason="pending",
            retry_after=PENDING_RETRY_AFTER_SECONDS,
        )
