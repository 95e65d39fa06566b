"""Agents, their keys, and the resource servers allowed to introspect. Keys are kept hashed."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from core.errors import Conflict, NotFound, Unauthenticated
from core.model import AgentIdentity
from core.storage.tables import AgentKeyRow, AgentRow, ResourceServerRow

__all__ = ["AgentIdentity", "ResourceServer"]  # AgentIdentity re-exported (home: core.model)

AGENT_KEY_PREFIX = "stpa_"
RESOURCE_SERVER_KEY_PREFIX = "stpr_"


def hash_key(key: str) -> str:
    # Keys are 256-bit random strings, so one SHA-256 is enough: nothing to brute-force.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def add_agent(session: Session, agent_id: str, owner_email: str, now: datetime) -> str:
    """Register an agent and return its first key (shown once, stored only as a hash)."""
    if session.get(AgentRow, agent_id) is not None:
        raise Conflict(f"agent {agent_id} already exists")
    # The policy ignores letter case, and so would a reader of an approval card.
    same = session.execute(
        select(AgentRow.id).where(func.lower(AgentRow.id) == agent_id.lower()).limit(1)
    ).scalar_one_or_none()
    if same is not None:
        raise Conflict(
            f"agent {agent_id} differs from the existing agent {same} only in letter case"
        )
    session.add(AgentRow(id=agent_id, owner_email=owner_email, disabled=False, created_at=now))
    session.flush()  # the key row refers to it
    return add_agent_key(session, agent_id, now)


def add_agent_key(session: Session, agent_id: str, now: datetime) -> str:
    key = new_key(AGENT_KEY_PREFIX)
    session.add(
        AgentKeyRow(agent_id=agent_id, key_hash=hash_key(key), key_prefix=key[:9], created_at=now)
    )
    session.flush()
    return key


_AGENTS = cast(Table, AgentRow.__table__)
_AGENT_KEYS = cast(Table, AgentKeyRow.__table__)
# Core, prebuilt: every agent call runs it, and the ORM's select path costs several times more.
_AGENT_BY_KEY = (
    select(_AGENTS.c.id, _AGENTS.c.owner_email, _AGENTS.c.disabled)
    .join(_AGENT_KEYS, _AGENT_KEYS.c.agent_id == _AGENTS.c.id)
    .where(_AGENT_KEYS.c.key_hash == bindparam("key_hash"), _AGENT_KEYS.c.revoked_at.is_(None))
)


def authenticate_agent(conn: Connection, key: str) -> AgentIdentity:
    row = conn.execute(_AGENT_BY_KEY, {"key_hash": hash_key(key)}).one_or_none()
    if row is None or row.disabled:
        raise Unauthenticated()
    return AgentIdentity(row.id, row.owner_email)


def get_agent(session: Session, agent_id: str) -> AgentRow:
    row = session.get(AgentRow, agent_id)
    if row is None:
        raise NotFound(f"no agent {agent_id}")
    return row


def list_agents(session: Session) -> list[AgentRow]:
    return list(session.execute(select(AgentRow).order_by(AgentRow.id)).scalars())


def disable_agent(session: Session, agent_id: str, now: datetime) -> None:
    row = get_agent(session, agent_id)
    row.disabled = True
    row.disabled_at = now
    session.execute(
        update(AgentKeyRow)
        .where(AgentKeyRow.agent_id == agent_id, AgentKeyRow.revoked_at.is_(None))
        .values(revoked_at=now)
    )


@dataclass(frozen=True, slots=True)
class ResourceServer:
    """A target system allowed to introspect, and the token audiences it may ask about."""

    name: str
    audiences: tuple[str, ...]
    disabled: bool = False
    created_at: datetime | None = None


def _server(row: ResourceServerRow) -> ResourceServer:
    audiences = json.loads(row.audiences)
    return ResourceServer(row.name, tuple(audiences), row.disabled, row.created_at)


def add_resource_server(
    session: Session, name: str, now: datetime, audiences: Sequence[str] = ()
) -> str:
    """Register a server; its audiences are ``audiences``, or just its name when none given."""
    if session.get(ResourceServerRow, name) is not None:
        raise Conflict(f"resource server {name} already exists")
    chosen = list(dict.fromkeys(audiences)) or [name]
    key = new_key(RESOURCE_SERVER_KEY_PREFIX)
    session.add(
        ResourceServerRow(
            name=name,
            key_hash=hash_key(key),
            created_at=now,
            disabled=False,
            audiences=json.dumps(chosen),
        )
    )
    session.flush()
    return key


def authenticate_resource_server(session: Session, key: str) -> ResourceServer:
    row = session.execute(
        select(ResourceServerRow).where(ResourceServerRow.key_hash == hash_key(key))
    ).scalar_one_or_none()
    if row is None or row.disabled:
        raise Unauthenticated()
    return _server(row)


def list_resource_servers(session: Session) -> list[ResourceServer]:
    rows = session.execute(select(ResourceServerRow).order_by(ResourceServerRow.name)).scalars()
    return [_server(row) for row in rows]
