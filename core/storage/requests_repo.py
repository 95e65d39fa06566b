"""Queries and conditional updates on requests, votes and credentials."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from core.errors import Conflict, NotFound
from core.model import ActionClass, Status, Tier
from core.snapshots import CredentialInfo, RequestSnapshot, VoteInfo
from core.storage.tables import CredentialRow, RequestRow, VoteRow
from core.terms import Terms


def load_row(
    session: Session, request_id: str, *, agent_id: str | None = None, lock: bool = False
) -> RequestRow:
    """The request row; NotFound when absent or owned by another agent (the two look alike)."""
    query = select(RequestRow).where(RequestRow.id == request_id)
    if lock:
        query = query.with_for_update()
    row = session.execute(query).scalar_one_or_none()
    if row is None or (agent_id is not None and row.agent_id != agent_id):
        raise NotFound(f"no request {request_id}")
    return row


def load_rows(
    session: Session, request_ids: Sequence[str], *, lock: bool = False
) -> dict[str, RequestRow]:
    """Several request rows by id; NotFound if one is absent.

    Locked rows are locked in id order, a fixed order, so two batches never deadlock.
    """
    query = select(RequestRow).where(RequestRow.id.in_(request_ids)).order_by(RequestRow.id)
    if lock:
        query = query.with_for_update()
    rows = {row.id: row for row in session.execute(query).scalars()}
    missing = set(request_ids) - rows.keys()
    if missing:
        raise NotFound(f"no request {min(missing)}")
    return rows


def find_by_idempotency_key(session: Session, agent_id: str, key: str) -> RequestRow | None:
    return session.execute(
        select(RequestRow).where(RequestRow.agent_id == agent_id, RequestRow.idempotency_key == key)
    ).scalar_one_or_none()


def compare_and_set(session: Session, row: RequestRow, *, now: datetime, **values: Any) -> None:
    """Apply ``values`` only if nobody changed the row since it was read; else Conflict.

    This is the one place where a transition is decided between racing callers.
    """
    result = session.execute(
        update(RequestRow)
        .where(and_(RequestRow.id == row.id, RequestRow.version == row.version))
        .values(version=row.version + 1, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"request {row.id} changed concurrently; read it again")
    session.expire(row)


def compare_and_set_many(
    session: Session, changes: Sequence[tuple[RequestRow, dict[str, Any]]], *, now: datetime
) -> None:
    """compare_and_set for several rows, one executemany per set of columns; Conflict if any
    row changed since it was read (then nothing of the transaction must be kept). The rows
    are then reloaded, all in one query."""
    table = cast(Table, RequestRow.__table__)
    ids = [row.id for row, _ in changes]
    groups: dict[tuple[str, ...], list[tuple[RequestRow, dict[str, Any]]]] = defaultdict(list)
    for row, values in changes:
        groups[tuple(sorted(values))].append((row, values))
    for columns, group in groups.items():
        statement = (
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.version == bindparam("b_version"))
            .values(
                version=bindparam("b_new_version"),
                updated_at=now,
                **{c: bindparam(f"b_{c}", type_=table.c[c].type) for c in columns},
            )
        )
        result = session.execute(
            statement,
            [
                {"b_id": row.id, "b_version": row.version, "b_new_version": row.version + 1}
                | {f"b_{c}": value for c, value in values.items()}
                for row, values in group
            ],
        )
        if result.rowcount != len(group):  # type: ignore[attr-defined]
            raise Conflict("a request changed concurrently; read it again")
    session.execute(
        select(RequestRow).where(RequestRow.id.in_(ids)).execution_options(populate_existing=True)
    ).all()


def votes_for(session: Session, request_id: str) -> list[VoteRow]:
    return list(
        session.execute(
            select(VoteRow).where(VoteRow.request_id == request_id).order_by(VoteRow.id)
        ).scalars()
    )


def credential_for(session: Session, jti: str | None) -> CredentialRow | None:
    if jti is None:
        return None
    return session.get(CredentialRow, jti)


_REQUESTS = cast(Table, RequestRow.__table__)
_INSERT_REQUEST = _REQUESTS.insert()
# What each column holds when an insert leaves it out: its scalar default, else NULL.
_COLUMN_DEFAULTS: dict[str, Any] = {
    column.key: column.default.arg
    if isinstance(column.default, ScalarElementColumnDefault)
    else None
    for column in _REQUESTS.columns
}


def insert_new(session: Session, values: dict[str, Any]) -> RequestSnapshot:
    """Insert a new request with one Core statement and return its snapshot, built from the
    values themselves: no ORM flush, no read back, and no votes nor credential to look up."""
    session.connection().execute(_INSERT_REQUEST, values)
    # _snapshot only reads attributes; a namespace costs a fraction of an ORM instance.
    return _snapshot(cast(RequestRow, SimpleNamespace(**(_COLUMN_DEFAULTS | values))), (), None)


def snapshot(session: Session, row: RequestRow) -> RequestSnapshot:
    return _snapshot(row, votes_for(session, row.id), credential_for(session, row.credential_jti))


def snapshots(session: Session, rows: Sequence[RequestRow]) -> list[RequestSnapshot]:
    """snapshot() of several rows in three queries, rather than three per row."""
    if not rows:
        return []
    ids = [row.id for row in rows]
    votes: dict[str, list[VoteRow]] = defaultdict(list)
    for vote in session.execute(
        select(VoteRow).where(VoteRow.request_id.in_(ids)).order_by(VoteRow.id)
    ).scalars():
        votes[vote.request_id].append(vote)
    jtis = [row.credential_jti for row in rows if row.credential_jti is not None]
    credentials = {
        credential.jti: credential
        for credential in session.execute(
            select(CredentialRow).where(CredentialRow.jti.in_(jtis))
        ).scalars()
    }
    return [
        _snapshot(
            row,
            votes[row.id],
            credentials.get(row.credential_jti) if row.credential_jti is not None else None,
        )
        for row in rows
    ]


def _snapshot(
    row: RequestRow, votes: Sequence[VoteRow], credential: CredentialRow | None
) -> RequestSnapshot:
    return RequestSnapshot(
        id=row.id,
        agent_id=row.agent_id,
        owner_email=row.owner_email,
        status=Status(row.status),
        version=row.version,
        action=row.action,
        action_class=ActionClass(row.action_class),
        target=row.target,
        environment=row.environment,
        justification=row.justification,
        parameters=json.loads(row.parameters),
        parameters_digest=row.parameters_digest,
        requested_ttl_seconds=row.requested_ttl_seconds,
        data_volume_bytes=row.data_volume_bytes,
        on_behalf_of=row.on_behalf_of,
        parent_request_id=row.parent_request_id,
        break_glass=row.break_glass,
        rule=row.rule,
        tier=Tier(row.tier),
        reasons=tuple(json.loads(row.reasons)),
        policy_digest=row.policy_digest,
        terms=Terms.from_json(row.terms),
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
        decided_at=row.decided_at,
        outcome=row.outcome,
        outcome_detail=row.outcome_detail,
        status_reason=row.status_reason,
        votes=tuple(
            VoteInfo(
                v.approver_slack_id,
                v.approver_email,
                v.approver_name,
                v.vote,
                v.reason,
                v.created_at,
            )
            for v in votes
        ),
        credential=(
            CredentialInfo(
                credential.jti,
                credential.expires_at,
                credential.revoked_at,
                credential.revoke_reason,
            )
            if credential is not None
            else None
        ),
        next_escalation_at=row.next_escalation_at,
        escalation_stage=row.escalation_stage,
        break_glass_reviewed_at=row.break_glass_reviewed_at,
        break_glass_reviewed_by=row.break_glass_reviewed_by,
    )


def due_ids(session: Session, now: datetime, *, limit: int = 500) -> list[tuple[str, str]]:
    """(id, status) of requests whose deadline has passed, via the (status, deadline) indexes."""
    due: list[tuple[str, str]] = []
    for status in (Status.PENDING, Status.APPROVED):
        due.extend(
            (rid, status.value)
            for rid in session.execute(
                select(RequestRow.id)
                .where(RequestRow.status == status.value, RequestRow.expires_at <= now)
                .order_by(RequestRow.expires_at)
                .limit(limit)
            ).scalars()
        )
    due.extend(
        (rid, Status.ACTIVE.value)
        for rid in session.execute(
            select(RequestRow.id)
            .where(
                RequestRow.status == Status.ACTIVE.value, RequestRow.credential_expires_at <= now
            )
            .order_by(RequestRow.credential_expires_at)
            .limit(limit)
        ).scalars()
    )
    return due


def list_rows(
    session: Session,
    *,
    status: Sequence[str] | None = None,
    agent_id: str | None = None,
    limit: int = 100,
) -> list[RequestRow]:
    query = select(RequestRow).order_by(RequestRow.created_at.desc()).limit(limit)
    if status:
        query = query.where(RequestRow.status.in_(list(status)))
    if agent_id:
        query = query.where(RequestRow.agent_id == agent_id)
    return list(session.execute(query).scalars())


def revoke_credential_rows(
    session: Session, jtis: Sequence[str], *, now: datetime, reason: str
) -> set[str]:
    """Put credentials on the revocation list; returns the jtis that were not yet there."""
    if not jtis:
        return set()
    result = session.execute(
        update(CredentialRow)
        .where(CredentialRow.jti.in_(jtis), CredentialRow.revoked_at.is_(None))
        .values(revoked_at=now, revoke_reason=reason)
        .returning(CredentialRow.jti)
        .execution_options(synchronize_session=False)
    )
    return set(result.scalars())


def next_deadline(session: Session) -> datetime | None:
    """The earliest deadline of any live request: each MIN is one seek in its (status, …) index."""
    found = [
        session.execute(select(func.min(column)).where(RequestRow.status == status.value)).scalar()
        for status, column in (
            (Status.PENDING, RequestRow.expires_at),
            (Status.APPROVED, RequestRow.expires_at),
            (Status.ACTIVE, RequestRow.credential_expires_at),
            (Status.PENDING, RequestRow.next_escalation_at),
        )
    ]
    present = [at for at in found if at is not None]
    return min(present) if present else None
