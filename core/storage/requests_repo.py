"""Requests, their votes and credentials in SQL, read as snapshots and changed with a
compare-and-set on the version. Hot statements are prebuilt Core: no ORM instances."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from core.audit.events import AuditKind
from core.errors import Conflict, DuplicateIdempotencyKey, DuplicateVote, NotFound
from core.model import ActionClass, Status, Tier
from core.snapshots import CredentialInfo, RequestSnapshot, VoteInfo
from core.storage.audit_store import first_logged_data
from core.storage.tables import (
    AgentRow,
    CredentialRow,
    RequestRow,
    RevocationRow,
    VoteRow,
)
from core.store import LiveCredential, NewCredential, NewVote
from core.terms import Terms

_REQUESTS = cast(Table, RequestRow.__table__)
_VOTES = cast(Table, VoteRow.__table__)
_CREDENTIALS = cast(Table, CredentialRow.__table__)
_INSERT_REQUEST = _REQUESTS.insert()
_AGENTS = cast(Table, AgentRow.__table__)
# The agent's row, locked until the transaction ends (PostgreSQL; SQLite ignores FOR UPDATE,
# its write transactions are already serialised by BEGIN IMMEDIATE).
_LOCK_AGENT = select(_AGENTS.c.id).where(_AGENTS.c.id == bindparam("agent_id")).with_for_update()
_PENDING_OF_AGENT = (
    select(func.count())
    .select_from(_REQUESTS)
    .where(_REQUESTS.c.agent_id == bindparam("agent_id"), _REQUESTS.c.status == "pending")
)
# How each database names the idempotency key's unique constraint in its error.
_IDEMPOTENCY = ("uq_requests_idempotency", "requests.idempotency_key")
_INSERT_VOTE = _VOTES.insert()
_INSERT_CREDENTIAL = _CREDENTIALS.insert()
# What each column holds when an insert leaves it out: its scalar default, else NULL.
_COLUMN_DEFAULTS: dict[str, Any] = {
    column.key: column.default.arg
    if isinstance(column.default, ScalarElementColumnDefault)
    else None
    for column in _REQUESTS.columns
}


def load(
    session: Session, request_id: str, *, agent_id: str | None = None, lock: bool = False
) -> RequestSnapshot:
    """The request; NotFound when absent or owned by another agent (the two look alike)."""
    query = select(_REQUESTS).where(_REQUESTS.c.id == request_id)
    if lock:
        query = query.with_for_update()
    row = session.connection().execute(query).one_or_none()
    if row is None or (agent_id is not None and row.agent_id != agent_id):
        raise NotFound(f"no request {request_id}")
    return _with_details(session, [row])[0]


def load_many(
    session: Session, request_ids: Sequence[str], *, lock: bool = False
) -> list[RequestSnapshot]:
    """Those of ``request_ids`` that exist, in the order given. Locked rows are locked in id
    order, a fixed order, so two batches never deadlock."""
    query = select(_REQUESTS).where(_REQUESTS.c.id.in_(request_ids)).order_by(_REQUESTS.c.id)
    if lock:
        query = query.with_for_update()
    by_id = {row.id: row for row in session.connection().execute(query)}
    return _with_details(session, [by_id[i] for i in request_ids if i in by_id])


def find_by_idempotency_key(
    session: Session, agent_id: str, key: str
) -> tuple[RequestSnapshot, str] | None:
    row = (
        session.connection()
        .execute(
            select(_REQUESTS).where(
                _REQUESTS.c.agent_id == agent_id, _REQUESTS.c.idempotency_key == key
            )
        )
        .one_or_none()
    )
    if row is None:
        return None
    return _with_details(session, [row])[0], row.body_digest or ""


def insert_new(session: Session, values: Mapping[str, Any]) -> RequestSnapshot:
    """Insert a new request with one Core statement and return its snapshot, built from the
    values themselves: no read back, and no votes nor credential to look up."""
    try:
        session.connection().execute(_INSERT_REQUEST, dict(values))
    except IntegrityError as exc:
        # Only the idempotency key's own constraint means "the same key, just used".
        message = str(exc.orig)
        if values.get("idempotency_key") is None or not any(m in message for m in _IDEMPOTENCY):
            raise
        raise DuplicateIdempotencyKey("this Idempotency-Key was just used") from None
    return new_snapshot(values)


def new_snapshot(values: Mapping[str, Any]) -> RequestSnapshot:
    """The snapshot of a request just inserted with these column values (no votes yet, no
    credential), its other columns at their defaults."""
    # _snapshot only reads attributes; a namespace costs a fraction of an ORM instance.
    return _snapshot(SimpleNamespace(**(_COLUMN_DEFAULTS | dict(values))), (), None)


def _columns(changes: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot's changed fields as columns (the credential is two of them)."""
    columns = {k: v for k, v in changes.items() if k != "credential"}
    if "credential" in changes:
        credential: CredentialInfo | None = changes["credential"]
        columns["credential_jti"] = credential.jti if credential else None
        columns["credential_expires_at"] = credential.expires_at if credential else None
    return columns


def save(
    session: Session,
    changes: Sequence[tuple[RequestSnapshot, Mapping[str, Any]]],
    now: datetime,
) -> None:
    """Compare-and-set: each change applies only if its request is still at the snapshot's
    version; Conflict otherwise (then nothing of the transaction must be kept). One
    executemany per set of columns. This is where racing callers are decided."""
    groups: dict[tuple[str, ...], list[tuple[RequestSnapshot, dict[str, Any]]]] = defaultdict(list)
    for snap, values in changes:
        columns = _columns(values)
        groups[tuple(sorted(columns))].append((snap, columns))
    for names, group in groups.items():
        statement = (
            update(_REQUESTS)
            .where(
                _REQUESTS.c.id == bindparam("b_id"),
                _REQUESTS.c.version == bindparam("b_version"),
            )
            .values(
                version=bindparam("b_new_version"),
                updated_at=now,
                **{c: bindparam(f"b_{c}", type_=_REQUESTS.c[c].type) for c in names},
            )
        )
        result = session.connection().execute(
            statement,
            [
                {"b_id": snap.id, "b_version": snap.version, "b_new_version": snap.version + 1}
                | {f"b_{c}": value for c, value in columns.items()}
                for snap, columns in group
            ],
        )
        if result.rowcount != len(group):
            raise Conflict("a request changed concurrently; read it again")


def add_vote(session: Session, request_id: str, new: NewVote) -> None:
    vote = new.vote
    try:  # one vote per person: a racing duplicate fails here, and its transaction with it
        session.connection().execute(
            _INSERT_VOTE,
            {
                "request_id": request_id,
                "approver_slack_id": vote.slack_user_id,
                "approver_email": vote.email,
                "approver_name": vote.name,
                "vote": vote.vote,
                "reason": vote.reason,
                "created_at": vote.at,
                "signature": new.signature,
            },
        )
    except IntegrityError:
        raise DuplicateVote("your decision was already recorded") from None


def add_credential(session: Session, credential: NewCredential) -> None:
    session.connection().execute(
        _INSERT_CREDENTIAL,
        {
            "jti": credential.jti,
            "request_id": credential.request_id,
            "agent_id": credential.agent_id,
            "scope": credential.scope,
            "audience": credential.audience,
            "issued_at": credential.issued_at,
            "expires_at": credential.expires_at,
            "issuer": credential.issuer,
            "handle": credential.handle,
            "issuer_config": credential.issuer_config,
            "jkt": credential.jkt,
        },
    )


_LIVE_CREDENTIAL = select(
    _CREDENTIALS.c.agent_id,
    _CREDENTIALS.c.scope,
    _CREDENTIALS.c.audience,
    _CREDENTIALS.c.expires_at,
    _CREDENTIALS.c.jkt,
).where(_CREDENTIALS.c.jti == bindparam("jti"), _CREDENTIALS.c.revoked_at.is_(None))


def live_credential(session: Session, jti: str) -> LiveCredential | None:
    row = session.connection().execute(_LIVE_CREDENTIAL, {"jti": jti}).one_or_none()
    return None if row is None else LiveCredential(*row)


def revoke_credentials(
    session: Session,
    credentials: Sequence[tuple[str, str]],
    *,
    reason: str,
    now: datetime,
    builtin_settled: bool = False,
) -> set[str]:
    """The revocation list now (introspection answers inactive at once) and the issuer-side
    revocation queued, retried until it succeeds. Returns the jtis not yet on the list.
    ``builtin_settled``: a built-in JWT's (no issuer) is recorded done, with one attempt."""
    if not credentials:
        return set()
    revoked = {
        jti: (issuer, handle, config)
        for jti, issuer, handle, config in session.execute(
            update(CredentialRow)
            .where(
                CredentialRow.jti.in_([jti for _, jti in credentials]),
                CredentialRow.revoked_at.is_(None),
            )
            .values(revoked_at=now, revoke_reason=reason)
            .returning(
                CredentialRow.jti,
                CredentialRow.issuer,
                CredentialRow.handle,
                CredentialRow.issuer_config,
            )
            .execution_options(synchronize_session=False)
        ).all()
    }
    queued = [
        {
            "jti": jti,
            "request_id": request_id,
            "status": "done" if settled else "pending",
            "attempts": 1 if settled else 0,
            "next_attempt_at": now,
            "created_at": now,
            "done_at": now if settled else None,
            "issuer": revoked[jti][0],
            "handle": revoked[jti][1],
            "issuer_config": revoked[jti][2],
        }
        for request_id, jti in credentials
        if jti in revoked
        for settled in [builtin_settled and revoked[jti][0] is None]
    ]
    if queued:
        session.connection().execute(insert(RevocationRow), queued)
    return set(revoked)


def logged_terms(session: Session, request_id: str) -> dict[str, Any] | None:
    # Chained or still pending (PostgreSQL chains entries moments after their commit).
    data = first_logged_data(session, request_id, AuditKind.POLICY_DECIDED)
    if data is None:
        return None
    terms = json.loads(data).get("terms")
    return terms if isinstance(terms, dict) else None


def list_snapshots(
    session: Session,
    *,
    status: Sequence[str] | None = None,
    agent_id: str | None = None,
    limit: int = 100,
) -> list[RequestSnapshot]:
    query = select(_REQUESTS).order_by(_REQUESTS.c.created_at.desc()).limit(limit)
    if status:
        query = query.where(_REQUESTS.c.status.in_(list(status)))
    if agent_id:
        query = query.where(_REQUESTS.c.agent_id == agent_id)
    return _with_details(session, list(session.connection().execute(query)))


def _with_details(session: Session, rows: Sequence[Any]) -> list[RequestSnapshot]:
    """Snapshots of ``rows`` with their votes and credentials: two more queries in all."""
    if not rows:
        return []
    connection = session.connection()
    ids = [row.id for row in rows]
    votes: dict[str, list[Any]] = defaultdict(list)
    vote_query = select(_VOTES).order_by(_VOTES.c.id)
    vote_query = (
        vote_query.where(_VOTES.c.request_id == ids[0])
        if len(ids) == 1
        else vote_query.where(_VOTES.c.request_id.in_(ids))
    )
    for vote in connection.execute(vote_query):
        votes[vote.request_id].append(vote)
    jtis = [row.credential_jti for row in rows if row.credential_jti is not None]
    credentials = (
        {
            credential.jti: credential
            for credential in connection.execute(
                select(_CREDENTIALS).where(_CREDENTIALS.c.jti.in_(jtis))
            )
        }
        if jtis
        else {}
    )
    return [
        _snapshot(
            row,
            votes[row.id],
            credentials.get(row.credential_jti) if row.credential_jti is not None else None,
        )
        for row in rows
    ]


def _snapshot(row: Any, votes: Sequence[Any], credential: Any | None) -> RequestSnapshot:
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
        callback_url=row.callback_url,
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
        delegation_id=row.delegation_id,
        sponsor_verified=bool(row.sponsor_verified),
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


def due_escalation_ids(session: Session, now: datetime, *, limit: int = 500) -> list[str]:
    return list(
        session.execute(
            select(RequestRow.id)
            .where(
                RequestRow.status == Status.PENDING.value,
                RequestRow.next_escalation_at <= now,
            )
            .order_by(RequestRow.next_escalation_at)
            .limit(limit)
        ).scalars()
    )


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


def ids_of(session: Session, *, status: Sequence[str], agent_id: str, limit: int) -> list[str]:
    """Ids of an agent's requests in one of ``status``, newest first."""
    return list(
        session.execute(
            select(RequestRow.id)
            .where(RequestRow.status.in_(list(status)), RequestRow.agent_id == agent_id)
            .order_by(RequestRow.created_at.desc())
            .limit(limit)
        ).scalars()
    )


def pending_count(session: Session, agent_id: str) -> int:
    """Requests of ``agent_id`` pending, with the agent locked against other submissions
    until this transaction ends: two replicas cannot both pass a cap at its last place."""
    session.execute(_LOCK_AGENT, {"agent_id": agent_id})
    return int(session.execute(_PENDING_OF_AGENT, {"agent_id": agent_id}).scalar_one())
