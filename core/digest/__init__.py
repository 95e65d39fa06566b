"""The daily digest: what happened in a window, who holds access now, and the audit chain's head.

This package is the digest's figures (``model``) and its plain text (``text``), pure.
``core/storage/digest_repo.py`` reads the figures (``read_digest``, in one snapshot);
``core/usecases/digest.py`` posts a day's digest (``post_digest``): records the day in
``digests`` and queues the message in the same transaction, so replicas that fire at once post
each day's digest once. Core says what the figures are; the Slack edge passes ``render``,
which turns them into the message (text and blocks, within Slack's limits).

Windowed figures count events whose time falls in ``[start, now)``, and each posted digest
starts where the previous one ended, so consecutive digests neither miss nor repeat an event:
requests by their creation, decisions and denials by their decision time, expiries and refused
clicks by their audit entry.
"""

from __future__ import annotations

from core.digest.model import (
    DAY,
    MAX_WINDOW,
    OUTCOMES,
    REFUSAL_KINDS,
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
from core.digest.text import (
    Item,
    active_item,
    active_line,
    audit_line,
    break_glass_item,
    break_glass_line,
    callback_dead_line,
    checkpoint_line,
    decision_line,
    denial_item,
    denial_line,
    describe,
    expired_item,
    expired_line,
    format_seconds,
    issuer_line,
    minute_utc,
    one_line,
    refused_item,
    refused_line,
    render_text,
    request_lines,
    revocation_item,
    revocation_line,
    static_key_line,
    top_line,
)

__all__ = [
    "DAY",
    "MAX_WINDOW",
    "OUTCOMES",
    "REFUSAL_KINDS",
    "TIERS",
    "TOP",
    "ActiveCredential",
    "AuditStatus",
    "BreakGlassUse",
    "DecisionTimes",
    "Denial",
    "Digest",
    "Expired",
    "Item",
    "RefusedClick",
    "RequestRef",
    "RevocationFailure",
    "TierOutcome",
    "active_item",
    "active_line",
    "audit_line",
    "break_glass_item",
    "break_glass_line",
    "callback_dead_line",
    "checkpoint_line",
    "decision_line",
    "denial_item",
    "denial_line",
    "describe",
    "expired_item",
    "expired_line",
    "format_seconds",
    "issuer_line",
    "minute_utc",
    "one_line",
    "refused_item",
    "refused_line",
    "render_text",
    "request_lines",
    "revocation_item",
    "revocation_line",
    "static_key_line",
    "top_line",
]
