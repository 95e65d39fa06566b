"""What the routes need, built once at start-up and reached through ``request.app.state``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from fastapi import Request

from bot.api.changes import ChangeHub
from bot.clock import utc_now
from bot.settings import DEFAULT_API_THREADS
from core.agents import AgentRegistry
from core.service import Stepup


@dataclass
class ApiContext:
    service: Stepup
    registry: AgentRegistry
    hub: ChangeHub = field(default_factory=ChangeHub)
    clock: Callable[[], datetime] = utc_now
    max_wait_seconds: int = 60
    # Threads that run the blocking (database-bound) handlers; None keeps anyio's 40.
    threads: int | None = DEFAULT_API_THREADS
    # Long-polls re-read the database at least this often, to see other replicas' changes.
    cross_replica_recheck_seconds: float = 2.0


def context_of(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.stepup
    return ctx
