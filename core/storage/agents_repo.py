"""Agents, their keys, and the resource servers allowed to introspect. Keys are kept hashed."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from core.errors import Conflict, NotFound, Unauthenticated
from core.model import AgentIdentity
from core.storage.tables import (
    AgentCallbackHostRow,
    AgentKeyRow,
    AgentRow,
    RequestRow,
    ResourceServerRow,
)

__all__ = ["AgentIdentity", "ResourceServer"]  # AgentIdentity re-exported (home: core.model)

AGENT_KEY_PREFIX = "stpa_"
RESOURCE_SERVER_KEY_PREFIX = "stpr_"


def hash_key(key: str) -> str:
    # Keys are 256-bit random strings, so one SHA-256 is enough: nothing to brute-force.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def add_agent(
    session: Session, agent_id: str, owner_email: str, now: datetime, *, key: bool = True
) -> str | None:
    """Register an agent and return its first key (shown once, stored only as a hash); with
    ``key`` False, none (it authenticates with a workload identity only)."""
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
    return add_agent_key(session, agent_id, now) if key else None


def add_agent_key(session: Session, agent_id: str, now: datetime) -> str:
    key = new_key(AGENT_KEY_PREFIX)
    session.add(
        AgentKeyRow(agent_id=agent_id, key_hash=hash_key(key), key_prefix=key[:9], created_at=now)
    )
    session.flush()
    return key


_AGENTS = cast(Table, AgentRow.__table__)
_AGENT_KEYS = cast(Table, AgentKeyRow.__table__)


def _live_at(moment: Any) -> ColumnElement[bool]:
    """An agent key works until its ``revoked_at`` (none: until it is rotated or disabled)."""
    return or_(_AGENT_KEYS.c.revoked_at.is_(None), _AGENT_KEYS.c.revoked_at > moment)


# Core, prebuilt: every agent call runs it, and the ORM's select path costs several times more.
_AGENT_BY_KEY = (
    select(_AGENTS.c.id, _AGENTS.c.owner_email, _AGENTS.c.disabled)
    .join(_AGENT_KEYS, _AGENT_KEYS.c.agent_id == _AGENTS.c.id)
    .where(_AGENT_KEYS.c.key_hash == bindparam("key_hash"), _live_at(bindparam("now")))
)


def authenticate_agent(conn: Connection, key: str, now: datetime) -> AgentIdentity:
    """The agent of ``key``; Unauthenticated if unknown, past its end, or its agent disabled."""
    row = conn.execute(_AGENT_BY_KEY, {"key_hash": hash_key(key), "now": now}).one_or_none()
    if row is None or row.disabled:
        raise Unauthenticated()
    return AgentIdentity(row.id, row.owner_email)


def end_agent_keys(session: Session, agent_id: str, *, at: datetime, now: datetime) -> int:
    """Make every key of the agent still live at ``now`` stop at ``at`` (none is extended);
    returns how many there were."""
    live = live_key_counts(session, now, agent_id=agent_id).get(agent_id, 0)
    session.execute(
        update(AgentKeyRow)
        .where(AgentKeyRow.agent_id == agent_id, _live_at(at))
        .values(revoked_at=at)
    )
    return live


def live_key_counts(
    session: Session, now: datetime, *, agent_id: str | None = None
) -> dict[str, int]:
    """Agent id -> how many of its keys work at ``now`` (agents with none are left out)."""
    query = (
        select(_AGENT_KEYS.c.agent_id, func.count())
        .where(_live_at(now))
        .group_by(_AGENT_KEYS.c.agent_id)
    )
    if agent_id is not None:
        query = query.where(_AGENT_KEYS.c.agent_id == agent_id)
    return {found: int(count) for found, count in session.execute(query)}


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
    end_agent_keys(session, agent_id, at=now, now=now)  # keys in a rotation's grace too


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


def get_resource_server(session: Session, name: str) -> ResourceServerRow:
    row = session.get(ResourceServerRow, name)
    if row is None:
        raise NotFound(f"no resource server {name}")
    return row


def disable_resource_server(session: Session, name: str) -> bool:
    """Stop its key; False if it was disabled already."""
    row = get_resource_server(session, name)
    if row.disabled:
        return False
    row.disabled = True
    return True


def replace_resource_server_key(session: Session, name: str) -> str:
    """A new key for an enabled server; the old one stops working with this transaction."""
    row = get_resource_server(session, name)
    if row.disabled:
        raise Conflict(f"resource server {name} is disabled")
    key = new_key(RESOURCE_SERVER_KEY_PREFIX)
    row.key_hash = hash_key(key)
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


def add_callback_hosts(session: Session, agent_id: str, hosts: Sequence[str]) -> None:
    for host in dict.fromkeys(hosts):
        session.add(AgentCallbackHostRow(agent_id=agent_id, host=host))


def remove_callback_hosts(session: Session, agent_id: str, hosts: Sequence[str]) -> None:
    if hosts:
        session.execute(
            delete(AgentCallbackHostRow).where(
                AgentCallbackHostRow.agent_id == agent_id, AgentCallbackHostRow.host.in_(hosts)
            )
        )


def callback_target(session: Session, request_id: str) -> tuple[str, frozenset[str]] | None:
    """The agent of ``request_id`` and its callback allow-list now (None: no such request)."""
    agent_id = session.execute(
        select(RequestRow.agent_id).where(RequestRow.id == request_id)
    ).scalar_one_or_none()
    if agent_id is None:
        return None
    return agent_id, callback_hosts(session, agent_id)


def callback_hosts(session: Session, agent_id: str) -> frozenset[str]:
    """The hosts ``agent_id`` may name in a ``callback_url`` (docs/callbacks.md)."""
    rows = session.execute(
        select(AgentCallbackHostRow.host).where(AgentCallbackHostRow.agent_id == agent_id)
    ).scalars()
    return frozenset(rows)
