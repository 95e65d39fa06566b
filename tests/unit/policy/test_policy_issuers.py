"""The policy's ``issuers:`` map and each rule's ``issuer:``/``grant:``, as ``policy check``
reads them: every refusal names where, and the grant template is held to its issuer's shape."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.errors import PolicyError
from core.policy import parse_policy

ISSUERS = """version: 1
issuers:
  orders-db: { type: postgres, admin_dsn_env: ORDERS_DB_ADMIN_DSN }
  aws-prod:
    type: aws_sts
    role_arn: arn:aws:iam::123456789012:role/agent-ops
    region: eu-west-1
  broker: { type: http, url: https://broker.internal/stepup }
rules:
"""


def rule(*lines: str, name: str = "r") -> str:
    body = [f"  - name: {name}", "    match: { action: db.query }", "    decision: allow"]
    return "\n".join(body + [f"    {line}" for line in lines]) + "\n"


def refused(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    return caught.value


def test_a_rule_with_an_issuer_carries_it_and_its_grant_template() -> None:
    policy = parse_policy(
        ISSUERS + rule("issuer: orders-db", 'grant: { member_of: ["{parameters.role}"] }')
    )
    decision = policy.rules[0].decision
    assert decision.issuer is not None and decision.issuer.type == "postgres"
    assert decision.grant == {"member_of": ["{parameters.role}"]}
    assert set(policy.issuers) == {"orders-db", "aws-prod", "broker"}


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        pytest.param(
            "version: 1\nissuers:\n  x: { type: ldap }\nrules: []\n",
            "issuers.x",
            "type must be one of postgres, vault, aws_sts, github_app, http",
            id="unknown-type",
        ),
        pytest.param(
            "version: 1\nissuers:\n  x: { type: postgres, admin_dsn: postgresql://a:b@h/d }\n"
            "rules: []\n",
            "issuers.x",
            "admin_dsn",
            id="inline-secret-refused",
        ),
        pytest.param(
            ISSUERS + rule("issuer: nowhere"),
            "rules[0] (r).issuer",
            "unknown issuer 'nowhere'",
            id="unknown-issuer",
        ),
        pytest.param(
            ISSUERS + rule("grant: { member_of: [x] }"),
            "rules[0] (r).grant",
            "grant needs issuer",
            id="grant-without-issuer",
        ),
        pytest.param(
            ISSUERS + rule("issuer: orders-db", 'grant: { member_of: ["{secret}"] }'),
            "rules[0] (r).grant.member_of[0]",
            "unknown placeholder {secret}",
            id="unknown-placeholder",
        ),
        pytest.param(
            ISSUERS + rule("issuer: orders-db", 'grant: { member_of: ["{target"] }'),
            "rules[0] (r).grant.member_of[0]",
            "unbalanced",
            id="unbalanced-brace",
        ),
        pytest.param(
            ISSUERS + rule("issuer: orders-db", 'grant: { tables: { "{tabel}": [SELECT] } }'),
            "rules[0] (r).grant.tables.{tabel}",
            "unknown placeholder {tabel}",
            id="unknown-placeholder-in-a-key",
        ),
        pytest.param(
            ISSUERS + rule("issuer: orders-db", "grant: { member_of: [Robert'); DROP] }"),
            "rules[0] (r).grant.member_of",
            "",
            id="grant-shape-of-the-issuer",
        ),
        pytest.param(
            ISSUERS
            + rule(
                "issuer: aws-prod",
                "max_ttl: 10m",
                "grant: { actions: [s3:GetObject], resources: ['arn:aws:s3:::b/*'] }",
            ),
            "rules[0] (r).max_ttl",
            "shorter than the aws_sts issuer's minimum of 15m",
            id="aws-min-ttl",
        ),
        pytest.param(
            ISSUERS
            + "  - name: r\n    match: { action: db.query }\n    decision: deny\n"
            + "    issuer: orders-db\n",
            "rules[0] (r).issuer",
            "no effect on a rule with decision deny",
            id="issuer-on-deny",
        ),
    ],
)
def test_refusals_name_where(text: str, where: str, words: str) -> None:
    error = refused(text)
    assert error.location == where, error
    assert words in error.detail


def test_break_glass_on_an_sts_rule_lasts_at_least_the_sts_minimum() -> None:
    text = ISSUERS.replace(
        "rules:\n",
        "approver_groups:\n  g: { slack_users: [U0A] }\nchannels: { a: C0A }\nrules:\n",
    )
    text += (
        "  - name: r\n    match: { action: deploy }\n    decision: approve\n    approvers: g\n"
        "    channel: a\n"
        "    max_ttl: 30m\n    break_glass: true\n    issuer: aws-prod\n"
        "    grant: { actions: [s3:GetObject], resources: ['arn:aws:s3:::b/*'] }\n"
    )
    policy = parse_policy(text)
    assert policy.rules[0].on_break_glass.max_ttl == timedelta(minutes=15)
    short = text.replace(
        "    break_glass: true\n", "    break_glass: true\n    break_glass_ttl: 5m\n"
    )
    assert refused(short).location == "rules[0] (r).break_glass_ttl"
