"""The requests, their votes and credentials, and their audit entries, read in batches for
the cross-check (``core/audit/crosscheck.py``): memory stays one batch of requests.

Requests are read in id order a batch at a time (keyset, so the database orders and
compares the ids), each batch with its entries, votes and credentials in three more
queries; one last query finds entries whose request does not exist. Run it in the read
snapshot the chain was verified in, so rows and entries are of one moment.

A request with entries still pending (written, not yet chained: PostgreSQL) is not compared:
its row already shows changes whose entries the chain does not hold yet, and a pending
entry is evidence of nothing. It is counted as such (``pending``), never as matching.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, exists, func, select
from sqlalchemy.orm import Session

from core.audit.chain import AuditEntry
from core.audit.crosscheck import (
    INTENT_FIELDS,
    Mismatch,
    StoredCredential,
    StoredRequest,
    StoredVote,
    compare,
)
from core.audit.replay import Replayed, replay
from core.keys import KeyRing
from core.storage.audit_store import ENTRY_COLUMNS
from core.storage.tables import AuditRow, CredentialRow, RequestRow, VoteRow

REQUEST_BATCH = 500
KEEP = 100  # mismatches kept for the report; the rest are counted

_REQUESTS = cast(Table, RequestRow.__table__)
_AUDIT = cast(Table, AuditRow.__table__)
_VOTES = cast(Table, VoteRow.__table__)
_CREDENTIALS = cast(Table, CredentialRow.__table__)
_COLUMN = {name: ("agent_id" if name == "agent" else name) for name in INTENT_FIELDS}
_REQUEST_COLUMNS = [
    _REQUESTS.c.id,
    _REQUESTS.c.status,
    _REQUESTS.c.parameters,
    _REQUESTS.c.credential_jti,
    _REQUESTS.c.credential_expires_at,
    _REQUESTS.c.break_glass_reviewed_by,
    _REQUESTS.c.rule,
    _REQUESTS.c.tier,
    _REQUESTS.c.reasons,
    _REQUESTS.c.policy_digest,
    _REQUESTS.c.terms,
    *(_REQUESTS.c[column] for column in _COLUMN.values()),
]


@dataclass(frozen=True, slots=True)
class CrossCheckReport:
    requests: int  # requests compared
    mismatches: tuple[Mismatch, ...]  # the first ``KEEP``
    total: int  # mismatches in all
    pending: int = 0  # requests not compared: some of their entries are not yet chained

    @property
    def ok(self) -> bool:
        return self.total == 0


def crosscheck_requests(
    session: Session,
    keyring: KeyRing | None,
    *,
    batch: int = REQUEST_BATCH,
    keep: int = KEEP,
    pending: Collection[str] = (),
) -> CrossCheckReport:
    """Compare every stored request with its replayed entries, and report entries of
    requests that do not exist. Requests in ``pending`` (with entries not yet chained) are
    counted, not compared."""
    kept: list[Mismatch] = []
    total = requests = skipped = 0

    def found(mismatch: Mismatch) -> None:
        nonlocal total
        total += 1
        if len(kept) < keep:
            kept.append(mismatch)

    last = ""
    while True:
        rows = session.execute(
            select(*_REQUEST_COLUMNS)
            .where(_REQUESTS.c.id > last)
            .order_by(_REQUESTS.c.id)
            .limit(batch)
        ).all()
        if not rows:
            break
        last = rows[-1].id
        if pending:
            compared = [row for row in rows if row.id not in pending]
            skipped += len(rows) - len(compared)
            rows = compared
        requests += len(rows)
        if rows:
            for mismatch in _check_batch(session, rows, keyring):
                found(mismatch)
    for request_id, first_seq in session.execute(_orphans()):
        for mismatch in compare(Replayed(request_id, first_seq), None, keyring):
            found(mismatch)
    return CrossCheckReport(requests, tuple(kept), total, pending=skipped)


def _check_batch(session: Session, rows: Sequence[Any], keyring: KeyRing | None) -> list[Mismatch]:
    ids = [row.id for row in rows]
    entries: dict[str, list[AuditEntry]] = defaultdict(list)
    for entry in session.execute(
        select(*ENTRY_COLUMNS).where(_AUDIT.c.request_id.in_(ids)).order_by(_AUDIT.c.seq)
    ):
        entries[entry.request_id].append(AuditEntry(*entry))
    votes: dict[str, list[StoredVote]] = defaultdict(list)
    for vote in session.execute(
        select(
            _VOTES.c.request_id,
            _VOTES.c.approver_slack_id,
            _VOTES.c.approver_email,
            _VOTES.c.vote,
            _VOTES.c.signature,
        )
        .where(_VOTES.c.request_id.in_(ids))
        .order_by(_VOTES.c.id)
    ):
        votes[vote.request_id].append(StoredVote(*vote[1:]))
    credentials: dict[str, list[StoredCredential]] = defaultdict(list)
    for credential in session.execute(
        select(
            _CREDENTIALS.c.request_id,
            _CREDENTIALS.c.jti,
            _CREDENTIALS.c.agent_id,
            _CREDENTIALS.c.scope,
            _CREDENTIALS.c.audience,
            _CREDENTIALS.c.expires_at,
            _CREDENTIALS.c.revoked_at,
        ).where(_CREDENTIALS.c.request_id.in_(ids))
    ):
        credentials[credential.request_id].append(
            StoredCredential(*credential[1:6], revoked=credential.revoked_at is not None)
        )
    found: list[Mismatch] = []
    for row in rows:
        stored = StoredRequest(
            id=row.id,
            status=row.status,
            intent={name: row._mapping[column] for name, column in _COLUMN.items()},
            parameters=row.parameters,
            credential_jti=row.credential_jti,
            credential_expires_at=row.credential_expires_at,
            reviewed_by=row.break_glass_reviewed_by,
            votes=tuple(votes.get(row.id, ())),
            credentials=tuple(credentials.get(row.id, ())),
            decision={
                "rule": row.rule,
                "tier": row.tier,
                "reasons": _parsed(row.reasons),
                "policy_digest": row.policy_digest,
                "terms": _parsed(row.terms),
            },
        )
        found.extend(compare(replay(row.id, entries.get(row.id, ())), stored, keyring))
    return found


def _orphans() -> Any:
    """Each request id the log names that no request row has, with its first entry."""
    first = func.min(_AUDIT.c.seq)
    return (
        select(_AUDIT.c.request_id, first)
        .where(
            _AUDIT.c.request_id.is_not(None),
            ~exists().where(_REQUESTS.c.id == _AUDIT.c.request_id),
        )
        .group_by(_AUDIT.c.request_id)
        .order_by(first)
    )


def _parsed(text: str | None) -> Any:
    """A JSON column's value; the text itself when it is not JSON (then it differs)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
