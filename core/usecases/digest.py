"""Posting the daily digest: once per day, recorded and queued in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from core.digest import DAY, MAX_WINDOW, Digest, render_text
from core.keys import KeyRing
from core.notices import Notices
from core.storage.audit_store import checkpoint_head
from core.storage.database import Database
from core.storage.digest_repo import already_posted, read_digest, record_posted

DigestRenderer = Callable[[Digest], tuple[str, str]]
"""The digest as a message: its text, and its blocks as JSON ("" for none)."""


def plain_message(digest: Digest) -> tuple[str, str]:
    """The digest as plain text, no blocks (for a channel that has no richer form)."""
    return render_text(digest), ""


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
    render: DigestRenderer = plain_message,
    window: timedelta | None = None,
) -> bool:
    """Queue the day's digest for ``channel``; False when this day's digest already exists.

    The digest carries a signed checkpoint of the audit chain's head, appended just before
    (unless the head is one already), so the channel holds the head outside the database.
    The day's row and the outbox entry are written in one transaction: the row's primary key
    lets exactly one replica commit, and a crash leaves either both or neither. By default the
    window starts where the previous digest ended (24 h when there is none), so days of 23 or
    25 hours around a DST change, or a digest posted early with ``--now``, miss nothing.
    """
    day = digest_day(now, timezone)
    posted, previous = already_posted(db, day, now)
    if posted:
        return False
    if window is None:
        window = min(now - previous, MAX_WINDOW) if previous is not None else DAY
    # A fresh checkpoint of the head, so the digest posts the whole log's anchor.
    checkpoint_head(db, keyring, now=now)
    digest = read_digest(db, keyring, now=now, window=window)
    text, blocks = render(digest)
    return record_posted(
        db,
        day,
        digest,
        now,
        lambda outbox: Notices(outbox, now).channel(None, channel, text, blocks=blocks),
    )
