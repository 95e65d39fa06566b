"""Delegations (docs/delegation.md) in SQL, and the children of requests for the cascade."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from core.delegation import Delegation
from core.storage.tables import AgentRow, DelegationRow, RequestRow

_DELEGATIONS = cast(Table, DelegationRow.__table__)
_REQUESTS = cast(Table, RequestRow.__table__)
_AGENTS = cast(Table, AgentRow.__table__)
_LIVE = ("pending", "approved", "active")


def add(session: Session, delegation: Delegation) -> None:
    session.connection().execute(
        _DELEGATIONS.insert(),
        {
            "id": delegation.id,
            "parent_request_id": delegation.parent_request_id,
            "agent_id": delegation.agent_id,
            "actions": json.dumps(list(delegation.actions)),
            "targets": json.dumps(list(delegation.targets)),
            "max_ttl_seconds": delegation.max_ttl_seconds,
            "depth": delegation.depth,
            "created_at": delegation.created_at,
            "created_by": delegation.created_by,
        },
    )


def _delegation(row: Any) -> Delegation:
    return Delegation(
        id=row.id,
        parent_request_id=row.parent_request_id,
        agent_id=row.agent_id,
        actions=tuple(json.loads(row.actions)),
        targets=tuple(json.loads(row.targets)),
        max_ttl_seconds=row.max_ttl_seconds,
        depth=row.depth,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def get(session: Session, delegation_id: str) -> Delegation | None:
    query = select(_DELEGATIONS).where(_DELEGATIONS.c.id == delegation_id)
    row = session.connection().execute(query).one_or_none()
    return _delegation(row) if row is not None else None


def of_request(
    session: Session, request_id: str, *, agent_id: str | None = None
) -> list[Delegation]:
    """The delegations of a request (to ``agent_id`` only, when given), oldest first."""
    query = select(_DELEGATIONS).where(_DELEGATIONS.c.parent_request_id == request_id)
    if agent_id is not None:
        query = query.where(_DELEGATIONS.c.agent_id == agent_id)
    query = query.order_by(_DELEGATIONS.c.created_at, _DELEGATIONS.c.id)
    return [_delegation(row) for row in session.connection().execute(query)]


def live_children(session: Session, request_ids: Sequence[str]) -> list[str]:
    """Ids of the pending, approved or active requests whose parent is one of ``request_ids``."""
    if not request_ids:
        return []
    query = (
        select(_REQUESTS.c.id)
        .where(_REQUESTS.c.parent_request_id.in_(list(request_ids)))
        .where(_REQUESTS.c.status.in_(_LIVE))
        .order_by(_REQUESTS.c.id)
    )
    return [row.id for row in session.connection().execute(query)]


def agent_enabled(session: Session, agent_id: str) -> bool:
    query = select(_AGENTS.c.disabled).where(_AGENTS.c.id == agent_id)
    row = session.connection().execute(query).one_or_none()
    return row is not None and not row.disabled
