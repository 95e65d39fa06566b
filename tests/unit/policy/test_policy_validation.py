"""Malformed policies are refused with a PolicyError naming the rule (index and name) and field."""

from __future__ import annotations

import pytest

from core.errors import PolicyError
from core.policy import parse_policy

HEAD = """version: 1
approver_groups:
  sre-leads: { slack_users: [U0ALICE, U0BOB], emails: [carol@example.com] }
  security-leads: { slack_usergroup: S0SEC }
channels: { approvals: C0APPROVALS }
rules:
  - name: reads
    match: { action_class: read }
    decision: allow
"""

APPROVE = """  - name: prod-destructive
    match: { environment: production, action_class: [destructive, privilege_change] }
    decision: approve
    channel: approvals
"""


def refused(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    return caught.value


RULE_ERRORS = [
    pytest.param(
        APPROVE + "    aprovers: sre-leads\n",
        "rules[1] (prod-destructive).aprovers",
        "unknown key 'aprovers' (did you mean 'approvers'?)",
        id="unknown-key",
    ),
    pytest.param(
        APPROVE + "    approvers: sre-lead\n",
        "rules[1] (prod-destructive).approvers",
        "undefined approver group 'sre-lead' (defined: security-leads, sre-leads)",
        id="undefined-group",
    ),
    pytest.param(
        APPROVE + "    approvers: [sre-leads, dba]\n",
        "rules[1] (prod-destructive).approvers",
        "undefined approver group 'dba'",
        id="undefined-group-in-list",
    ),
    pytest.param(
        APPROVE.replace("approvals", "aprovals") + "    approvers: sre-leads\n",
        "rules[1] (prod-destructive).channel",
        "undefined channel 'aprovals' (defined: approvals)",
        id="undefined-channel",
    ),
    pytest.param(
        APPROVE + "    approvers: sre-leads\n    quorum: 4\n",
        "rules[1] (prod-destructive).quorum",
        "quorum 4 exceeds the 3 listed member(s) of sre-leads",
        id="quorum-above-static-members",
    ),
    pytest.param(
        APPROVE + "    approvers: sre-leads\n    quorum: 0\n",
        "rules[1] (prod-destructive).quorum",
        "greater than or equal to 1",
        id="quorum-zero",
    ),
    pytest.param(
        APPROVE + "    approvers: sre-leads\n    max_ttl: 10 minutes\n",
        "rules[1] (prod-destructive).max_ttl",
        "'10 minutes' is not a duration",
        id="bad-duration",
    ),
    pytest.param(
        APPROVE + "    approvers: sre-leads\n    approval_timeout: 0s\n",
        "rules[1] (prod-destructive).approval_timeout",
        "a duration must be positive",
        id="zero-duration",
    ),
    pytest.param(
        "  - name: odd\n    match: { action: 42 }\n    decision: allow\n",
        "rules[1] (odd).match.action",
        "expected a string or a list of strings, got int",
        id="bad-glob-type",
    ),
    pytest.param(
        "  - name: odd\n    match: { target: [ok, { a: 1 }] }\n    decision: allow\n",
        "rules[1] (odd).match.target[1]",
        "valid string",
        id="bad-glob-item-type",
    ),
    pytest.param(
        "  - name: odd\n    match: { environment: [] }\n    decision: allow\n",
        "rules[1] (odd).match.environment",
        "an empty list matches nothing",
        id="empty-list",
    ),
    pytest.param(
        APPROVE,
        "rules[1] (prod-destructive).approvers",
        "decision approve needs approvers",
        id="approve-without-approvers",
    ),
    pytest.param(
        "  - name: reads\n    match: {}\n    decision: deny\n",
        "rules[1] (reads).name",
        "duplicate rule name 'reads': rules[0] has it already",
        id="duplicate-rule-name",
    ),
    pytest.param(
        "  - name: w\n    match: { action_class: [write, delete] }\n    decision: allow\n",
        "rules[1] (w).match.action_class[1]",
        "Input should be 'read', 'write'",
        id="unknown-action-class",
    ),
    pytest.param(
        "  - name: w\n    match: {}\n    decision: maybe\n",
        "rules[1] (w).decision",
        "Input should be 'allow', 'approve' or 'deny'",
        id="unknown-decision",
    ),
    pytest.param(
        "  - name: w\n    match: {}\n    decision: allow\n    tier: extreme\n",
        "rules[1] (w).tier",
        "'critical' (got 'extreme')",
        id="unknown-tier",
    ),
    pytest.param(
        "  - name: w\n    decision: allow\n",
        "rules[1] (w).match",
        "required key is missing",
        id="missing-match",
    ),
    pytest.param(
        "  - name: w\n    match: {}\n    decision: allow\n    quorum: 2\n",
        "rules[1] (w).quorum",
        "quorum has no effect on a rule with decision allow",
        id="approve-field-on-allow",
    ),
    pytest.param(
        "  - name: w\n    match: {}\n    decision: deny\n    max_ttl: 5m\n",
        "rules[1] (w).max_ttl",
        "max_ttl has no effect on a rule with decision deny",
        id="ttl-on-deny",
    ),
    pytest.param(
        APPROVE + "    approvers: sre-leads\n    escalate_after: 10m\n",
        "rules[1] (prod-destructive).escalate_after",
        "escalate_after needs escalate_to",
        id="escalate-after-alone",
    ),
    pytest.param(
        APPROVE + "    approvers: sre-leads\n    escalate_to: security-leads\n",
        "rules[1] (prod-destructive).escalate_to",
        "escalate_to needs escalate_after",
        id="escalate-to-alone",
    ),
    pytest.param(
        APPROVE + "    approvers: sre-leads\n    escalate_to: ciso\n    escalate_after: 5m\n",
        "rules[1] (prod-destructive).escalate_to",
        "undefined approver group 'ciso'",
        id="escalate-to-undefined",
    ),
    pytest.param(
        APPROVE + "    approvers: sre-leads\n    escalate_to: security-leads\n"
        "    escalate_after: 30m\n",
        "rules[1] (prod-destructive).escalate_after",
        "escalate_after 30m is not before the approval timeout 30m",
        id="escalation-never-happens",
    ),
    pytest.param(
        APPROVE + "    approvers: sre-leads\n    break_glass_ttl: 2m\n",
        "rules[1] (prod-destructive).break_glass_ttl",
        "break_glass_ttl needs break_glass: true",
        id="break-glass-ttl-without-break-glass",
    ),
    pytest.param(
        APPROVE + "    approvers: sre-leads\n    break_glass: true\n    max_ttl: 5m\n"
        "    break_glass_ttl: 10m\n",
        "rules[1] (prod-destructive).break_glass_ttl",
        "break_glass_ttl 10m exceeds the rule's max_ttl 5m",
        id="break-glass-ttl-too-long",
    ),
    pytest.param(
        APPROVE + "    approvers: sre-leads\n    break_glass: yes please\n",
        "rules[1] (prod-destructive).break_glass",
        "valid boolean",
        id="break-glass-not-bool",
    ),
    pytest.param(
        APPROVE.replace("    channel: approvals\n", "") + "    approvers: sre-leads\n",
        "rules[1] (prod-destructive).channel",
        "notify includes 'channel' but the rule names no channel",
        id="approve-without-channel",
    ),
    pytest.param(
        APPROVE + "    approvers: sre-leads\n    notify: [dm]\n",
        "rules[1] (prod-destructive).notify",
        "a channel is set but notify does not include 'channel'",
        id="channel-but-dm-only",
    ),
    pytest.param(
        APPROVE + "    approvers: sre-leads\n    notify: [email]\n",
        "rules[1] (prod-destructive).notify[0]",
        "Input should be 'channel' or 'dm'",
        id="unknown-notify",
    ),
    pytest.param(
        "  - name: v\n    match: { data_volume_bytes: { gt: lots } }\n    decision: allow\n",
        "rules[1] (v).match.data_volume_bytes.gt",
        "'lots' is not a size",
        id="bad-size",
    ),
    pytest.param(
        "  - name: v\n    match: { data_volume_bytes: { more: 1GB } }\n    decision: allow\n",
        "rules[1] (v).match.data_volume_bytes.more",
        "unknown key 'more'",
        id="bad-threshold-operator",
    ),
    pytest.param(
        "  - name: v\n    match: { data_volume_bytes: { gt: 2GB, lt: 1GB } }\n"
        "    decision: allow\n",
        "rules[1] (v).match.data_volume_bytes",
        "the range is empty",
        id="empty-volume-range",
    ),
    pytest.param(
        "  - name: t\n    match: { within_hours: { start: '9am', end: '17:00' } }\n"
        "    decision: allow\n",
        "rules[1] (t).match.within_hours.start",
        'expected a time of day as "HH:MM"',
        id="bad-time-of-day",
    ),
    pytest.param(
        "  - name: t\n    match: { within_hours: { start: '09:00', end: '17:00', "
        "timezone: Mars/Olympus } }\n    decision: allow\n",
        "rules[1] (t).match.within_hours.timezone",
        "unknown time zone 'Mars/Olympus'",
        id="bad-time-zone",
    ),
    pytest.param(
        "  - name: t\n    match: { within_hours: { days: [monday], start: '09:00', "
        "end: '17:00' } }\n    decision: allow\n",
        "rules[1] (t).match.within_hours.days[0]",
        "Input should be 'mon', 'tue'",
        id="bad-day",
    ),
    pytest.param(
        "  - name: t\n    match: { outside_hours: { start: '09:00', end: '09:00' } }\n"
        "    decision: allow\n",
        "rules[1] (t).match.outside_hours",
        "start and end are equal",
        id="empty-window",
    ),
    pytest.param(
        "  - name: 'has space'\n    match: {}\n    decision: allow\n",
        "rules[1] (has space).name",
        "'has space' is not a name",
        id="bad-rule-name",
    ),
]


@pytest.mark.parametrize(("rule_text", "location", "message"), RULE_ERRORS)
def test_rule_errors_name_rule_and_field(rule_text: str, location: str, message: str) -> None:
    error = refused(HEAD + rule_text)
    assert error.location == location
    assert message in error.detail
    assert str(error).startswith(f"{location}: ")


def test_usergroup_size_is_unknown_so_any_quorum_is_accepted() -> None:
    policy = parse_policy(
        HEAD + APPROVE + "    approvers: [security-leads, sre-leads]\n    quorum: 7\n"
    )
    assert policy.group("security-leads").static_size() == 0


def test_quorum_counts_all_listed_groups() -> None:
    text = (
        HEAD.replace("channels:", "  dbas: { slack_users: [U0DBA] }\nchannels:")
        + APPROVE
        + "    approvers: [sre-leads, dbas]\n    quorum: 4\n"
    )
    assert parse_policy(text).rule_names[-1] == "prod-destructive"
    with pytest.raises(PolicyError, match="quorum 5 exceeds the 4 listed member"):
        parse_policy(text.replace("quorum: 4", "quorum: 5"))


FILE_ERRORS = [
    pytest.param("", "", "the policy is empty", id="empty-file"),
    pytest.param("# only a comment\n", "", "the policy is empty", id="comment-only"),
    pytest.param("- version: 1\n", "", "must be a mapping", id="not-a-mapping"),
    pytest.param("version: 2\nrules: []\n", "version", "unsupported policy version 2", id="v2"),
    pytest.param("version: '1'\nrules: []\n", "version", "valid integer", id="version-str"),
    pytest.param("rules: []\n", "version", "required key is missing", id="no-version"),
    pytest.param(
        "version: 1\nrule: []\n", "rule", "unknown key 'rule' (did you mean 'rules'?)", id="typo"
    ),
    pytest.param(
        "version: 1\nrules:\n  - name: a\n    match: {action: [unclosed\n    decision: allow\n",
        "line 5",
        "YAML syntax error",
        id="yaml-syntax",
    ),
    pytest.param(
        "version: 1\nrules:\n  - name: a\n    match: {}\n    decision: allow\n    decision: deny\n",
        "line 6",
        "duplicate key 'decision'",
        id="yaml-duplicate-key",
    ),
    pytest.param(
        "version: 1\napprover_groups:\n  sre-leads: { emails: [carol@example.com, not-mail] }\n",
        "approver_groups.sre-leads.emails[1]",
        "'not-mail' is not an email address",
        id="bad-email",
    ),
    pytest.param(
        "version: 1\napprover_groups:\n  sre-leads: { slack_users: ['@alice'] }\n",
        "approver_groups.sre-leads.slack_users[0]",
        "'@alice' is not a Slack user id",
        id="slack-handle-instead-of-id",
    ),
    pytest.param(
        "version: 1\napprover_groups:\n  empty: {}\n",
        "approver_groups.empty",
        "needs slack_users, emails or a slack_usergroup",
        id="group-without-members",
    ),
    pytest.param(
        "version: 1\nchannels: { approvals: '#approvals' }\n",
        "channels.approvals",
        "'#approvals' is not a Slack channel id",
        id="channel-name-instead-of-id",
    ),
    pytest.param(
        "version: 1\ndefaults: { max_ttl: forever }\n",
        "defaults.max_ttl",
        "'forever' is not a duration",
        id="bad-default-duration",
    ),
    pytest.param(
        "version: 1\ndefaults: { timezone: Paris }\n",
        "defaults.timezone",
        "unknown time zone 'Paris'",
        id="bad-default-timezone",
    ),
]


@pytest.mark.parametrize(("text", "location", "message"), FILE_ERRORS)
def test_file_errors(text: str, location: str, message: str) -> None:
    error = refused(text)
    assert error.location == location
    assert message in error.detail


def test_every_problem_is_named() -> None:
    error = refused(
        HEAD
        + "  - name: a\n    match: { action: 1 }\n    decision: allow\n"
        + "  - name: b\n    match: {}\n    decision: allow\n    tyer: low\n"
    )
    assert error.location == "rules[1] (a).match.action"
    assert "also rules[2] (b).tyer: unknown key 'tyer' (did you mean 'tier'?)" in error.detail


def test_rule_without_name_is_located_by_index() -> None:
    error = refused(HEAD + "  - match: {}\n    decision: allow\n")
    assert error.location == "rules[1].name"
    assert str(error) == "rules[1].name: required key is missing"
