"""The daily digest: what happened in a window, who holds access now, and the audit chain's head.

``build_digest`` reads; ``post_digest`` records the day in ``digests`` and queues the message
in the same transaction, so replicas that fire at once post each day's digest once. Core says
what the figures are; the Slack edge passes ``render_blocks`` to say how they look.

Windowed figures count events whose time falls in ``[start, now)``, and each posted digest
starts where the previous one ended, so consecutive digests neither miss nor repeat an event:
requests by their creation, decisions and denials by their decision time, expiries and refused
clicks by their audit entry.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.audit.chain import verify_chain
from core.audit.events import AuditKind
from core.audit.signatures import decision_signature_check
from core.errors import AuditChainBroken
from core.keys import KeyRing
from core.model import Status, Tier
from core.notices import Notices
from core.records import Terms
from core.storage.audit_store import chain_snapshot, iter_entries, read_head
from core.storage.database import Database
from core.storage.tables import AuditRow, DigestRow, RequestRow, RevocationRow, VoteRow

DAY = timedelta(hours=24)
MAX_WINDOW = timedelta(days=7)  # after a long outage, the digest covers at most a week
TOP = 5
REFUSAL_KINDS = ("ineligible", "sponsor", "owner")
# How a request ended up, in display order: the decision, not the lifecycle status.
OUTCOMES = ("allowed", "break-glass", "approved", "denied", "expired", "cancelled", "pending")
TIERS = tuple(t.value for t in Tier)
SLACK_TEXT_LIST_LIMIT = 20  # items per list in the Slack fallback text
SLACK_TEXT_MAX = 39_000  # Slack refuses a message text over 40,000 characters


@dataclass(frozen=True, slots=True)
class TierOutcome:
    tier: str
    outcome: str
    count: int


@dataclass(frozen=True, slots=True)
class DecisionTimes:
    """Seconds from submission to the approvers' decision; None when nothing was decided."""

    count: int
    median_seconds: float | None
    p95_seconds: float | None


@dataclass(frozen=True, slots=True)
class RequestRef:
    request_id: str
    agent: str
    action: str
    target: str
    environment: str
    tier: str


@dataclass(frozen=True, slots=True)
class Expired:
    request: RequestRef
    at: datetime
    was: str  # "pending" (nobody decided) or "approved" (the credential was never claimed)


@dataclass(frozen=True, slots=True)
class Denial:
    request: RequestRef
    at: datetime
    by: str  # an approver's email (or Slack id), or "policy"
    rule: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class RefusedClick:
    at: datetime
    request_id: str | None
    clicker: str | None
    why: str


@dataclass(frozen=True, slots=True)
class BreakGlassUse:
    request: RequestRef
    at: datetime
    rule: str | None
    status: str
    reviewed_by: str | None
    reviewed_at: datetime | None

    @property
    def reviewed(self) -> bool:
        return self.reviewed_at is not None


@dataclass(frozen=True, slots=True)
class RevocationFailure:
    jti: str
    request_id: str
    agent: str | None
    target: str | None
    attempts: int
    last_error: str | None
    since: datetime
    alerted_at: datetime | None


@dataclass(frozen=True, slots=True)
class ActiveCredential:
    request: RequestRef
    expires_at: datetime
    rule: str | None
    approvers: tuple[str, ...]  # empty when the policy allowed it without approval


@dataclass(frozen=True, slots=True)
class AuditStatus:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Digest:
    window_start: datetime
    window_end: datetime
    requests: tuple[TierOutcome, ...]
    decision_times: DecisionTimes
    expired: tuple[Expired, ...]
    denials: tuple[Denial, ...]
    refused_clicks: tuple[RefusedClick, ...]
    break_glass: tuple[BreakGlassUse, ...]
    revocation_failures: tuple[RevocationFailure, ...]
    active_credentials: tuple[ActiveCredential, ...]
    top_agents: tuple[tuple[str, int], ...]
    top_targets: tuple[tuple[str, int], ...]
    audit: AuditStatus

    @property
    def total_requests(self) -> int:
        return sum(c.count for c in self.requests)

    @property
    def refused_by_kind(self) -> dict[str, int]:
        counts = dict.fromkeys(REFUSAL_KINDS, 0)
        for click in self.refused_clicks:
            counts[click.why] = counts.get(click.why, 0) + 1
        return counts


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
        audit=audit_status(session, keyring),
    )


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
        )
        for row in rows
    )


def audit_status(session: Session, keyring: KeyRing) -> AuditStatus:
    """Verify the whole chain and every signed decision; report rather than raise."""
    head_seq, head_hash = read_head(session)
    entries = session.execute(select(func.count()).select_from(AuditRow)).scalar_one()
    try:
        verify_chain(
            iter_entries(session),
            head=(head_seq, head_hash),
            check_signature=decision_signature_check(keyring),
        )
    except AuditChainBroken as broken:
        return AuditStatus(False, entries, head_seq, head_hash, broken.seq, broken.detail)
    return AuditStatus(True, entries, head_seq, head_hash)


# -- text -------------------------------------------------------------------------------------


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def format_time(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at is not None else "—"


def describe(ref: RequestRef) -> str:
    return f"{ref.request_id} {ref.agent} {ref.action} on {ref.target} ({ref.environment})"


def expired_line(item: Expired) -> str:
    why = "nobody decided in time" if item.was == "pending" else "approved but never claimed"
    return f"{describe(item.request)}: {why}, at {format_time(item.at)}"


def denial_line(item: Denial) -> str:
    by = f"policy rule {item.rule}" if item.by == "policy" and item.rule else item.by
    if item.by == "policy" and not item.rule:
        by = "policy (no rule matched)"
    return f"{describe(item.request)}, by {by}: {item.reason}"


def refused_line(item: RefusedClick) -> str:
    return f"{format_time(item.at)} {item.clicker or '?'} on {item.request_id or '?'}: {item.why}"


def break_glass_line(item: BreakGlassUse) -> str:
    review = (
        f"reviewed by {item.reviewed_by or '?'} at {format_time(item.reviewed_at)}"
        if item.reviewed
        else "UNREVIEWED"
    )
    return (
        f"{describe(item.request)} at {format_time(item.at)}, rule {item.rule or '—'}, "
        f"now {item.status} — {review}"
    )


def revocation_line(item: RevocationFailure) -> str:
    who = f" ({item.agent} on {item.target})" if item.agent else ""
    alerted = f", alerted {format_time(item.alerted_at)}" if item.alerted_at else ", not alerted"
    return (
        f"credential {item.jti} of {item.request_id}{who}: {item.attempts} failed attempt(s) "
        f"since {format_time(item.since)}, last error: {item.last_error or '—'}{alerted}"
    )


def active_line(item: ActiveCredential) -> str:
    by = (
        "approved by " + ", ".join(item.approvers)
        if item.approvers
        else f"no approval needed (rule {item.rule or '—'})"
    )
    return f"{describe(item.request)} until {format_time(item.expires_at)}, {by}"


def audit_line(audit: AuditStatus) -> str:
    if audit.ok:
        return f"intact — {audit.entries} entries, head {audit.head_seq} {audit.head_hash}"
    return (
        f"BROKEN at {audit.problem} — {audit.entries} entries, "
        f"recorded head {audit.head_seq} {audit.head_hash}"
    )


def request_lines(digest: Digest) -> list[str]:
    lines = []
    for tier in TIERS:
        counts = [c for c in digest.requests if c.tier == tier]
        if counts:
            lines.append(f"{tier}: " + ", ".join(f"{c.outcome} {c.count}" for c in counts))
    return lines


def decision_line(times: DecisionTimes) -> str:
    if not times.count:
        return "no request was decided by approvers"
    return (
        f"{times.count} decided by approvers: median {format_seconds(times.median_seconds)}, "
        f"p95 {format_seconds(times.p95_seconds)}"
    )


def top_line(items: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{name} {count}" for name, count in items) or "—"


def _listed(title: str, lines: list[str], limit: int | None) -> list[str]:
    out = [f"{title} ({len(lines)}):" if lines else f"{title}: none"]
    shown = lines if limit is None else lines[:limit]
    out += [f"  - {line}" for line in shown]
    if len(shown) < len(lines):
        out.append(f"  … and {len(lines) - len(shown)} more")
    return out


def render_text(digest: Digest, *, limit: int | None = None) -> str:
    """The digest as plain text: ``stepup digest --print`` and Slack's fallback text.

    ``limit`` caps each list (the rest is counted as "… and N more"); None shows everything.
    """
    d = digest
    refused = ", ".join(f"{why} {n}" for why, n in d.refused_by_kind.items())
    lines = [
        f"stepup digest {format_time(d.window_start)} to {format_time(d.window_end)}",
        f"Audit chain: {audit_line(d.audit)}",
        f"Requests: {d.total_requests}",
        *(f"  {line}" for line in request_lines(d)),
        f"Time to decision: {decision_line(d.decision_times)}",
        *_listed("Expired", [expired_line(e) for e in d.expired], limit),
        *_listed("Denials", [denial_line(e) for e in d.denials], limit),
        *_listed(f"Refused clicks [{refused}]", [refused_line(e) for e in d.refused_clicks], limit),
        *_listed("Break-glass uses", [break_glass_line(e) for e in d.break_glass], limit),
        *_listed("Revocation failures", [revocation_line(e) for e in d.revocation_failures], limit),
        *_listed("Active credentials now", [active_line(e) for e in d.active_credentials], limit),
        f"Top agents: {top_line(d.top_agents)}",
        f"Top targets: {top_line(d.top_targets)}",
    ]
    return "\n".join(lines) + "\n"


# -- posting ----------------------------------------------------------------------------------


BlockRenderer = Callable[[Digest], list[dict[str, Any]]]


def digest_day(now: datetime, timezone: str) -> str:
    """The calendar day of ``now`` in ``timezone``: the key that makes a digest once a day."""
    return now.astimezone(ZoneInfo(timezone)).date().isoformat()


def post_digest(
    db: Database,
    keyring: KeyRing,
    *,
    now: datetime,
    timezone: str,
    channel: str,
    render_blocks: BlockRenderer | None = None,
    window: timedelta | None = None,
) -> bool:
    """Queue the day's digest for ``channel``; False when this day's digest already exists.

    The day's row and the outbox entry are written in one transaction: the row's primary key
    lets exactly one replica commit, and a crash leaves either both or neither. By default the
    window starts where the previous digest ended (24 h when there is none), so days of 23 or
    25 hours around a DST change, or a digest posted early with ``--now``, miss nothing.
    """
    day = digest_day(now, timezone)
    with db.read() as session:
        if session.get(DigestRow, day) is not None:
            return False
        previous = session.execute(
            select(func.max(DigestRow.created_at)).where(DigestRow.created_at < now)
        ).scalar_one()
    if window is None:
        window = min(now - previous, MAX_WINDOW) if previous is not None else DAY
    with chain_snapshot(db) as session:
        digest = build_digest(session, keyring, now=now, window=window)
    text = render_text(digest, limit=SLACK_TEXT_LIST_LIMIT)
    if len(text) > SLACK_TEXT_MAX:
        text = text[: SLACK_TEXT_MAX - 1] + "…"
    blocks = json.dumps(render_blocks(digest)) if render_blocks is not None else ""
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
            Notices(session, now).channel(None, channel, text, blocks=blocks)
    except IntegrityError:
        return False
    return True
