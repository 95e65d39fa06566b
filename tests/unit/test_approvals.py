from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.approvals import (
    approver_emails,
    check_eligible,
    eligible_groups,
    has_voted,
    tally,
)
from core.errors import NotEligible
from core.model import Approver
from core.policy.compiled import ApproverGroup
from core.snapshots import VoteInfo
from core.terms import Terms

SRE = ApproverGroup("sre-leads", frozenset({"U0ALICE"}), frozenset({"bob@example.com"}), "S0SRE")


def eligible(approver: Approver, **kw: object) -> str:
    args: dict[str, object] = {
        "groups": [SRE],
        "sponsor_email": "sam@example.com",
        "owner_email": "olga@example.com",
    }
    args.update(kw)
    return check_eligible(approver, **args)  # type: ignore[arg-type]


def test_member_by_slack_id_email_and_usergroup() -> None:
    assert eligible(Approver("U0ALICE", "alice@example.com")) == "sre-leads"
    assert eligible(Approver("U0BOB", "BOB@Example.com")) == "sre-leads"
    assert (
        eligible(
            Approver("U0CARL", "carl@example.com"),
            usergroup_members={"S0SRE": frozenset({"U0CARL"})},
        )
        == "sre-leads"
    )


@pytest.mark.parametrize(
    ("approver", "why"),
    [
        (Approver("U0EVE", "eve@example.com"), "ineligible"),
        (Approver("U0ALICE", "Sam@example.com"), "sponsor"),
        (Approver("U0ALICE", "olga@example.com"), "owner"),
        (Approver("U0ALICE", None), "ineligible"),  # no email: separation of duties unprovable
        (Approver("U0CARL", "carl@example.com"), "ineligible"),  # usergroup not resolved
    ],
)
def test_refusals(approver: Approver, why: str) -> None:
    with pytest.raises(NotEligible) as info:
        eligible(approver)
    assert info.value.why == why


def test_no_groups_admits_nobody() -> None:
    with pytest.raises(NotEligible):
        eligible(Approver("U0ALICE", "alice@example.com"), groups=[])


# -- who counts: one rule for deciding, escalation, sessions and the cards ---------------

AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _vote(slack_id: str, email: str | None, vote: str = "approve") -> VoteInfo:
    return VoteInfo(slack_id, email, None, vote, None, AT)


def test_tally_counts_distinct_people_not_clicks() -> None:
    votes = [
        _vote("U0ALICE", "Alice@example.com"),
        _vote("U0ALICE2", "alice@example.com"),  # the same person's second Slack account
        _vote("U0BOB", None),
        _vote("U0CAROL", "carol@example.com", "deny"),
    ]
    count = tally(votes, 3)
    assert count.approvers == ("alice@example.com", "u0bob")
    assert (count.received, count.missing, count.reached) == (2, 1, False)
    assert tally(votes, 2).reached


def test_has_voted_by_slack_id_or_email() -> None:
    votes = [_vote("U0ALICE", "alice@example.com")]
    assert has_voted(votes, Approver("U0ALICE", None))
    assert has_voted(votes, Approver("U0OTHER", "ALICE@example.com"))
    assert not has_voted(votes, Approver("U0BOB", "bob@example.com"))
    assert not has_voted([_vote("U0X", None)], Approver("U0Y", None))


def test_credential_approvers_are_emails_of_approvals_only() -> None:
    votes = [_vote("U0B", "b@x.io"), _vote("U0A", "a@x.io"), _vote("U0C", "c@x.io", "deny")]
    assert approver_emails(votes) == ("a@x.io", "b@x.io")


def test_escalation_group_joins_only_once_due() -> None:
    esc = ApproverGroup("oncall", frozenset({"U0ON"}), frozenset())
    groups = {"sre-leads": SRE, "oncall": esc}
    terms = Terms(
        approver_groups=("sre-leads", "gone"), escalate_after_seconds=600, escalate_to="oncall"
    )
    assert eligible_groups(terms, AT, groups, AT + timedelta(seconds=599)) == [SRE]
    assert eligible_groups(terms, AT, groups, AT + timedelta(seconds=600)) == [SRE, esc]
