"""The shipped example policy loads and says what its comments promise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.model import ActionClass, Intent, Outcome, Tier
from core.policy import Policy, load_policy

EXAMPLE = Path(__file__).resolve().parents[3] / "manifests" / "policy.example.yaml"
WEDNESDAY_NOON = datetime(2024, 5, 15, 10, 0, tzinfo=UTC)  # 12:00 in Paris
SATURDAY_NOON = datetime(2024, 5, 18, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(EXAMPLE)


def test_example_loads(policy: Policy) -> None:
    assert policy.rule_names == (
        "never-drop-prod-db",
        "no-exports-after-hours",
        "prod-destructive",
        "prod-secret-read",
        "large-data-export",
        "reads",
        "staging-writes",
        "dev-anything",
    )
    assert set(policy.groups) == {"sre-leads", "security-leads", "data-owners"}
    assert dict(policy.channels) == {"approvals": "C0APPROVALS", "security": "C0SECURITY"}
    assert policy.defaults.timezone == "Europe/Paris"


def ask(**fields: Any) -> Intent:
    base: dict[str, Any] = {
        "agent": "ops-agent",
        "action": "k8s.get",
        "action_class": ActionClass.READ,
        "target": "cluster/eu",
        "environment": "production",
    }
    return Intent(**(base | fields))


GB = 10**9


@pytest.mark.parametrize(
    ("intent", "now", "outcome", "rule"),
    [
        (
            ask(action="db.drop_database", action_class=ActionClass.DESTRUCTIVE),
            WEDNESDAY_NOON,
            Outcome.DENY,
            "never-drop-prod-db",
        ),
        (
            ask(action="iam.attach", action_class=ActionClass.PRIVILEGE_CHANGE),
            WEDNESDAY_NOON,
            Outcome.APPROVE,
            "prod-destructive",
        ),
        (
            ask(action="vault.read", action_class=ActionClass.SECRET_READ),
            WEDNESDAY_NOON,
            Outcome.APPROVE,
            "prod-secret-read",
        ),
        (
            ask(action="vault.read", action_class=ActionClass.SECRET_READ, break_glass=True),
            WEDNESDAY_NOON,
            Outcome.ALLOW,
            "prod-secret-read",
        ),
        (
            ask(action="s3.export", action_class=ActionClass.DATA_EXPORT, data_volume_bytes=2 * GB),
            WEDNESDAY_NOON,
            Outcome.APPROVE,
            "large-data-export",
        ),
        (
            ask(action="s3.export", action_class=ActionClass.DATA_EXPORT, data_volume_bytes=2 * GB),
            SATURDAY_NOON,
            Outcome.DENY,
            "no-exports-after-hours",
        ),
        (
            ask(
                action="s3.export",
                action_class=ActionClass.DATA_EXPORT,
                environment="dev",
                data_volume_bytes=GB // 2,
            ),
            SATURDAY_NOON,
            Outcome.DENY,
            "no-exports-after-hours",
        ),
        (ask(), SATURDAY_NOON, Outcome.ALLOW, "reads"),
        (
            ask(action="helm.upgrade", action_class=ActionClass.WRITE, environment="staging"),
            WEDNESDAY_NOON,
            Outcome.ALLOW,
            "staging-writes",
        ),
        (
            ask(action="helm.upgrade", action_class=ActionClass.WRITE),
            WEDNESDAY_NOON,
            Outcome.DENY,
            None,
        ),
        (
            ask(action="k8s.delete", action_class=ActionClass.DESTRUCTIVE, environment="dev"),
            WEDNESDAY_NOON,
            Outcome.ALLOW,
            "dev-anything",
        ),
    ],
)
def test_example_decisions(
    policy: Policy, intent: Intent, now: datetime, outcome: Outcome, rule: str | None
) -> None:
    decision = policy.evaluate(intent, now)
    assert (decision.outcome, decision.rule) == (outcome, rule)


def test_example_prod_destructive_settings(policy: Policy) -> None:
    decision = policy.evaluate(
        ask(action="k8s.delete", action_class=ActionClass.DESTRUCTIVE), WEDNESDAY_NOON
    )
    assert decision.tier is Tier.CRITICAL
    assert (decision.quorum, decision.step_up, decision.notify_dm) == (2, True, True)
    assert decision.escalate_to == "security-leads"
    assert decision.escalate_after == timedelta(minutes=10)
    assert decision.max_ttl == timedelta(minutes=10)
