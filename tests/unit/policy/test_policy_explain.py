"""explain(): every rule in file order, matched or the first condition that failed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.model import ActionClass, Intent, Outcome
from core.policy import Policy, explain, parse_policy

NOW = datetime(2024, 1, 13, 10, 0, tzinfo=UTC)  # a Saturday, 11:00 in Paris

POLICY = """
version: 1
defaults: { timezone: Europe/Paris }
approver_groups: { sre-leads: { slack_users: [U0ALICE, U0BOB] } }
channels: { approvals: C0APPROVALS }
rules:
  - name: never-drop-prod-db
    match: { action: "db.drop_database", environment: production }
    decision: deny
  - name: prod-destructive
    match: { environment: production, action_class: [destructive, privilege_change] }
    decision: approve
    approvers: sre-leads
    quorum: 2
    channel: approvals
    step_up: true
  - name: weekday-deploys
    match: { within_hours: { days: [mon, tue, wed, thu, fri], start: "09:00", end: "18:00" } }
    decision: allow
  - name: big
    match: { data_volume_bytes: { gt: 1GB }, agent: ["etl-*", "backup-bot"] }
    decision: allow
  - name: glass
    match: { break_glass: true, target: "vault:*" }
    decision: allow
  - name: anything-else
    match: {}
    decision: allow
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(POLICY)


STAGING_WRITE = Intent(
    agent="deploy-bot",
    action="helm.upgrade",
    action_class=ActionClass.WRITE,
    target="svc/api",
    environment="staging",
    data_volume_bytes=500,
)


def test_each_rule_says_why_it_did_not_match(policy: Policy) -> None:
    explanation = explain(policy, STAGING_WRITE, NOW)
    failed = {t.name: t.failed for t in explanation.rules}
    assert failed == {
        # the first key as written in the file is reported: action before environment
        "never-drop-prod-db": "action 'helm.upgrade' does not match 'db.drop_database'",
        "prod-destructive": "environment 'staging' not in [production]",
        "weekday-deploys": "Sat 2024-01-13 11:00 CET is outside mon-fri 09:00-18:00 Europe/Paris",
        "big": "data_volume_bytes 500 is not > 1000000000",
        "glass": "break_glass is false, rule needs true",
        "anything-else": None,
    }
    assert [t.index for t in explanation.rules] == [0, 1, 2, 3, 4, 5]
    assert [t.decided for t in explanation.rules] == [False] * 5 + [True]
    assert explanation.decision.rule == "anything-else"
    assert explanation.policy_digest == policy.digest


def test_glob_lists_and_missing_volume_are_explained(policy: Policy) -> None:
    intent = Intent(
        agent="mallory",
        action="x",
        action_class=ActionClass.READ,
        target="t",
        environment="dev",
        data_volume_bytes=5 * 10**9,
    )
    traces = {t.name: t for t in explain(policy, intent, NOW).rules}
    assert traces["big"].failed == "agent 'mallory' does not match any of [etl-*, backup-bot]"
    no_volume = explain(policy, Intent("a", "x", ActionClass.READ, "t", "dev"), NOW)
    assert no_volume.rules[3].failed == "data_volume_bytes not given (a threshold needs it)"


def test_render_marks_decider_and_overridden_matches(policy: Policy) -> None:
    drop = Intent(
        agent="ops-bot",
        action="db.drop_database",
        action_class=ActionClass.DESTRUCTIVE,
        target="orders",
        environment="production",
    )
    explanation = explain(policy, drop, NOW)
    assert explanation.decision.outcome is Outcome.DENY
    text = explanation.render()
    lines = text.splitlines()
    assert lines[0] == f"policy   {policy.digest}"
    assert "action=db.drop_database class=destructive" in lines[1]
    assert lines[2] == "at       2024-01-13 10:00:00 UTC"
    assert any("never-drop-prod-db (deny)" in ln and "MATCH <- decides" in ln for ln in lines)
    assert any(
        "prod-destructive (approve)" in ln and "deny rule never-drop-prod-db wins" in ln
        for ln in lines
    )
    assert "decision DENY by rule never-drop-prod-db, tier high" in text
    assert "  - denied by rule never-drop-prod-db" in text


def test_render_of_an_approval(policy: Policy) -> None:
    intent = Intent("ops-bot", "k8s.delete", ActionClass.DESTRUCTIVE, "ns/x", "production")
    text = explain(policy, intent, NOW).render()
    assert (
        "decision APPROVE by rule prod-destructive, tier high, quorum 2 of sre-leads, "
        "channel C0APPROVALS, step-up, expires after 30m, max_ttl 15m"
    ) in text
    assert "anything-else (allow)" in text
    assert "match, but an earlier rule decides" in text


@pytest.mark.parametrize(
    ("days", "text"),
    [
        ("[mon, tue, wed, thu, fri]", "mon-fri"),
        ("[sat, sun]", "sat,sun"),
        ("[fri, mon, tue, wed, sun]", "mon-wed,fri,sun"),
        ("[mon, tue, wed, thu, fri, sat, sun]", "every day"),
    ],
)
def test_window_days_are_described_compactly(days: str, text: str) -> None:
    policy = parse_policy(
        "version: 1\nrules:\n  - name: w\n    match: { within_hours: "
        f"{{ days: {days}, start: '03:00', end: '04:00' }} }}\n    decision: allow\n"
    )
    trace = explain(policy, STAGING_WRITE, NOW).rules[0]
    assert trace.failed == f"Sat 2024-01-13 10:00 UTC is outside {text} 03:00-04:00 UTC"


def test_render_of_an_empty_policy() -> None:
    policy = parse_policy("version: 1\n")
    text = explain(policy, STAGING_WRITE, NOW).render()
    assert "(none: the policy denies everything)" in text
    assert "decision DENY by default, tier high" in text
    assert "  - no rule matched (deny by default)" in text
