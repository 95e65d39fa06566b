"""The digest as plain text (``--print`` and Slack's fallback text)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from core.audit.checkpoints import Checkpoint
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


LINE_BREAKS = ("\r\n", "\n", "\r", "\u2028", "\u2029", "\x0b", "\x0c", "\x85")
NEWLINE_MARK = "\u21b5"  # ↵: a value written over several lines stays on its item's line


def one_line(text: str) -> str:
    """``text`` on one line: each line break shown as ↵ (one item is one line of the digest)."""
    for brk in LINE_BREAKS:
        text = text.replace(brk, NEWLINE_MARK)
    return text


@dataclass(frozen=True)
class Item:
    """One list item of the digest: stepup's verdict first, then what others wrote.

    ``verdict`` is stepup's own words (what happened, its status, who reviewed, approved or
    denied it, when, why), with the names it quotes (people, policy rules) at its odd places;
    ``request_id`` is the request's id; ``values`` are the labelled values that agents (or
    people) wrote, each shown as its own bounded value after the verdict, so no value can
    push the verdict out of sight or imitate it."""

    verdict: tuple[str, ...]  # stepup's words and, at odd places, people's names
    request_id: str | None = None
    values: tuple[tuple[str, str | None], ...] = ()

    def text(self) -> str:
        """The item as one plain-text line: the verdict, the id, then each labelled value."""
        parts = ["".join(one_line(part) for part in self.verdict)]
        if self.request_id:
            parts.append(one_line(self.request_id))
        written = "; ".join(f"{name} {one_line(value or '—')}" for name, value in self.values)
        if written:
            parts.append(written)
        return " — ".join(parts)


def _request_values(ref: RequestRef) -> tuple[tuple[str, str | None], ...]:
    return (
        ("agent", ref.agent),
        ("action", ref.action),
        ("target", ref.target),
        ("environment", ref.environment),
    )


def describe(ref: RequestRef) -> str:
    return f"{ref.request_id} {ref.agent} {ref.action} on {ref.target} ({ref.environment})"


def expired_item(item: Expired) -> Item:
    why = "nobody decided in time" if item.was == "pending" else "approved but never claimed"
    verdict = (f"expired at {minute_utc(item.at)}: {why}",)
    return Item(verdict, item.request.request_id, _request_values(item.request))


def denial_item(item: Denial) -> Item:
    at = f" at {minute_utc(item.at)}"
    if item.by == "policy":
        verdict: tuple[str, ...] = (
            ("denied by policy rule ", item.rule, at)
            if item.rule
            else (f"denied by policy (no rule matched){at}",)
        )
    else:
        verdict = ("denied by ", item.by, at)
    values = (*_request_values(item.request), ("reason", item.reason))
    return Item(verdict, item.request.request_id, values)


def refused_item(item: RefusedClick) -> Item:
    verdict = (f"refused ({item.why}) at {minute_utc(item.at)}",)
    return Item(verdict, item.request_id or "?", (("clicked by", item.clicker or "?"),))


def break_glass_item(item: BreakGlassUse) -> Item:
    used = (f", now {item.status} — break glass at {minute_utc(item.at)}, rule ", item.rule or "—")
    verdict = (
        ("reviewed by ", item.reviewed_by or "?", f" at {minute_utc(item.reviewed_at)}{used[0]}")
        if item.reviewed
        else (f"UNREVIEWED{used[0]}",)
    ) + used[1:]
    return Item(verdict, item.request.request_id, _request_values(item.request))


def revocation_item(item: RevocationFailure) -> Item:
    alerted = f"alerted {minute_utc(item.alerted_at)}" if item.alerted_at else "not alerted"
    verdict = (
        f"{item.attempts} failed revocation attempt(s) since {minute_utc(item.since)}, "
        f"{alerted}, credential {item.jti}",
    )
    values: tuple[tuple[str, str | None], ...] = (("last error", item.last_error or "—"),)
    if item.agent:
        values = (("agent", item.agent), ("target", item.target), *values)
    return Item(verdict, item.request_id, values)


def active_item(item: ActiveCredential) -> Item:
    until = f"active until {minute_utc(item.expires_at)}, "
    if not item.approvers:
        verdict: tuple[str, ...] = (f"{until}no approval needed (rule ", item.rule or "—", ")")
    else:
        verdict = (f"{until}approved by ", item.approvers[0])
        for name in item.approvers[1:]:
            verdict += (", ", name)
    return Item(verdict, item.request.request_id, _request_values(item.request))


def expired_line(item: Expired) -> str:
    return expired_item(item).text()


def denial_line(item: Denial) -> str:
    return denial_item(item).text()


def refused_line(item: RefusedClick) -> str:
    return refused_item(item).text()


def break_glass_line(item: BreakGlassUse) -> str:
    return break_glass_item(item).text()


def revocation_line(item: RevocationFailure) -> str:
    return revocation_item(item).text()


def active_line(item: ActiveCredential) -> str:
    return active_item(item).text()


def issuer_line(counts: Mapping[str, int]) -> str:
    """``orders-db 2, jwt 1``: live credentials per issuer (``jwt`` is stepup's own token)."""
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"


def audit_line(audit: AuditStatus) -> str:
    return _chain_line(audit) + _pending_line(audit)


def _chain_line(audit: AuditStatus) -> str:
    if audit.ok:
        return f"intact — {audit.entries} entries, head {audit.head_seq} {audit.head_hash}"
    if audit.problem is not None:
        return (
            f"BROKEN at {audit.problem} — {audit.entries} entries, "
            f"recorded head {audit.head_seq} {audit.head_hash}"
        )
    return (
        f"DATABASE DIFFERS from the audit log: {audit.differences} differences in requests "
        f"(stepup audit verify names them) — chain intact, {audit.entries} entries, "
        f"head {audit.head_seq} {audit.head_hash}"
    )


def _pending_line(audit: AuditStatus) -> str:
    """Entries not chained yet: a moment's worth is normal on PostgreSQL; older ones are not
    verified by anything (a stopped chainer, or rows put in the pending table by hand)."""
    if not audit.pending or audit.oldest_pending_at is None:
        return ""
    oldest = audit.oldest_pending_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if audit.pending_stale:
        return (
            f"; NOT CHAINED: {audit.pending} entries waiting since {oldest}, verified by "
            "nothing (is the chainer running? stepup audit chain, then stepup audit verify)"
        )
    return f"; {audit.pending} entries being chained"


def checkpoint_line(checkpoint: Checkpoint | None) -> str:
    """The latest checkpoint, and how to check the database still holds it."""
    if checkpoint is None:
        return "none yet"
    return (
        f"seq {checkpoint.seq}, signed {minute_utc(checkpoint.at)} — keep it; "
        f"stepup audit verify --checkpoint {checkpoint.signed}"
    )


def static_key_line(agents: int) -> str:
    """``3 agents still use static keys``: keys for development, where workload identities
    belong (docs/identity.md)."""
    if agents == 0:
        return "no agent uses a static key"
    if agents == 1:
        return "1 agent still uses a static key (development only: docs/identity.md)"
    return f"{agents} agents still use static keys (development only: docs/identity.md)"


def callback_dead_line(count: int, latest: tuple[str, ...]) -> str:
    """``2 given up on (latest: req_a, req_b)``: signed callbacks that stopped being retried."""
    if not count:
        return "none given up on"
    shown = f" (latest: {', '.join(one_line(r) for r in latest)})" if latest else ""
    return f"{count} given up on{shown} — stepup requests show ID gives the error"


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
    return ", ".join(f"{one_line(name)} {count}" for name, count in items) or "—"


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
        f"Audit checkpoint: {checkpoint_line(d.checkpoint)}",
        f"Requests: {d.total_requests}",
        *(f"  {line}" for line in request_lines(d)),
        f"Time to decision: {decision_line(d.decision_times)}",
        *_listed("Expired", [expired_line(e) for e in d.expired], limit),
        *_listed("Denials", [denial_line(e) for e in d.denials], limit),
        *_listed(f"Refused clicks [{refused}]", [refused_line(e) for e in d.refused_clicks], limit),
        *_listed("Break-glass uses", [break_glass_line(e) for e in d.break_glass], limit),
        *_listed("Revocation failures", [revocation_line(e) for e in d.revocation_failures], limit),
        f"Live credentials by issuer: {issuer_line(d.live_by_issuer)}",
        *_listed("Active credentials now", [active_line(e) for e in d.active_credentials], limit),
        f"Top agents: {top_line(d.top_agents)}",
        f"Top targets: {top_line(d.top_targets)}",
        f"Agent identity: {static_key_line(d.static_key_agents)}",
        "Signed callbacks: "
        + callback_dead_line(d.callback_dead_letters, d.callback_dead_requests),
    ]
    return "\n".join(lines) + "\n"


# -- posting ----------------------------------------------------------------------------------
