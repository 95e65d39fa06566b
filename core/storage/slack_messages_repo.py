"""Where each request's cards live in Slack (channel and ts), so they can be updated."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.storage.tables import SlackMessageRow


def locations(session: Session, request_id: str) -> list[tuple[str, str, bool]]:
    """(channel, ts, is_primary) of each copy of the request's card, oldest first."""
    return [
        (row.channel, row.ts, row.is_primary)
        for row in session.execute(
            select(SlackMessageRow)
            .where(SlackMessageRow.request_id == request_id)
            .order_by(SlackMessageRow.id)
        ).scalars()
    ]


def remember(
    session: Session, request_id: str, channel: str, ts: str, *, primary: bool, now: datetime
) -> None:
    session.add(
        SlackMessageRow(
            request_id=request_id, channel=channel, ts=ts, is_primary=primary, created_at=now
        )
    )
