"""The digest's Block Kit stays within Slack's limits however long the day was."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.slack.digest_blocks import (
    FIELD_TEXT,
    MAX_BLOCKS,
    SECTION_TEXT,
    bounded_list,
    digest_blocks,
)
from bot.slack_emulator.block_limits import check_blocks
from core.digest import (
    ActiveCredential,
    AuditStatus,
    BreakGlassUse,
    DecisionTimes,
    Denial,
    Digest,
    Expired,
    Item,
    RefusedClick,
    RequestRef,
    RevocationFailure,
    TierOutcome,
    render_text,
)

NOW = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
HEAD = "ab" * 32


def ref(i: int, agent: str = "deploy-bot") -> RequestRef:
    return RequestRef(
        f"req_{i:032x}", agent, "k8s.rollout_restart", "payments-api", "production", "high"
    )


def make_digest(n: int, *, reason: str = "not now", audit: AuditStatus | None = None) -> Digest:
    at = NOW - timedelta(hours=1)
    return Digest(
        window_start=NOW - timedelta(days=1),
        window_end=NOW,
        requests=(TierOutcome("high", "approved", n), TierOutcome("low", "allowed", 2)),
        decision_times=DecisionTimes(n, 120.0, 174.0),
        expired=tuple(Expired(ref(i), at, "pending") for i in range(n)),
        denials=tuple(Denial(ref(i), at, "carol@example.com", "r", reason) for i in range(n)),
        refused_clicks=tuple(
            RefusedClick(at, ref(i).request_id, "eve@example.com", "ineligible") for i in range(n)
        ),
        break_glass=tuple(BreakGlassUse(ref(i), at, "r", "approved", None, None) for i in range(n)),
        revocation_failures=tuple(
            RevocationFailure(
                f"jti-{i}", ref(i).request_id, "ops-bot", "orders-db", 3, reason, at, None
            )
            for i in range(n)
        ),
        active_credentials=tuple(
            ActiveCredential(ref(i), NOW + timedelta(minutes=5), "r", ("alice@example.com",))
            for i in range(n)
        ),
        top_agents=(("deploy-bot", n),),
        top_targets=(("payments-api", n),),
        audit=audit or AuditStatus(True, 42, 42, HEAD),
    )


def texts(blocks: list[dict[str, Any]]) -> list[str]:
    out = []
    for block in blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        out += [f["text"] for f in block.get("fields", [])]
        out += [e["text"] for e in block.get("elements", [])]
    return out


def section(blocks: list[dict[str, Any]], title: str) -> str:
    [found] = [t for t in texts(blocks) if t.startswith(f"*{title}*")]
    return found


def test_a_small_day_shows_everything() -> None:
    blocks = digest_blocks(make_digest(2))
    check_blocks(blocks, limit=MAX_BLOCKS, error="invalid_blocks")  # Slack's own limits
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "stepup daily digest", "emoji": False},
    }
    assert ":white_check_mark: *Audit chain*: intact — 42 entries, head 42 " + HEAD in texts(blocks)
    refused = section(blocks, "Refused clicks [ineligible 2, sponsor 0, owner 0]")
    assert refused.count("\n• ") == 2 and "more" not in refused
    assert section(blocks, "Break-glass uses").count("UNREVIEWED") == 2
    assert "median 2m 0s, p95 2m 54s" in section(blocks, "Requests")


@pytest.mark.parametrize("n", [40, 1000])
def test_a_long_day_is_cut_to_slack_limits(n: int) -> None:
    blocks = digest_blocks(make_digest(n, reason="x" * 5000))
    check_blocks(blocks, limit=MAX_BLOCKS, error="invalid_blocks")
    assert len(blocks) <= MAX_BLOCKS
    for block in blocks:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= SECTION_TEXT
        for field in block.get("fields", []):
            assert len(field["text"]) <= FIELD_TEXT
    for title in (
        "Expired",
        "Denials",
        "Break-glass uses",
        "Revocation failures",
        "Active credentials now",
    ):
        body = section(blocks, title)
        assert body.startswith(f"*{title}* ({n})")  # the title counts them all
        shown = body.count("\n• ")
        [more] = re.findall(r"\n… and (\d+) more$", body)
        assert shown >= 1 and shown + int(more) == n


def test_agent_chosen_text_cannot_inject_mrkdwn() -> None:
    digest = make_digest(1)
    hostile = RequestRef(
        "req_1", "<!channel> & <@U0ALICE>", "a", "<https://evil|click>", "prod", "high"
    )
    digest = replace(digest, denials=(Denial(hostile, NOW, "policy", None, "<b>"),))
    body = json.dumps(digest_blocks(digest))
    assert "<!channel>" not in body and "<https://evil" not in body and "<@U0ALICE>" not in body
    assert "&lt;!channel&gt; &amp; &lt;@U0ALICE&gt;" in section(digest_blocks(digest), "Denials")


def test_a_broken_chain_is_flagged() -> None:
    broken = AuditStatus(False, 42, 42, HEAD, 7, "entry 7: content was modified (hash mismatch)")
    [audit] = [
        t for t in texts(digest_blocks(make_digest(1, audit=broken))) if "*Audit chain*" in t
    ]
    assert audit.startswith(":rotating_light:")
    assert "BROKEN at entry 7: content was modified" in audit


@pytest.mark.parametrize(
    ("stale", "mark", "says"),
    [
        (False, ":white_check_mark:", "; 3 entries being chained"),
        (
            True,
            ":rotating_light:",
            "; NOT CHAINED: 3 entries waiting since 2026-01-05 08:55:00 UTC",
        ),
    ],
)
def test_entries_waiting_to_be_chained_are_shown_and_alarm_once_stale(
    stale: bool, mark: str, says: str
) -> None:
    waiting = replace(
        AuditStatus(True, 42, 42, HEAD),
        pending=3,
        oldest_pending_at=datetime(2026, 1, 5, 8, 55, tzinfo=UTC),
        pending_stale=stale,
    )
    digest = make_digest(1, audit=waiting)
    [audit] = [t for t in texts(digest_blocks(digest)) if "*Audit chain*" in t]
    assert audit.startswith(mark) and says in audit
    assert says in render_text(digest)


@pytest.mark.parametrize("limit", range(14, 31))
def test_bounded_list_never_exceeds_its_limit_and_counts_the_rest(limit: int) -> None:
    lines = [Item(("aaaa",)), Item(("bbbb",)), Item(("cccc",))]
    body = bounded_list("T", lines, limit=limit)
    assert len(body) <= limit
    shown = body.count("\n• ")
    more = re.findall(r"\n… and (\d+) more$", body)
    assert shown + (int(more[0]) if more else 0) == 3
    assert (shown == 3) == (limit >= len("T\n• aaaa\n• bbbb\n• cccc"))


def test_one_huge_item_is_shortened_not_dropped() -> None:
    body = bounded_list("T", [Item(("denied",), "req_1", (("reason", "y" * 10_000),))])
    assert body.startswith("T\n• denied — `req_1` — reason `yyy") and len(body) < 500
    assert body.endswith(f"` … ({10_000 - body.count('y'):,} more characters)")
    assert bounded_list("T", []) == "T\nnone"


def test_the_latest_checkpoint_is_posted_whole_as_the_command_that_checks_it() -> None:
    from core.audit.checkpoints import Checkpoint

    signed = "eyJhbGciOiJFZERTQSJ9." + "e" * 200 + "." + "s" * 86
    checkpoint = Checkpoint(41, HEAD, NOW - timedelta(minutes=1), signed)
    digest = replace(make_digest(1), checkpoint=checkpoint)
    shown = section(digest_blocks(digest), "Audit checkpoint")
    assert shown == (
        "*Audit checkpoint*: seq 41, signed 2026-11-03 08:59 UTC — keep it; to check the "
        f"database still holds it: `stepup audit verify --checkpoint {signed}`"
    )
    assert section(digest_blocks(make_digest(1)), "Audit checkpoint") == (
        "*Audit checkpoint*: none yet"
    )
    audit = replace(make_digest(1).audit, ok=False, differences=3)
    [line] = [t for t in texts(digest_blocks(make_digest(1, audit=audit))) if "*Audit chain*" in t]
    assert line.startswith(":rotating_light: *Audit chain*: DATABASE DIFFERS from the audit log")
    assert "3 differences in requests (stepup audit verify names them)" in line
