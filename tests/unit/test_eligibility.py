from __future__ import annotations

import pytest

from core.eligibility import GroupMembers, check_eligible
from core.errors import NotEligible
from core.model import Approver

SRE = GroupMembers("sre-leads", frozenset({"U0ALICE"}), frozenset({"bob@example.com"}), "S0SRE")


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
