"""How long the outbox worker waits before retrying: backoff, Slack's Retry-After, the cap."""

from __future__ import annotations

from typing import Any, cast

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from bot.slack.delivery import DeliveryError, OutboxWorker


def worker(max_backoff: float = 300.0) -> OutboxWorker:
    """A worker with only what ``retry_delay`` reads (no database, no Slack)."""
    w = OutboxWorker.__new__(OutboxWorker)
    w.max_backoff_seconds = max_backoff
    return w


@pytest.mark.parametrize(
    ("attempts", "retry_after", "delay"),
    [
        (1, None, 2.0),
        (3, None, 8.0),
        (20, None, 300.0),  # backoff capped
        (1, 30.0, 30.0),  # Slack asks for longer than the backoff: honoured
        (5, 1.0, 32.0),  # Slack asks for less: the backoff wins
        (1, 86_400.0, 300.0),  # a day: capped at the worker's max backoff
        (1, float("inf"), 300.0),
    ],
)
def test_retry_delay(attempts: int, retry_after: float | None, delay: float) -> None:
    assert worker().retry_delay(attempts, retry_after) == delay


def test_retry_delay_follows_the_configured_cap() -> None:
    assert worker(max_backoff=1.0).retry_delay(1, 3_600.0) == 1.0


def rate_limited(retry_after: str) -> SlackApiError:
    response = SlackResponse(
        client=None,
        http_verb="POST",
        api_url="https://slack.test/api/chat.postMessage",
        req_args={},
        data={"ok": False, "error": "ratelimited"},
        headers={"Retry-After": retry_after},
        status_code=429,
    )
    return SlackApiError("ratelimited", cast(Any, response))


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("1e9", 1e9), ("soon", None), ("-5", None), ("nan", None), ("inf", None)],
)
def test_retry_after_is_read_as_seconds_or_ignored(header: str, seconds: float | None) -> None:
    failure = DeliveryError.from_slack(rate_limited(header))
    assert failure.retry_after == seconds and not failure.permanent
    assert worker().retry_delay(1, failure.retry_after) <= 300.0
