"""Who sees a request in Slack, over real HTTP: its approvers (user-group members included), its
sponsor and its agent's owner. To anyone else ``/stepup status``, ``/stepup revoke``, the App
Home and a late click answer exactly as for an id that does not exist."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.slack.cards import APPROVE
from bot.slack.handlers import no_request
from bot.slack_emulator.entities import Call
from core.model import Status, Vote
from core.storage.database import Database
from tests.integration.slack_env import SPONSOR, SlackLive, slack_live

POLICY = """\
version: 1
defaults: { approval_timeout: 30m, claim_window: 5m, max_ttl: 15m }
approver_groups:
  sre-leads: { slack_users: [U0ALICE] }
  oncall: { slack_usergroup: S0ONCALL }
channels: { approvals: C0APPROVALS }
rules:
  - name: prod
    match: { environment: production }
    decision: approve
    approvers: [sre-leads, oncall]
    quorum: 1
    channel: approvals
  - name: staging-typed
    match: { environment: staging }
    decision: approve
    approvers: sre-leads
    quorum: 1
    channel: approvals
    step_up: true
"""


@pytest.fixture
def live(db: Database, tmp_path: Path) -> Iterator[SlackLive]:
    with slack_live(db, tmp_path, POLICY) as env:
        yield env


def told(live: SlackLive, user: str, send: object) -> str:
    """Send (a callable), then wait for and return the next ephemeral this user is shown."""
    before = len(live.slack.ephemerals(user))
    assert callable(send)
    assert send().status_code == 200
    live.eventually(lambda: len(live.slack.ephemerals(user)) > before)
    return live.slack.ephemerals(user)[before].text


def status(live: SlackLive, user: str, request_id: str) -> str:
    return told(live, user, lambda: live.sim.slash("/stepup", f"status {request_id}", user))


def home(live: SlackLive, user: str) -> str:
    def published(c: Call) -> bool:
        return c.method == "views.publish" and c.params.get("user_id") == user

    before = len([c for c in live.slack.calls() if published(c)])
    assert live.sim.app_home_opened(user).status_code == 200
    live.slack.wait_for(published, count=before + 1)
    view = live.slack.home(user)
    assert view is not None
    return json.dumps(view.payload)


def test_status_answers_the_parties_and_no_one_else(live: SlackLive) -> None:
    req = live.submit(on_behalf_of=SPONSOR.upper())  # the sponsor's email, in another case
    live.card(req.id)
    # Alice by the group's list, Dave through the Slack user group, Sam the sponsor, Olga the
    # agent's owner.
    for party in ("U0ALICE", "U0DAVE", "U0SAM", "U0OLGA"):
        assert status(live, party, req.id).startswith("*pending* — "), party
    unknown = "req_0000000000000000000000"
    for stranger in ("U0EVE", "U0CAROL"):
        assert status(live, stranger, req.id) == no_request(req.id)
        assert status(live, stranger, unknown) == no_request(unknown)


def test_a_late_click_and_the_step_up_modal_show_nothing_to_a_stranger(live: SlackLive) -> None:
    req = live.submit(environment="staging", action_class="write")
    card = live.card(req.id)
    # Pending and typed-confirmation: a party gets the modal, a stranger only the refusal.
    refused = told(live, "U0EVE", lambda: live.sim.click(APPROVE, req.id, "U0EVE", message=card))
    assert "not an approver" in refused
    assert live.slack.views_opened() == []
    live.sim.click(APPROVE, req.id, "U0ALICE", message=card)
    live.slack.wait_for("views.open")
    assert req.target in json.dumps(live.slack.views_opened()[0].payload)

    live.engine.service.vote(
        req.id,
        live.runtime.actions.directory.approver("U0ALICE"),
        Vote.APPROVE,
        now=datetime.now(UTC),
        confirmation=req.target,
    )
    assert live.engine.service.get(req.id).status is Status.APPROVED
    late = told(live, "U0EVE", lambda: live.sim.click(APPROVE, req.id, "U0EVE", message=card))
    assert late == no_request(req.id)
    party = told(live, "U0OLGA", lambda: live.sim.click(APPROVE, req.id, "U0OLGA", message=card))
    assert "Already approved by Alice Archer" in party


def test_revoke_by_a_stranger_is_the_answer_for_no_such_request(live: SlackLive) -> None:
    req = live.submit()
    live.card(req.id)
    text = told(live, "U0EVE", lambda: live.sim.slash("/stepup", f"revoke {req.id}", "U0EVE"))
    assert text == no_request(req.id)
    assert live.engine.service.get(req.id).status is Status.PENDING


def test_the_app_home_shows_live_credentials_only_to_who_may_still_see_them(
    live: SlackLive,
) -> None:
    req = live.submit()
    card = live.card(req.id)
    assert req.id in home(live, "U0DAVE")  # pending, and Dave may decide it
    assert req.id not in home(live, "U0EVE")
    live.sim.click(APPROVE, req.id, "U0ALICE", message=card)
    live.eventually(lambda: live.engine.service.get(req.id).status is Status.APPROVED)
    assert req.id in home(live, "U0ALICE")  # a live credential she approved
    # The policy takes Alice out of the request's groups: its credential leaves her Home.
    path = live.engine.policy_path
    path.write_text(POLICY.replace("slack_users: [U0ALICE]", "slack_users: [U0CAROL]"))
    live.engine.service.policy.reload(path)
    assert req.id not in home(live, "U0ALICE")
    assert status(live, "U0ALICE", req.id) == no_request(req.id)


def test_show_all_opens_the_whole_request_only_for_its_parties(live: SlackLive) -> None:
    from bot.slack.cards import SHOW_ALL

    req = live.submit(justification="x" * 3_500)  # cut on the card, so it offers Show all
    card = live.card(req.id)
    assert SHOW_ALL in json.dumps(live.latest_blocks(card))
    opened = len(live.slack.calls("views.open"))
    assert live.sim.click(SHOW_ALL, req.id, "U0EVE", message=card).status_code == 200
    live.eventually(
        lambda: any(
            c.method == "chat.postMessage"
            and c.params.get("channel") == "U0EVE"
            and c.params.get("text") == no_request(req.id)
            for c in live.slack.calls()
        )
    )
    assert len(live.slack.calls("views.open")) == opened  # the stranger saw nothing
    assert live.sim.click(SHOW_ALL, req.id, "U0ALICE", message=card).status_code == 200
    live.slack.wait_for("views.open", count=opened + 1)


def test_a_typed_id_is_echoed_inert(live: SlackLive) -> None:
    answer = status(live, "U0EVE", "<!channel>")
    assert "<!channel>" not in answer and "&lt;!channel&gt;" in answer
