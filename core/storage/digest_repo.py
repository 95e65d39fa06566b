"""The digest in SQL: the figures of a window, read in one snapshot, and the record of each
day's posted digest."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.audit.checkpoints import Checkpoint, verify_checkpoint
from core.audit.events import AuditKind
from core.digest.model import (
    DAY,
    OUTCOMES,
    TIERS,
    TOP,
    ActiveCredential,
    AuditStatus,
    BreakGlassUse,
    DecisionTimes,
    Denial,
    Digest,
    Expired,
    RefusedClick,
    RequestRef,
    RevocationFailure,
    TierOutcome,
)
from core.errors import AuditChainBroken, InvalidToken
from core.keys import KeyRing
from core.model import Status
from core.storage import agents_repo, outbox_repo
from core.storage.audit_store import (
    PENDING_STALE,
    chain_snapshot,
    latest_checkpoint,
    pending_entries,
    read_head,
)
from core.storage.audit_verify import verify_in_snapshot
from core.storage.database import Database
from core.storage.sql_store import SqlOutbox
from core.storage.tables import AgentRow, AuditRow, DigestRow, RequestRow, RevocationRow, VoteRow
from core.store import OutboxSink
from core.terms import Terms


def _ref(row: RequestRow) -> RequestRef:
    return RequestRef(row.id, row.agent_id, row.action, row.target, row.environment, row.tier)


def outcome_of(row: RequestRow, terms: Terms) -> str:
    status = Status(row.status)
    if status is Status.PENDING:
        return "pending"
    if status is Status.DENIED:
        return "denied"
    if row.decided_at is None:  # ended before anyone decided
        return "expired" if status is Status.EXPIRED else "cancelled"
    if terms.break_glass:
        return "break-glass"
    return "approved" if terms.approver_groups else "allowed"


def percentiles(values: list[float]) -> DecisionTimes:
    """Median and 95th percentile (linear interpolation between closest ranks)."""
    if not values:
        return DecisionTimes(0, None, None)
    if len(values) == 1:
        return DecisionTimes(1, values[0], values[0])
    p95 = statistics.quantiles(values, n=100, method="inclusive")[94]
    return DecisionTimes(len(values), statistics.median(values), p95)


Window = Callable[[Any], Any]  # column -> "the column's time is in the digest's window"


def _top(names: Iterable[str]) -> tuple[tuple[str, int], ...]:
    counted = Counter(names)
    return tuple(sorted(counted.items(), key=lambda item: (-item[1], item[0]))[:TOP])


def read_digest(
    db: Database, keyring: KeyRing, *, now: datetime, window: timedelta = DAY
) -> Digest:
    """``build_digest`` over one snapshot of ``db``, so the audit figures hold together."""
    with chain_snapshot(db) as session:
        return build_digest(session, keyring, now=now, window=window)


def build_digest(
    session: Session, keyring: KeyRing, *, now: datetime, window: timedelta = DAY
) -> Digest:
    """The figures for ``[now - window, now)``, and the state at ``now``.

    Pass a session from ``chain_snapshot`` so the audit head and entries come from one
    snapshot (on PostgreSQL an entry appended mid-walk would otherwise look like tampering).
    """
    start = now - window

    def in_window(column: Any) -> Any:
        return (column >= start) & (column < now)

    created = list(
        session.execute(
            select(RequestRow)
            .where(in_window(RequestRow.created_at))
            .order_by(RequestRow.created_at)
        ).scalars()
    )
    tally: Counter[tuple[str, str]] = Counter()
    break_glass: list[BreakGlassUse] = []
    for row in created:
        terms = Terms.from_json(row.terms)
        tally[(row.tier, outcome_of(row, terms))] += 1
        if row.break_glass and terms.break_glass:
            break_glass.append(
                BreakGlassUse(
                    _ref(row),
                    row.created_at,
                    row.rule,
                    row.status,
                    row.break_glass_reviewed_by,
                    row.break_glass_reviewed_at,
                )
            )
    requests = tuple(
        TierOutcome(tier, outcome, tally[(tier, outcome)])
        for tier in TIERS
        for outcome in OUTCOMES
        if tally[(tier, outcome)]
    )
    return Digest(
        window_start=start,
        window_end=now,
        requests=requests,
        decision_times=_decision_times(session, in_window),
        expired=_expired(session, in_window),
        denials=_denials(session, in_window),
        refused_clicks=_refused(session, in_window),
        break_glass=tuple(break_glass),
        revocation_failures=_revocation_failures(session),
        active_credentials=_active(session, now),
        top_agents=_top(row.agent_id for row in created),
        top_targets=_top(row.target for row in created),
        audit=audit_status(session, keyring, now),
        checkpoint=verified_checkpoint(session, keyring),
        static_key_agents=static_key_agents(session, now),
        **_callback_dead_letters(session, start, now),
    )


CALLBACKS_SHOWN = 5  # request ids of the latest callbacks given up on


def _callback_dead_letters(session: Session, start: datetime, now: datetime) -> dict[str, Any]:
    count, latest = outbox_repo.given_up(
        session, callbacks=True, start=start, end=now, recent=CALLBACKS_SHOWN
    )
    return {"callback_dead_letters": count, "callback_dead_requests": latest}


def static_key_agents(session: Session, now: datetime) -> int:
    """Enabled agents with a static key that works at ``now``."""
    live = agents_repo.live_key_counts(session, now)
    enabled = session.execute(select(AgentRow.id).where(AgentRow.disabled.is_(False))).scalars()
    return sum(1 for agent_id in enabled if live.get(agent_id))


def _decision_times(session: Session, in_window: Window) -> DecisionTimes:
    # Decided by people: a vote exists. Policy decisions (allow, deny, break-glass) take no time.
    voted = exists().where(VoteRow.request_id == RequestRow.id)
    rows = session.execute(
        select(RequestRow.created_at, RequestRow.decided_at).where(
            in_window(RequestRow.decided_at), voted
        )
    ).all()
    return percentiles(
        sorted((decided - created).total_seconds() for created, decided in rows if decided)
    )


def _expired(session: Session, in_window: Window) -> tuple[Expired, ...]:
    rows = session.execute(
        select(AuditRow.at, AuditRow.data, RequestRow)
        .join(RequestRow, RequestRow.id == AuditRow.request_id)
        .where(AuditRow.kind == AuditKind.REQUEST_EXPIRED.value, in_window(AuditRow.at))
        .order_by(AuditRow.seq)
    ).all()
    return tuple(
        Expired(_ref(row), at, str(json.loads(data).get("was", ""))) for at, data, row in rows
    )


def _denials(session: Session, in_window: Window) -> tuple[Denial, ...]:
    rows = list(
        session.execute(
            select(RequestRow)
            .where(RequestRow.status == Status.DENIED.value, in_window(RequestRow.decided_at))
            .order_by(RequestRow.decided_at, RequestRow.id)
        ).scalars()
    )
    deniers: dict[str, str] = {}
    if rows:
        for request_id, email, slack_id in session.execute(
            select(VoteRow.request_id, VoteRow.approver_email, VoteRow.approver_slack_id).where(
                VoteRow.vote == "deny", VoteRow.request_id.in_([r.id for r in rows])
            )
        ):
            deniers[request_id] = email or slack_id
    denials = []
    for row in rows:
        reasons = json.loads(row.reasons)
        reason = row.status_reason or (reasons[0] if reasons else "")
        at = row.decided_at or row.updated_at
        denials.append(Denial(_ref(row), at, deniers.get(row.id, "policy"), row.rule, reason))
    return tuple(denials)


def _refused(session: Session, in_window: Window) -> tuple[RefusedClick, ...]:
    rows = session.execute(
        select(AuditRow.at, AuditRow.request_id, AuditRow.actor, AuditRow.data)
        .where(AuditRow.kind == AuditKind.CLICK_REFUSED.value, in_window(AuditRow.at))
        .order_by(AuditRow.seq)
    ).all()
    return tuple(
        RefusedClick(at, request_id, actor, str(json.loads(data).get("why", "")))
        for at, request_id, actor, data in rows
    )


def _revocation_failures(session: Session) -> tuple[RevocationFailure, ...]:
    rows = session.execute(
        select(RevocationRow, RequestRow.agent_id, RequestRow.target)
        .outerjoin(RequestRow, RequestRow.id == RevocationRow.request_id)
        .where(RevocationRow.status == "pending", RevocationRow.attempts > 0)
        .order_by(RevocationRow.created_at, RevocationRow.jti)
    ).all()
    return tuple(
        RevocationFailure(
            r.jti, r.request_id, agent, target, r.attempts, r.last_error, r.created_at, r.alerted_at
        )
        for r, agent, target in rows
    )


def _active(session: Session, now: datetime) -> tuple[ActiveCredential, ...]:
    rows = list(
        session.execute(
            select(RequestRow)
            .where(RequestRow.status == Status.ACTIVE.value, RequestRow.credential_expires_at > now)
            .order_by(RequestRow.credential_expires_at, RequestRow.id)
        ).scalars()
    )
    approvers: dict[str, set[str]] = {}
    if rows:
        for request_id, email, slack_id in session.execute(
            select(VoteRow.request_id, VoteRow.approver_email, VoteRow.approver_slack_id).where(
                VoteRow.vote == "approve", VoteRow.request_id.in_([r.id for r in rows])
            )
        ):
            approvers.setdefault(request_id, set()).add(email or slack_id)
    return tuple(
        ActiveCredential(
            _ref(row),
            row.credential_expires_at or now,
            row.rule,
            tuple(sorted(approvers.get(row.id, ()))),
            Terms.from_json(row.terms).issuer or "jwt",
        )
        for row in rows
    )


def audit_status(session: Session, keyring: KeyRing, now: datetime) -> AuditStatus:
    """``stepup audit verify`` in this snapshot: the chain, every signed decision and
    checkpoint, every request against its entries, and the entries still waiting to be
    chained; report rather than raise."""
    head_seq, head_hash = read_head(session)
    entries = session.execute(select(func.count()).select_from(AuditRow)).scalar_one()
    try:
        verified = verify_in_snapshot(session, keyring)
    except AuditChainBroken as broken:
        status = AuditStatus(False, entries, head_seq, head_hash, broken.seq, broken.detail)
        pending = pending_entries(session)
    else:
        requests = verified.requests
        status = AuditStatus(requests.ok, entries, head_seq, head_hash, differences=requests.total)
        pending = verified.pending  # verify counted them already
    oldest = pending.oldest_at
    return replace(
        status,
        pending=pending.count,
        oldest_pending_at=oldest,
        pending_stale=oldest is not None and now - oldest > PENDING_STALE,
    )


def verified_checkpoint(session: Session, keyring: KeyRing) -> Checkpoint | None:
    """The latest checkpoint entry's checkpoint, if its signature holds (a forged one is
    not shown; the audit status reports it)."""
    latest = latest_checkpoint(session)
    if latest is None:
        return None
    try:
        return verify_checkpoint(latest.signed, keyring)
    except InvalidToken:
        return None


# -- text -------------------------------------------------------------------------------------


def already_posted(db: Database, day: str, now: datetime) -> tuple[bool, datetime | None]:
    """Whether ``day``'s digest exists, and when the last digest before ``now`` was made."""
    with db.read() as session:
        if session.get(DigestRow, day) is not None:
            return True, None
        previous = session.execute(
            select(func.max(DigestRow.created_at)).where(DigestRow.created_at < now)
        ).scalar_one()
    return False, previous


def record_posted(
    db: Database, day: str, digest: Digest, now: datetime, queue: Callable[[OutboxSink], None]
) -> bool:
    """Record ``day``'s digest and queue its message in one transaction; False when another
    replica recorded the day first (the row's primary key lets exactly one commit)."""
    try:
        with db.write() as session:
            session.add(
                DigestRow(
                    day=day,
                    created_at=now,
                    head_seq=digest.audit.head_seq,
                    head_hash=digest.audit.head_hash,
                )
            )
            session.flush()  # a replica that got there first makes this fail
            queue(SqlOutbox(session))
    except IntegrityError:
        return False
    return True
