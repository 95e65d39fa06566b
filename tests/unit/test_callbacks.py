"""core/callbacks.py: which callback URLs an agent may name, and where a name may resolve."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from core.callbacks import check_callback_url, check_resolved, normalise_host
from core.errors import ValidationFailed
from core.notices import NoSlack, NoticeKind

ALLOWED = {"hooks.example.com", "127.0.0.1", "localhost", "10.0.0.7", "::1"}


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/stepup",
        "https://HOOKS.example.com:8443/stepup?x=1",
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]:9/hook",
        "https://10.0.0.7/hook",
    ],
)
def test_allowed(url: str) -> None:
    assert check_callback_url(url, ALLOWED) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/x", "https only"),
        ("http://10.0.0.7/x", "https only"),
        ("https://a@hooks.example.com/x", "user name"),
        ("https://hooks.example.com@evil.net/x", "user name"),
        ("https://evil.net/x", "allow-list"),
        ("https://sub.hooks.example.com/x", "allow-list"),
        ("https://hooks.example.com./x", "allow-list"),
        ("https://127.0.0.2/x", "allow-list"),
        ("javascript:alert(1)", "https URL"),
        ("/relative", "https URL"),
        ("https://hooks.example.com:99999/x", "not a URL"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("https://hooks.example.com/" + "x" * 2100, "longer"),
    ],
)
def test_refused_naming_callback_url(url: str, why: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_callback_url(url, ALLOWED)
    assert caught.value.detail.startswith("callback_url: ") and why in caught.value.detail


def test_allow_list_entries_are_bare_hosts() -> None:
    assert normalise_host(" Hooks.Example.COM ") == "hooks.example.com"
    assert normalise_host("[::1]") == "::1"
    for bad in ["hooks.example.com:443", "https://x", "a@b", "", "a b"]:
        with pytest.raises(ValidationFailed):
            normalise_host(bad)


def test_a_name_must_resolve_to_public_addresses_only() -> None:
    check_resolved("hooks.example.com", ["93.184.216.34"])
    for private in ["10.1.2.3", "127.0.0.1", "169.254.169.254", "192.168.1.1", "::1", "fd00::1"]:
        with pytest.raises(ValueError, match="refused address"):
            check_resolved("hooks.example.com", ["93.184.216.34", private])
    with pytest.raises(ValueError, match="no address"):
        check_resolved("hooks.example.com", [])


def test_an_explicitly_allowed_private_host_is_reached_only_there() -> None:
    check_resolved("localhost", ["127.0.0.1", "::1"])
    check_resolved("10.0.0.7", ["10.0.0.7"])
    check_resolved("127.0.0.1", ["127.0.0.1"])
    with pytest.raises(ValueError):
        check_resolved("localhost", ["10.0.0.1"])


class _Sink:
    def __init__(self) -> None:
        self.added: list[str] = []

    def add(self, kind: str, request_id: str | None, payload: dict[str, Any], now: Any) -> None:
        self.added.append(kind)


def test_without_slack_callbacks_are_still_queued() -> None:
    sink = _Sink()
    outbox = NoSlack(sink)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    outbox.add(NoticeKind.CARD_POST.value, "req_1", {}, now)
    outbox.add(NoticeKind.CALLBACK.value, "req_1", {}, now)
    assert sink.added == ["callback"]
