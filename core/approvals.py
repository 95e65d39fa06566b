"""Who may decide on a request and how many distinct people approved it: the one rule.

Deciding, escalation, revocation from Slack, the dashboard, the credential's ``approvers``
claim and the cards all count through here, so "who approved" means the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.errors import NotEligible
from core.model import Approver, Vote
from core.policy.compiled import ApproverGroup
from core.snapshots import RequestSnapshot, VoteInfo
from core.terms import Terms


def person_of(email: str | None, slack_user_id: str) -> str:
    """The identity a click counts for: the email when known (one person, several Slack
    accounts), else the Slack user id. Lowercased."""
    return (email or slack_user_id).strip().lower()


def has_voted(votes: Iterable[VoteInfo], approver: Approver) -> bool:
    """Whether this person already clicked (by Slack id or by email): a click counts once."""
    email = (approver.email or "").strip().lower()
    return any(
        v.slack_user_id == approver.slack_user_id or (email and (v.email or "").lower() == email)
        for v in votes
    )


@dataclass(frozen=True, slots=True)
class Tally:
    """Distinct approvers so far against the quorum."""

    required: int
    approvers: tuple[str, ...]  # distinct people, sorted (see ``person_of``)

    @property
    def received(self) -> int:
        return len(self.approvers)

    @property
    def reached(self) -> bool:
        return self.received >= self.required

    @property
    def missing(self) -> int:
        return max(0, self.required - self.received)


def tally(votes: Iterable[VoteInfo], quorum: int) -> Tally:
    people = {person_of(v.email, v.slack_user_id) for v in votes if v.vote == Vote.APPROVE.value}
    return Tally(required=quorum, approvers=tuple(sorted(people)))


def approver_emails(votes: Iterable[VoteInfo]) -> tuple[str, ...]:
    """The approvers' emails, for the credential's ``approvers`` claim."""
    return tuple(sorted({v.email for v in votes if v.vote == Vote.APPROVE.value and v.email}))


def escalation_due(terms: Terms, created_at: datetime, now: datetime) -> bool:
    return (
        terms.escalate_to is not None
        and terms.escalate_after_seconds is not None
        and now >= created_at + timedelta(seconds=terms.escalate_after_seconds)
    )


def eligible_groups(
    terms: Terms, created_at: datetime, groups: Mapping[str, ApproverGroup], now: datetime
) -> list[ApproverGroup]:
    """The groups whose members may decide now: the rule's, plus the escalation group once
    it is due. A group removed by a policy reload admits nobody."""
    names = list(terms.approver_groups)
    if escalation_due(terms, created_at, now) and terms.escalate_to is not None:
        names.append(terms.escalate_to)
    return [groups[name] for name in names if name in groups]


def _same_email(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.strip().lower() == b.strip().lower()


def check_eligible(
    approver: Approver,
    *,
    groups: Iterable[ApproverGroup],
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
    members = usergroup_members or {}
    for group in groups:
        if group.has_member(approver.slack_user_id, approver.email.strip()):
            return group.name
        if group.slack_usergroup and approver.slack_user_id in members.get(
            group.slack_usergroup, frozenset()
        ):
            return group.name
    raise NotEligible("you are not an approver for this request", why="ineligible")


def is_sponsor_or_owner(person: Approver, sponsor_email: str | None, owner_email: str) -> bool:
    """The sponsor and the agent's owner may revoke (never approve) their own request."""
    return _same_email(person.email, sponsor_email) or _same_email(person.email, owner_email)


def check_party(
    person: Approver,
    snap: RequestSnapshot,
    *,
    groups: Mapping[str, ApproverGroup],
    now: datetime,
    usergroup_members: Mapping[str, frozenset[str]] | None = None,
) -> None:
    """Raise NotEligible unless ``person`` is one of the request's parties: its sponsor or
    its agent's owner (by exact email, any case), or someone eligible to approve it under its
    frozen terms (user-group and, once due, escalation members included). The parties may see
    a request in Slack and revoke it."""
    if is_sponsor_or_owner(person, snap.on_behalf_of, snap.owner_email):
        return
    check_eligible(
        person,
        groups=eligible_groups(snap.terms, snap.created_at, groups, now),
        sponsor_email=None,
        owner_email=None,
        usergroup_members=usergroup_members,
    )
