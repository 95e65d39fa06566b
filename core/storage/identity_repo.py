"""Trusted issuers of workload tokens and the identities bound to agents (docs/identity.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, and_, bindparam, delete, func, select
from sqlalchemy.orm import Session

from core.errors import Conflict, NotFound, Unauthenticated
from core.identity.trust import TrustedIssuer, TrustKind
from core.model import AgentIdentity
from core.storage.database import Database
from core.storage.tables import AgentIdentityRow, AgentRow, TrustedIssuerRow


def _trusted(row: TrustedIssuerRow) -> TrustedIssuer:
    return TrustedIssuer(
        name=row.name,
        kind=TrustKind(row.kind),
        issuer=row.issuer,
        audience=row.audience,
        jwks_uri=row.jwks_uri,
        jwks=row.jwks,
    )


def add_trusted_issuer(
    session: Session, trusted: TrustedIssuer, *, by: str, now: datetime, replace: bool = False
) -> bool:
    """Store it; True if it replaced one of the same name (only with ``replace``)."""
    row = session.get(TrustedIssuerRow, trusted.name)
    if row is not None and not replace:
        raise Conflict(f"trusted issuer {trusted.name} already exists")
    if row is not None and row.kind != trusted.kind.value:
        raise Conflict(f"trusted issuer {trusted.name} is of kind {row.kind}")
    if trusted.kind is TrustKind.OIDC:
        same = session.execute(
            select(TrustedIssuerRow.name).where(
                TrustedIssuerRow.issuer == trusted.issuer,
                TrustedIssuerRow.name != trusted.name,
            )
        ).scalar_one_or_none()
        if same is not None:
            raise Conflict(f"the issuer {trusted.issuer} is trusted already, as {same}")
    values = {
        "kind": trusted.kind.value,
        "issuer": trusted.issuer,
        "jwks_uri": trusted.jwks_uri,
        "jwks": trusted.jwks,
        "audience": trusted.audience,
    }
    if row is None:
        session.add(TrustedIssuerRow(name=trusted.name, created_at=now, created_by=by, **values))
    else:
        for name, value in values.items():
            setattr(row, name, value)
    session.flush()
    return row is not None


def remove_trusted_issuer(session: Session, name: str) -> int:
    """Remove it and the identities bound through it; returns how many bindings went."""
    row = session.get(TrustedIssuerRow, name)
    if row is None:
        raise NotFound(f"no trusted issuer {name}")
    bound = session.execute(
        select(func.count()).where(AgentIdentityRow.trust_name == name)
    ).scalar_one()
    session.execute(delete(AgentIdentityRow).where(AgentIdentityRow.trust_name == name))
    session.delete(row)
    session.flush()
    return int(bound)


def get_trusted_issuer(session: Session, name: str) -> TrustedIssuer | None:
    row = session.get(TrustedIssuerRow, name)
    return None if row is None else _trusted(row)


def trusted_issuers(session: Session) -> list[TrustedIssuer]:
    rows = session.execute(select(TrustedIssuerRow).order_by(TrustedIssuerRow.name)).scalars()
    return [_trusted(row) for row in rows]


def trust_source(db: Database) -> Callable[[], list[TrustedIssuer]]:
    """What a ``WorkloadVerifier`` reads its trusted issuers from."""

    def load() -> list[TrustedIssuer]:
        with db.read() as session:
            return trusted_issuers(session)

    return load


def bind_identity(
    session: Session, agent_id: str, trust_name: str, subject: str, now: datetime
) -> None:
    taken = session.execute(
        select(AgentIdentityRow.agent_id).where(
            AgentIdentityRow.trust_name == trust_name, AgentIdentityRow.subject == subject
        )
    ).scalar_one_or_none()
    if taken is not None:
        raise Conflict(f"{trust_name}:{subject} is bound to agent {taken} already")
    session.add(
        AgentIdentityRow(agent_id=agent_id, trust_name=trust_name, subject=subject, created_at=now)
    )
    session.flush()


def identities_by_agent(session: Session) -> dict[str, list[tuple[str, str]]]:
    """Agent id -> its (trust name, subject) bindings."""
    found: dict[str, list[tuple[str, str]]] = {}
    rows = session.execute(
        select(
            AgentIdentityRow.agent_id, AgentIdentityRow.trust_name, AgentIdentityRow.subject
        ).order_by(AgentIdentityRow.agent_id, AgentIdentityRow.trust_name, AgentIdentityRow.subject)
    )
    for agent_id, trust_name, subject in rows:
        found.setdefault(agent_id, []).append((trust_name, subject))
    return found


_AGENTS = cast(Table, AgentRow.__table__)
_IDENTITIES = cast(Table, AgentIdentityRow.__table__)
# Core, prebuilt, as the static key's lookup is: every workload-authenticated call runs it.
_AGENT_BY_IDENTITY = (
    select(_AGENTS.c.id, _AGENTS.c.owner_email, _AGENTS.c.disabled)
    .join(_IDENTITIES, _IDENTITIES.c.agent_id == _AGENTS.c.id)
    .where(
        and_(
            _IDENTITIES.c.trust_name == bindparam("trust_name"),
            _IDENTITIES.c.subject == bindparam("subject"),
        )
    )
)


def authenticate_workload(conn: Connection, trust_name: str, subject: str) -> AgentIdentity:
    """The agent bound to (trust, subject); Unauthenticated if none, or it is disabled."""
    row = conn.execute(
        _AGENT_BY_IDENTITY, {"trust_name": trust_name, "subject": subject}
    ).one_or_none()
    if row is None or row.disabled:
        raise Unauthenticated()
    return AgentIdentity(row.id, row.owner_email)
