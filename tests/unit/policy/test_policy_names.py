"""Names in the policy file: match patterns no canonical name could meet are refused, naming the
rule; approver group ids are canonical (NFKC, the safe set) where defined and referred to."""

from __future__ import annotations

import pytest

from core.errors import PolicyError
from core.policy import parse_policy

GROUPS = """version: 1
approver_groups:
  sre-leads: { slack_users: [U0ALICE] }
channels: { approvals: C0APPROVALS }
rules:
"""


def rule(match: str, name: str = "hands-off") -> str:
    return GROUPS + f"  - name: {name}\n    match: {match}\n    decision: deny\n"


def refused(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    return caught.value


@pytest.mark.parametrize(
    ("match", "field", "named"),
    [
        ('{ target: "p\u0430yments-*" }', "target[0]", "U+0430 (CYRILLIC SMALL LETTER A)"),
        ('{ target: ["orders", "payments *"] }', "target[1]", "space U+0020 at position 9"),
        ('{ action: "\uff44b.*" }', "action[0]", "U+FF44"),
        ('{ agent: "ci\u200b-*" }', "agent[0]", "invisible format character U+200B"),
        ('{ agent: "ci-{a,b}" }', "agent[0]", "U+007B"),
        ('{ environment: "prod*" }', "environment[0]", "U+002A (ASTERISK) at position 5"),
        ('{ environment: [staging, "Pr\u043eduction"] }', "environment[1]", "U+043E"),
    ],
)
def test_a_pattern_that_could_never_match_is_refused_naming_the_rule(
    match: str, field: str, named: str
) -> None:
    error = refused(rule(match))
    assert error.location == f"rules[0] (hands-off).match.{field}"
    assert "can never match" in error.detail and named in error.detail, error.detail


def test_safe_patterns_with_glob_characters_are_accepted() -> None:
    policy = parse_policy(
        rule('{ target: ["payments-[!x]*", "vault:kv/*", "a?b", "ops@x+y=z"], agent: "CI-*" }')
    )
    assert policy.rule_names == ("hands-off",)


def test_group_ids_are_canonical_where_defined_and_where_referred_to() -> None:
    text = (
        GROUPS.replace("sre-leads:", "\uff53\uff52\uff45-leads:")  # fullwidth "sre"
        + "  - name: prod\n    match: { environment: production }\n    decision: approve\n"
        + "    approvers: [sre-leads]\n    channel: approvals\n"
        + "    escalate_to: \uff53re-leads\n    escalate_after: 5m\n"
    )
    policy = parse_policy(text)
    assert set(policy.groups) == {"sre-leads"}
    decision = policy.rules[0].decision
    assert decision.approver_groups == ("sre-leads",) and decision.escalate_to == "sre-leads"


@pytest.mark.parametrize(
    ("key", "named"),
    [
        ("sr\u0435-leads", "U+0435 (CYRILLIC SMALL LETTER IE)"),
        ('"sre-leads\\n"', "control character U+000A at position 10"),
        ('"sre leads"', "space U+0020"),
    ],
)
def test_a_group_id_outside_the_safe_set_is_refused(key: str, named: str) -> None:
    error = refused(GROUPS.replace("sre-leads:", f"{key}:"))
    assert error.location.startswith("approver_groups")
    assert named in error.detail, error.detail


@pytest.mark.parametrize("other", ["\uff53\uff52\uff45-leads", "SRE-leads"])
def test_two_groups_that_are_one_name_once_canonical_are_refused(other: str) -> None:
    text = GROUPS.replace(
        "  sre-leads: { slack_users: [U0ALICE] }\n",
        f"  sre-leads: {{ slack_users: [U0ALICE] }}\n  {other}: {{ slack_users: [U0BOB] }}\n",
    )
    error = refused(text)
    assert error.location == "approver_groups"
    assert "are one name once normalised" in error.detail


def test_a_reference_in_another_letter_case_is_named() -> None:
    text = (
        GROUPS
        + "  - name: prod\n    match: { environment: production }\n    decision: approve\n"
        + "    approvers: SRE-Leads\n    channel: approvals\n"
    )
    error = refused(text)
    assert error.location == "rules[0] (prod).approvers"
    assert "letter case differs from 'sre-leads'" in error.detail


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("tbl[A-_]*", "tbl_users", True),  # folding the text would make "[a-_]": empty
        ("tbl[A-_]*", "tblXusers", True),
        ("tbl[A-_]*", "tblxusers", True),  # letter case ignored
        ("tbl[A-b]*", "tbl_users", True),  # "[a-b]" would lose "_" and C-Z
        ("tbl[A-b]*", "tblzusers", True),
        ("tbl[0-Z]*", "tbl_users", False),  # "[0-z]" would widen it to "_"
        ("tbl[0-Z]*", "tblqusers", True),
        ("PAY*", "payments", True),
        ("pay*", "PAYMENTS", True),
    ],
)
def test_glob_ranges_keep_their_meaning_when_letter_case_is_ignored(
    pattern: str, value: str, expected: bool
) -> None:
    from core.policy.matchers import GlobSet

    assert GlobSet([pattern]).matches(value) is expected
