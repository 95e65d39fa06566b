"""Who gets a DM by email: the member whose profile email is exactly that address, or nobody."""

from __future__ import annotations

from typing import Any, cast

import pytest
from slack_sdk import WebClient

from bot.slack.directory import SlackDirectory


class LookupByEmail:
    """users.lookupByEmail answering with one user, whatever Slack matched it on."""

    def __init__(self, user: dict[str, Any]) -> None:
        self.user = user
        self.asked: list[str] = []

    def users_lookupByEmail(self, *, email: str) -> dict[str, Any]:
        self.asked.append(email)
        return {"ok": True, "user": self.user}


def member(email: str, **flags: object) -> dict[str, Any]:
    return {"id": "U0SAM", "deleted": False, "is_bot": False, "profile": {"email": email}, **flags}


def directory(user: dict[str, Any]) -> tuple[SlackDirectory, LookupByEmail]:
    client = LookupByEmail(user)
    return SlackDirectory(cast(WebClient, client)), client


def test_the_exact_address_ignoring_case_is_found() -> None:
    found, client = directory(member("Sam@Example.com"))
    assert found.user_id_for(" SAM@example.com ") == "U0SAM"
    assert client.asked == ["sam@example.com"]


@pytest.mark.parametrize(
    "user",
    [
        member("sam@example.com.evil.test"),  # a near match Slack (or a proxy) answered with
        member("sam+ops@example.com"),
        member(""),
        {"id": "U0SAM", "deleted": False, "is_bot": False, "profile": {}},
        member("sam@example.com", deleted=True),
        member("sam@example.com", is_bot=True),
        {**member("sam@example.com"), "id": ""},
    ],
)
def test_anyone_else_is_nobody(user: dict[str, Any]) -> None:
    found, _ = directory(user)
    assert found.user_id_for("sam@example.com") is None


def test_a_blank_address_asks_slack_nothing() -> None:
    found, client = directory(member("sam@example.com"))
    assert found.user_id_for("  ") is None
    assert client.asked == []
