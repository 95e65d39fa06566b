"""Policy.evaluate over a realistic policy: which rule decides and what the decision carries."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.errors import NotFound
from core.model import ActionClass, Intent, Outcome, Tier
from core.policy import NO_MATCH_REASON, Policy, parse_policy

NOW = datetime(2024, 5, 15, 10, 0, tzinfo=UTC)  # a Wednesday

POLICY = """
version: 1
defaults: { approval_timeout: 30m, claim_window: 5m, max_ttl: 15m }
approver_groups:
  sre-leads: { slack_users: [U0ALICE, U0BOB], emails: [Carol@Example.com] }
  security-leads: { slack_usergroup: S0SEC }
  data-owners: { slack_users: [U0FRANK] }
channels: { approvals: C0APPROVALS, security: C0SECURITY }
rules:
  - name: never-drop-prod-db
    match: { action: "db.drop_database", environment: production }
    decision: deny
    reason: Dropping a production database is never automated
  - name: prod-destructive
    match: { environment: production, action_class: [destructive, privilege_change] }
    decision: approve
    tier: high
    approvers: sre-leads
    quorum: 2
    channel: approvals
    max_ttl: 10m
    approval_timeout: 15m
    claim_window: 2m
    step_up: true
    notify: [channel, dm]
    escalate_after: 10m
    escalate_to: security-leads
  - name: prod-secrets
    match:
      environment: production
      action_class: secret_read
      target: ["vault:kv/prod/*", "vault:kv/shared/*"]
    decision: approve
    approvers: [security-leads, sre-leads]
    channel: security
    break_glass: true
  - name: big-exports
    match: { action_class: data_export, data_volume_bytes: { gt: 1GB } }
    decision: approve
    approvers: data-owners
    channel: approvals
    max_ttl: 1h
  - name: small-exports
    match: { action_class: data_export, data_volume_bytes: { lte: 1GB } }
    decision: allow
  - name: ci-writes-staging
    match: { agent: "ci-*", environment: [staging, qa], action_class: write }
    decision: allow
    claim_window: 1m
  - name: reads
    match: { action_class: read }
    decision: allow
    tier: low
    max_ttl: 5m
  - name: no-payroll-reads
    match: { action_class: read, target: "payroll/*" }
    decision: deny
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(POLICY)


def make_intent(**fields: Any) -> Intent:
    base: dict[str, Any] = {
        "agent": "deploy-bot",
        "action": "k8s.get",
        "action_class": ActionClass.READ,
        "target": "cluster/prod-eu",
        "environment": "production",
    }
    base.update(fields)
    return Intent(**base)


DESTRUCTIVE = ActionClass.DESTRUCTIVE
EXPORT = ActionClass.DATA_EXPORT
SECRET = ActionClass.SECRET_READ
WRITE = ActionClass.WRITE


@pytest.mark.parametrize(
    ("fields", "outcome", "rule"),
    [
        pytest.param(
            {"action": "db.drop_database", "action_class": DESTRUCTIVE},
            Outcome.DENY,
            "never-drop-prod-db",
            id="prod-db-drop-denied-although-prod-destructive-also-matches",
        ),
        pytest.param(
            {"action": "db.drop_database", "action_class": DESTRUCTIVE, "environment": "staging"},
            Outcome.DENY,
            None,
            id="staging-db-drop-matches-nothing",
        ),
        pytest.param(
            {"action": "k8s.delete", "action_class": DESTRUCTIVE},
            Outcome.APPROVE,
            "prod-destructive",
            id="prod-destructive",
        ),
        pytest.param(
            {"action": "iam.attach_policy", "action_class": ActionClass.PRIVILEGE_CHANGE},
            Outcome.APPROVE,
            "prod-destructive",
            id="prod-privilege-change",
        ),
        pytest.param(
            {"action": "vault.read", "action_class": SECRET, "target": "vault:kv/prod/db"},
            Outcome.APPROVE,
            "prod-secrets",
            id="secret-read-first-glob",
        ),
        pytest.param(
            {"action": "vault.read", "action_class": SECRET, "target": "vault:kv/shared/x/y"},
            Outcome.APPROVE,
            "prod-secrets",
            id="secret-read-second-glob-star-crosses-slash",
        ),
        pytest.param(
            {"action": "vault.read", "action_class": SECRET, "target": "vault:kv/dev/db"},
            Outcome.DENY,
            None,
            id="secret-read-other-path",
        ),
        pytest.param(
            {"action": "vault.read", "action_class": SECRET, "target": "VAULT:kv/Prod/db"},
            Outcome.APPROVE,
            "prod-secrets",
            id="globs-ignore-letter-case",
        ),
        pytest.param(
            {"action": "s3.export", "action_class": EXPORT, "data_volume_bytes": 2 * 10**9},
            Outcome.APPROVE,
            "big-exports",
            id="export-2GB",
        ),
        pytest.param(
            {"action": "s3.export", "action_class": EXPORT, "data_volume_bytes": 10**9 + 1},
            Outcome.APPROVE,
            "big-exports",
            id="export-one-byte-over-1GB",
        ),
        pytest.param(
            {"action": "s3.export", "action_class": EXPORT, "data_volume_bytes": 10**9},
            Outcome.ALLOW,
            "small-exports",
            id="export-exactly-1GB-is-lte",
        ),
        pytest.param(
            {"action": "s3.export", "action_class": EXPORT},
            Outcome.DENY,
            None,
            id="export-without-volume-meets-no-threshold",
        ),
        pytest.param(
            {
                "agent": "ci-runner-7",
                "action": "helm.upgrade",
                "action_class": WRITE,
                "environment": "staging",
            },
            Outcome.ALLOW,
            "ci-writes-staging",
            id="ci-write-staging",
        ),
        pytest.param(
            {
                "agent": "ci-runner-7",
                "action": "helm.upgrade",
                "action_class": WRITE,
                "environment": "qa",
            },
            Outcome.ALLOW,
            "ci-writes-staging",
            id="ci-write-qa-second-environment",
        ),
        pytest.param(
            {
                "agent": "deploy-bot",
                "action": "helm.upgrade",
                "action_class": WRITE,
                "environment": "staging",
            },
            Outcome.DENY,
            None,
            id="non-ci-agent-write-staging",
        ),
        pytest.param(
            {"agent": "ci-runner-7", "action": "helm.upgrade", "action_class": WRITE},
            Outcome.DENY,
            None,
            id="ci-write-production",
        ),
        pytest.param({}, Outcome.ALLOW, "reads", id="read"),
        pytest.param(
            {"target": "payroll/2024"},
            Outcome.DENY,
            "no-payroll-reads",
            id="later-deny-beats-earlier-allow",
        ),
        pytest.param(
            {"environment": "production-eu", "action_class": DESTRUCTIVE},
            Outcome.DENY,
            None,
            id="environment-is-exact",
        ),
        pytest.param(
            {"environment": "Production", "action_class": DESTRUCTIVE},
            Outcome.APPROVE,
            "prod-destructive",
            id="environment-ignores-letter-case",
        ),
    ],
)
def test_which_rule_decides(
    policy: Policy, fields: dict[str, Any], outcome: Outcome, rule: str | None
) -> None:
    decision = policy.evaluate(make_intent(**fields), NOW)
    assert (decision.outcome, decision.rule) == (outcome, rule)
    assert decision.policy_digest == policy.digest
    assert decision.break_glass is False


def test_approve_decision_carries_the_rule_settings(policy: Policy) -> None:
    decision = policy.evaluate(make_intent(action="k8s.delete", action_class=DESTRUCTIVE), NOW)
    assert decision.tier is Tier.HIGH
    assert decision.approver_groups == ("sre-leads",)
    assert decision.quorum == 2
    assert decision.channel == "C0APPROVALS"
    assert decision.notify_dm is True
    assert decision.max_ttl == timedelta(minutes=10)
    assert decision.approval_timeout == timedelta(minutes=15)
    assert decision.claim_window == timedelta(minutes=2)
    assert decision.step_up is True
    assert decision.escalate_after == timedelta(minutes=10)
    assert decision.escalate_to == "security-leads"
    assert decision.reasons == ("rule prod-destructive requires 2 approval(s) from sre-leads",)


def test_approve_defaults_and_ttl_cap(policy: Policy) -> None:
    intent = make_intent(action="s3.export", action_class=EXPORT, data_volume_bytes=5 * 10**9)
    decision = policy.evaluate(intent, NOW)
    assert decision.tier is Tier.HIGH  # default tier of approve
    assert decision.quorum == 1
    assert decision.max_ttl == timedelta(minutes=15)  # rule says 1h, defaults cap at 15m
    assert decision.approval_timeout == timedelta(minutes=30)
    assert decision.claim_window == timedelta(minutes=5)
    assert decision.notify_dm is False
    assert decision.step_up is False
    assert (decision.escalate_after, decision.escalate_to) == (None, None)


def test_allow_decision(policy: Policy) -> None:
    reads = policy.evaluate(make_intent(), NOW)
    assert (reads.tier, reads.max_ttl) == (Tier.LOW, timedelta(minutes=5))
    assert (reads.quorum, reads.approver_groups, reads.channel) == (0, (), None)
    assert reads.reasons == ("pre-authorised by rule reads",)
    ci = policy.evaluate(
        make_intent(agent="ci-1", action="x", action_class=WRITE, environment="qa"), NOW
    )
    assert ci.claim_window == timedelta(minutes=1)
    assert ci.max_ttl == timedelta(minutes=15)
    small = policy.evaluate(
        make_intent(action="s3.export", action_class=EXPORT, data_volume_bytes=1), NOW
    )
    assert small.tier is Tier.LOW  # default tier of allow


def test_deny_decisions(policy: Policy) -> None:
    drop = policy.evaluate(make_intent(action="db.drop_database", action_class=DESTRUCTIVE), NOW)
    assert drop.tier is Tier.HIGH
    assert drop.reasons == ("Dropping a production database is never automated",)
    assert drop.quorum == 0
    payroll = policy.evaluate(make_intent(target="payroll/x"), NOW)
    assert payroll.reasons == ("denied by rule no-payroll-reads",)
    nothing = policy.evaluate(make_intent(action_class=WRITE), NOW)
    assert (nothing.rule, nothing.tier, nothing.reasons) == (None, Tier.HIGH, (NO_MATCH_REASON,))
    assert nothing.reasons == ("no rule matched (deny by default)",)


BREAK_GLASS_CASES = [
    pytest.param(
        {"action": "vault.read", "action_class": SECRET, "target": "vault:kv/prod/db"},
        Outcome.ALLOW,
        True,
        "break-glass granted by rule prod-secrets",
        id="granted-by-eligible-approve-rule",
    ),
    pytest.param(
        {"action": "k8s.delete", "action_class": DESTRUCTIVE},
        Outcome.APPROVE,
        False,
        "break-glass not permitted by rule prod-destructive",
        id="approve-rule-without-break-glass",
    ),
    pytest.param(
        {"action": "db.drop_database", "action_class": DESTRUCTIVE},
        Outcome.DENY,
        False,
        "break-glass not permitted by rule never-drop-prod-db",
        id="never-overrides-deny",
    ),
    pytest.param(
        {}, Outcome.ALLOW, False, "break-glass not needed: rule reads", id="allow-rule-unchanged"
    ),
    pytest.param({"action_class": WRITE}, Outcome.DENY, False, NO_MATCH_REASON, id="no-match"),
]


@pytest.mark.parametrize(("fields", "outcome", "granted", "reason"), BREAK_GLASS_CASES)
def test_break_glass(
    policy: Policy, fields: dict[str, Any], outcome: Outcome, granted: bool, reason: str
) -> None:
    decision = policy.evaluate(make_intent(break_glass=True, **fields), NOW)
    assert decision.outcome is outcome
    assert decision.break_glass is granted
    assert any(r.startswith(reason) for r in decision.reasons), decision.reasons


def test_break_glass_grant_details(policy: Policy) -> None:
    intent = make_intent(action="vault.read", action_class=SECRET, target="vault:kv/prod/db")
    normal = policy.evaluate(intent, NOW)
    glass = policy.evaluate(replace(intent, break_glass=True), NOW)
    assert normal.outcome is Outcome.APPROVE
    assert glass.max_ttl == timedelta(minutes=5)  # min(5m, effective max_ttl 15m)
    assert glass.rule == normal.rule == "prod-secrets"
    # who would have approved stays on the decision, for the after-the-fact review
    assert glass.approver_groups == normal.approver_groups == ("security-leads", "sre-leads")
    assert glass.channel == "C0SECURITY"


@pytest.mark.parametrize(
    ("rule_ttls", "expected"),
    [
        pytest.param("max_ttl: 3m", timedelta(minutes=3), id="default-capped-by-short-max-ttl"),
        pytest.param("break_glass_ttl: 2m", timedelta(minutes=2), id="explicit"),
        pytest.param("max_ttl: 10m\n    break_glass_ttl: 10m", timedelta(minutes=10), id="equal"),
    ],
)
def test_break_glass_ttl(rule_ttls: str, expected: timedelta) -> None:
    policy = parse_policy(f"""
version: 1
approver_groups: {{ oncall: {{ slack_users: [U0ONE] }} }}
channels: {{ ops: C0OPS }}
rules:
  - name: incident
    match: {{}}
    decision: approve
    approvers: oncall
    channel: ops
    break_glass: true
    {rule_ttls}
""")
    decision = policy.evaluate(make_intent(break_glass=True), NOW)
    assert (decision.outcome, decision.max_ttl) == (Outcome.ALLOW, expected)


def test_match_on_break_glass_flag() -> None:
    policy = parse_policy("""
version: 1
rules:
  - name: glass-only
    match: { break_glass: true }
    decision: deny
    reason: this tenant has no break-glass
  - name: the-rest
    match: { break_glass: false }
    decision: allow
""")
    assert policy.evaluate(make_intent(break_glass=True), NOW).rule == "glass-only"
    assert policy.evaluate(make_intent(break_glass=False), NOW).rule == "the-rest"


@pytest.mark.parametrize(
    ("pattern", "action", "matches"),
    [
        ("db.*", "db.query", True),
        ("db.*", "db.", True),
        ("db.*", "dbx.query", False),
        ("db.?uery", "db.query", True),
        ("db.?uery", "db.qquery", False),
        ("k8s.scale-[0-9]", "k8s.scale-3", True),
        ("k8s.scale-[0-9]", "k8s.scale-x", False),
        ("k8s.scale-[!0-9]", "k8s.scale-x", True),
        ("s3.get", "s3.get", True),
        ("s3.get", "s3.getobject", False),
        ("s3.get", "S3.get", True),  # letter case is ignored, both ways
        ("S3.*", "s3.get", True),
        ("s3.[A-C]*", "s3.bucket", True),
        ("s3.[!a-c]*", "s3.Bucket", False),
        ("*", "", True),
    ],
)
def test_glob_semantics(pattern: str, action: str, matches: bool) -> None:
    policy = parse_policy(
        f'version: 1\nrules:\n  - {{name: r, match: {{action: "{pattern}"}}, decision: allow}}\n'
    )
    decision = policy.evaluate(make_intent(action=action), NOW)
    assert (decision.rule == "r") is matches


@pytest.mark.parametrize(
    ("bounds", "volume", "matches"),
    [
        ("{ gt: 500MB }", 500 * 10**6, False),
        ("{ gt: 500MB }", 500 * 10**6 + 1, True),
        ("{ gte: 500MB }", 500 * 10**6, True),
        ("{ lt: 2GiB }", 2 * 2**30, False),
        ("{ lt: 2GiB }", 2 * 2**30 - 1, True),
        ("{ lte: 1024 }", 1024, True),
        ("{ gte: 1MB, lt: 1GB }", 10**6, True),
        ("{ gte: 1MB, lt: 1GB }", 10**9, False),
        ("{ gte: 1MB, lt: 1GB }", 10**6 - 1, False),
        ("{ gte: 0 }", None, False),
    ],
)
def test_volume_thresholds(bounds: str, volume: int | None, matches: bool) -> None:
    policy = parse_policy(
        f"version: 1\nrules:\n  - {{name: v, match: {{data_volume_bytes: {bounds}}}, "
        "decision: allow}\n"
    )
    decision = policy.evaluate(make_intent(data_volume_bytes=volume), NOW)
    assert (decision.rule == "v") is matches


def test_empty_policy_denies_everything() -> None:
    policy = parse_policy("version: 1\nrules: []\n")
    for action_class in ActionClass:
        decision = policy.evaluate(make_intent(action_class=action_class), NOW)
        assert (decision.outcome, decision.rule) == (Outcome.DENY, None)


def test_empty_match_matches_everything() -> None:
    policy = parse_policy("version: 1\nrules:\n  - {name: all, match: {}, decision: allow}\n")
    assert policy.evaluate(make_intent(action="anything", environment="x"), NOW).rule == "all"


def test_naive_now_is_refused(policy: Policy) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        policy.evaluate(make_intent(), datetime(2024, 5, 15, 10, 0))


def test_groups_channels_and_names(policy: Policy) -> None:
    sre = policy.group("sre-leads")
    assert sre.slack_users == frozenset({"U0ALICE", "U0BOB"})
    assert sre.emails == frozenset({"carol@example.com"})  # lowercased
    assert sre.static_size() == 3
    assert sre.has_member("U0ZED", "CAROL@example.com")
    assert not sre.has_member("U0ZED", "mallory@example.com")
    assert policy.group("security-leads").slack_usergroup == "S0SEC"
    assert policy.group("security-leads").static_size() == 0
    with pytest.raises(NotFound):
        policy.group("nobody")
    assert policy.channels == {"approvals": "C0APPROVALS", "security": "C0SECURITY"}
    assert policy.rule_names[0] == "never-drop-prod-db"
    assert len(policy.rule_names) == 8
    with pytest.raises(TypeError):
        policy.groups["x"] = sre  # type: ignore[index]


def test_repeated_evaluation_uses_memo_consistently(policy: Policy) -> None:
    intent = make_intent(action="k8s.delete", action_class=DESTRUCTIVE)
    first = policy.evaluate(intent, NOW)
    assert policy.evaluate(intent, NOW) is first  # decisions are built once, at load
    assert policy.evaluate(replace(intent, target="payroll/x"), NOW) is first


def test_memo_clearing_keeps_answers_right(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.policy.engine as engine

    monkeypatch.setattr(engine, "_KEY_CACHE", 2)
    monkeypatch.setattr(engine, "_SCOPE_CACHE", 2)
    policy = parse_policy(POLICY)
    cases = [
        (make_intent(action="db.drop_database", action_class=DESTRUCTIVE), "never-drop-prod-db"),
        (make_intent(action="k8s.delete", action_class=DESTRUCTIVE), "prod-destructive"),
        (make_intent(target="payroll/1"), "no-payroll-reads"),
        (make_intent(), "reads"),
        (make_intent(action_class=WRITE, environment="qa", agent="ci-2"), "ci-writes-staging"),
    ]
    for _ in range(3):
        for intent, rule in cases:
            assert policy.evaluate(intent, NOW).rule == rule
    assert len(policy._by_key) <= 2
