"""The digest as plain text (``--print`` and Slack's fallback text)."""

from __future__ import annotations

from datetime import datetime

from core.digest.model import (
    TIERS,
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
)


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


def minute_utc(at: datetime | None) -> str:
    """To the minute, for people reading the digest (``—`` when there is no time)."""
    return at.strftime("%Y-%m-%d %H:%M UTC") if at is not None else "—"


def describe(ref: RequestRef) -> str:
    return f"{ref.request_id} {ref.agent} {ref.action} on {ref.target} ({ref.environment})"


def expired_line(item: Expired) -> str:
    why = "nobody decided in time" if item.was == "pending" else "approved but never claimed"
    return f"{describe(item.request)}: {why}, at {minute_utc(item.at)}"


def denial_line(item: Denial) -> str:
    by = f"policy rule {item.rule}" if item.by == "policy" and item.rule else item.by
    if item.by == "policy" and not item.rule:
        by = "policy (no rule matched)"
    return f"{describe(item.request)}, by {by}: {item.reason}"


def refused_line(item: RefusedClick) -> str:
    return f"{minute_utc(item.at)} {item.clicker or '?'} on {item.request_id or '?'}: {item.why}"


def break_glass_line(item: BreakGlassUse) -> str:
    review = (
        f"reviewed by {item.reviewed_by or '?'} at {minute_utc(item.reviewed_at)}"
        if item.reviewed
        else "UNREVIEWED"
    )
    return (
        f"{describe(item.request)} at {minute_utc(item.at)}, rule {item.rule or '—'}, "
        f"now {item.status} — {review}"
    )


def revocation_line(item: RevocationFailure) -> str:
    who = f" ({item.agent} on {item.target})" if item.agent else ""
    alerted = f", alerted {minute_utc(item.alerted_at)}" if item.alerted_at else ", not alerted"
    return (
        f"credential {item.jti} of {item.request_id}{who}: {item.attempts} failed attempt(s) "
        f"since {minute_utc(item.since)}, last error: {item.last_error or '—'}{alerted}"
    )


def active_line(item: ActiveCredential) -> str:
    by = (
        "approved by " + ", ".join(item.approvers)
        if item.approvers
        else f"no approval needed (rule {item.rule or '—'})"
    )
    return f"{describe(item.request)} until {minute_utc(item.expires_at)}, {by}"


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
        f"stepup digest {minute_utc(d.window_start)} to {minute_utc(d.window_end)}",
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
