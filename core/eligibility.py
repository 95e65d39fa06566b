"""Who may decide on a request: separation of duties, group membership, escalation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from core.errors import NotEligible
from core.model import Approver


@dataclass(frozen=True, slots=True)
class GroupMembers:
    """One approver group as the engine sees it (resolved from the policy)."""

    name: str
    slack_users: frozenset[str]
    emails: frozenset[str]  # lowercased
    slack_usergroup: str | None = None


def _same_email(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.strip().lower() == b.strip().lower()


def check_eligible(
    approver: Approver,
    *,
    groups: Iterable[GroupMembers],
    sponsor_email: str | None,
    owner_email: str | None,
    usergroup_members: Mapping[str, frozenset[str]] | None = None,
) -> str:
    """Return the name of the group that makes ``approver`` eligible, or raise NotEligible.

    Fails closed: without a known email nobody can prove they are not the sponsor or owner,
    and a user group whose members were not resolved admits nobody.
    """
    if not approver.email:
        raise NotEligible(
            "your Slack profile has no email stepup can read, so separation of duties "
            "cannot be checked",
            why="ineligible",
        )
    if _same_email(approver.email, sponsor_email):
        raise NotEligible("you sponsor this request, so you cannot approve it", why="sponsor")
    if _same_email(approver.email, owner_email):
        raise NotEligible("you own the requesting agent, so you cannot approve it", why="owner")
    email = approver.email.strip().lower()
    members = usergroup_members or {}
    for group in groups:
        if approver.slack_user_id in group.slack_users or email in group.emails:
            return group.name
        if group.slack_usergroup and approver.slack_user_id in members.get(
            group.slack_usergroup, frozenset()
        ):
            return group.name
    raise NotEligible("you are not an approver for this request", why="ineligible")
