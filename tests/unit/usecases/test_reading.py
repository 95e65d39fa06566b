"""Who may read a request: its approvers, its sponsor and its agent's owner; to anyone else it
does not exist (the same NotFound as an unknown id)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from core.errors import NotFound
from core.model import Approver, Status, Vote
from tests.support import OWNER, SPONSOR, intent
from tests.unit.usecases.conftest import AGENT, T0, World, build_world

POLICY = """\
version: 1
approver_groups:
  sre: { slack_users: [U0ALICE], emails: [bob@example.com] }
  oncall: { slack_usergroup: S0ONCALL }
  backup: { slack_users: [U0FRED] }
channels: { approvals: C0APPROVALS }
rules:
  - name: prod
    match: { environment: production }
    decision: approve
    approvers: [sre, oncall]
    quorum: 1
    channel: approvals
    escalate_after: 10m
    escalate_to: backup
"""
ONCALL = {"S0ONCALL": frozenset({"U0DAVE"})}

ALICE = Approver("U0ALICE", "alice@example.com", "Alice")  # in sre by Slack id
BOB = Approver("U0BOB", "bob@example.com", "Bob")  # in sre by email
DAVE = Approver("U0DAVE", "dave@example.com", "Dave")  # in the oncall Slack user group
FRED = Approver("U0FRED", "fred@example.com", "Fred")  # the escalation group, once it is due
EVE = Approver("U0EVE", "eve@example.com", "Eve")  # nobody to this request
SAM = Approver("U0SAM", SPONSOR.upper(), "Sam")  # the sponsor, email in another case
OLGA = Approver("U0OLGA", OWNER, "Olga")  # the agent's owner


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build_world(tmp_path, POLICY)


def submitted(world: World) -> str:
    snap, _ = world.service.submit(AGENT, intent(AGENT, on_behalf_of=SPONSOR), now=T0)
    assert snap.status is Status.PENDING
    return snap.id


def read(world: World, request_id: str, person: Approver, *, minutes: int = 1) -> str:
    now = T0 + timedelta(minutes=minutes)
    return world.service.get_for_person(request_id, person, now=now, usergroup_members=ONCALL).id


@pytest.mark.parametrize("person", [ALICE, BOB, DAVE, SAM, OLGA], ids=lambda p: p.slack_user_id)
def test_the_parties_see_the_request(world: World, person: Approver) -> None:
    request_id = submitted(world)
    assert read(world, request_id, person) == request_id


def test_anyone_else_gets_the_answer_of_an_unknown_id(world: World) -> None:
    request_id = submitted(world)
    with pytest.raises(NotFound) as hidden:
        read(world, request_id, EVE)
    with pytest.raises(NotFound) as missing:
        read(world, "req_doesnotexist", EVE)
    assert hidden.value.detail == f"no request {request_id}"
    assert missing.value.detail == "no request req_doesnotexist"
    # Close to a party is not a party: a similar email, no email, an unresolved user group.
    for stranger in (
        Approver("U0X", "sam@example.com.evil.test", None),
        Approver("U0ALICE2", None, "Alice without an email"),
    ):
        with pytest.raises(NotFound):
            read(world, request_id, stranger)
    with pytest.raises(NotFound):
        world.service.get_for_person(request_id, DAVE, now=T0, usergroup_members={})


def test_the_escalation_group_sees_the_request_once_it_is_due(world: World) -> None:
    request_id = submitted(world)
    with pytest.raises(NotFound):
        read(world, request_id, FRED, minutes=9)
    assert read(world, request_id, FRED, minutes=11) == request_id


def test_the_dashboards_live_half_follows_the_same_rule(world: World, tmp_path: Path) -> None:
    request_id = submitted(world)
    world.service.vote(request_id, ALICE, Vote.APPROVE, now=T0)
    _, live = world.service.dashboard(ALICE, now=T0, usergroup_members=ONCALL)
    assert [s.id for s in live] == [request_id]
    # A policy change takes Alice out of every group: she no longer sees the request anywhere.
    reloaded = tmp_path / "policy.yaml"
    reloaded.write_text(POLICY.replace("slack_users: [U0ALICE]", "slack_users: [U0CAROL]"))
    world.service.policy.reload(reloaded)
    _, live = world.service.dashboard(ALICE, now=T0, usergroup_members=ONCALL)
    assert live == []
    with pytest.raises(NotFound):
        read(world, request_id, ALICE)
