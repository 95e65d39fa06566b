"""The edges' one wall clock: core takes ``now`` as an argument, the edges read it here."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)
