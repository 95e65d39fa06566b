"""core/callbacks.py: which callback URLs an agent may name, and where a name may resolve."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from core.callbacks import (
    check_callback_url,
    check_resolved,
    explicitly_private,
    is_public,
    normalise_host,
)
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


def test_allow_list_entries_are_hosts_with_an_optional_port() -> None:
    assert normalise_host(" Hooks.Example.COM ") == "hooks.example.com"
    assert normalise_host("[::1]") == "::1"
    assert normalise_host("0:0:0:0:0:0:0:1") == "::1"
    assert normalise_host("Hooks.Example.com:8443") == "hooks.example.com:8443"
    assert normalise_host("[0::1]:8443") == "[::1]:8443"
    assert normalise_host("127.0.0.1:9") == "127.0.0.1:9"
    for bad in [
        "https://x",
        "a@b",
        "",
        "a b",
        "h:0",
        "h:65536",
        "h:",
        "h:443x",
        "h:+443",
        "h:\uff14\uff14\uff13",  # full-width digits
        "[h]:443",  # brackets hold an IPv6 address
        "[127.0.0.1]:443",
        "[::1]443",
        "fe80::1%eth0",
        "x" * 250 + ":443",
    ]:
        with pytest.raises(ValidationFailed, match="callback host"):
            normalise_host(bad)


PORTED = {"hooks.example.com:8443", "[::1]:9000", "127.0.0.1:9", "any.example.com"}


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com:8443/x",
        "http://[::1]:9000/x",
        "http://[0:0::1]:9000/x",
        "http://127.0.0.1:9/x",
        "https://any.example.com:1/x",  # a bare host: any port, as before
        "https://any.example.com/x",
    ],
)
def test_a_host_port_entry_allows_that_port(url: str) -> None:
    assert check_callback_url(url, PORTED) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/x",  # 443, not 8443
        "https://hooks.example.com:443/x",
        "https://hooks.example.com:8444/x",
        "http://[::1]:9001/x",
        "http://[::1]/x",
        "http://127.0.0.1/x",
        "http://127.0.0.1:90/x",
    ],
)
def test_a_host_port_entry_refuses_other_ports(url: str) -> None:
    with pytest.raises(ValidationFailed, match=r"callback_url: port .* allow-list"):
        check_callback_url(url, PORTED)


def test_the_default_port_matches_an_entry_naming_it() -> None:
    url = "https://hooks.example.com/x"
    assert check_callback_url(url, {"hooks.example.com:443"}) == url
    with pytest.raises(ValidationFailed):
        check_callback_url("http://127.0.0.1/x", {"127.0.0.1:443"})


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        # IPv4-mapped
        ("::ffff:10.0.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::ffff:93.184.216.34", True),
        # IPv4-compatible (deprecated)
        ("::10.0.0.1", False),
        ("::169.254.169.254", False),
        ("::127.0.0.1", False),
        ("::93.184.216.34", True),
        # NAT64, well-known prefix
        ("64:ff9b::10.0.0.1", False),
        ("64:ff9b::192.168.1.1", False),
        ("64:ff9b::169.254.169.254", False),
        ("64:ff9b::93.184.216.34", True),
        # IPv4-translated (SIIT, ::ffff:0:0:0/96), judged by the IPv4 it carries
        ("::ffff:0:7f00:1", False),
        ("::ffff:0:a00:1", False),
        ("::ffff:0:5db8:d822", True),
        # NAT64, local-use prefix: never public
        ("64:ff9b:1::a00:1", False),
        ("64:ff9b:1::5db8:d822", False),
        # 6to4
        ("2002:a00:1::1", False),
        ("2002:c0a8:101::1", False),
        ("2002:a9fe:a9fe::1", False),
        ("2002:5db8:d822::1", True),
        # Teredo: server 65.54.227.120, client the obfuscated one
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # client 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:a247:29dd", True),  # client 93.184.214.34
        ("2001:0:a00:1:8000:63bf:a247:29dd", False),  # server 10.0.0.1
        # site-local
        ("fec0::1", False),
        ("feff::1", False),
        # and the plain ones
        ("fd00::1", False),
        ("fe80::1", False),
        ("::1", False),
        ("::", False),
        ("ff02::1", False),
    ],
)
def test_public_is_judged_on_the_embedded_ipv4(address: str, public: bool) -> None:
    assert is_public(address) is public
    if public:
        check_resolved("hooks.example.com", [address])
    else:
        with pytest.raises(ValueError, match="refused address"):
            check_resolved("hooks.example.com", ["93.184.216.34", address])


def test_an_allow_listed_transition_literal_counts_as_private() -> None:
    """At submit an IP literal embedding a private IPv4 address is explicitly private: reached
    only as itself, and never by a name resolving to it."""
    assert explicitly_private("::ffff:10.0.0.7")
    assert explicitly_private("2002:a00:7::1")
    assert explicitly_private("fec0::7")
    assert not explicitly_private("2002:5db8:d822::1")
    check_resolved("::ffff:10.0.0.7", ["::ffff:10.0.0.7"])
    with pytest.raises(ValueError):
        check_resolved("::ffff:10.0.0.7", ["10.0.0.8"])


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
