"""The pure delegation rules (core/delegation.py) and the card's chain line."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.slack.cards import card_blocks
from core.delegation import check_globs, child_ttl, glob_within, under
from core.model import Status
from tests.slack_markup_check import check_payload
from tests.unit.bot.test_markup_property import MARKER, snapshot

NOW = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "inside"),
    [
        ("payments", True),
        ("PAYMENTS", True),  # letter case is ignored, as the policy ignores it
        ("payments/web", True),
        ("payments.db", True),
        ("payments:read", True),
        ("paymentsX", False),
        ("payments-admin", False),
        ("payments/", False),
        ("pay", False),
        ("orders/payments", False),
    ],
)
def test_a_name_is_under_the_parent_only_after_a_separator(name: str, inside: bool) -> None:
    assert under("payments", name) is inside


@pytest.mark.parametrize(
    ("glob", "inside"),
    [
        ("payments", True),
        ("payments/*", True),
        ("payments/web-?", True),
        ("payments.[ab]*", True),
        ("Payments/*", True),
        ("*", False),
        ("payments*", False),  # paymentsX
        ("payments?", False),
        ("payment[s]", False),  # wildcard before the separator: refused, even if narrow
        ("pay*", False),
        ("*/payments", False),
        ("payments/", False),
        ("orders", False),
    ],
)
def test_a_glob_is_within_the_parent_by_its_literal_prefix(glob: str, inside: bool) -> None:
    assert glob_within("payments", glob) is inside


def test_globs_are_checked_and_named() -> None:
    assert check_globs("targets", "payments", ["payments/*", "payments/*"]) == ("payments/*",)
    with pytest.raises(ValueError, match=r"^targets: 'pay\*' reaches beyond"):
        check_globs("targets", "payments", ["payments/*", "pay*"])
    with pytest.raises(ValueError, match=r"^actions: at least one"):
        check_globs("actions", "deploy", [])
    with pytest.raises(ValueError, match=r"^actions: 'deploy/ x'"):
        check_globs("actions", "deploy", ["deploy/ x"])


def test_a_child_ttl_is_the_shortest_of_rule_delegation_and_parent() -> None:
    parent_ends = NOW + timedelta(minutes=3, seconds=30, milliseconds=700)
    minutes = timedelta(minutes=1)
    assert child_ttl(10 * minutes, parent_ends, 5 * minutes, NOW) == timedelta(seconds=210)
    assert child_ttl(2 * minutes, parent_ends, 5 * minutes, NOW) == 2 * minutes
    assert child_ttl(10 * minutes, parent_ends, minutes, NOW) == minutes
    assert child_ttl(10 * minutes, NOW - minutes, minutes, NOW) <= timedelta(0)


def test_the_card_of_a_child_shows_its_chain_as_inert_text() -> None:
    fields = {
        "agent": "helper",
        "action": "deploy.web",
        "target": "payments/web",
        "environment": "production",
        "justification": "j",
        "on_behalf_of": "",
        "reason": "r",
        "owner": "olga@example.com",
    }
    snap = replace(snapshot(Status.PENDING, fields, params={}, detail=""), delegation_id="dlg_1")
    hostile = f"{MARKER}`<!channel>*bold*"
    chain = [("orchestrator", "req_1"), (hostile, "req_2"), ("helper", snap.id)]
    blocks = card_blocks(snap, chain)
    texts = [b["text"]["text"] for b in blocks if b.get("type") == "section" and "text" in b]
    (line,) = [t for t in texts if t.startswith("*Delegated by*")]
    assert line.index("orchestrator") < line.index("req_1") < line.index("req_2")
    assert line.count("→") == 2
    check_payload(blocks, (MARKER,))
    assert not any(
        "Delegated by" in t for t in (b.get("text", {}).get("text", "") for b in card_blocks(snap))
    )
