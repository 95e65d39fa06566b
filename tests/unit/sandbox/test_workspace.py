"""Who is in the sandbox workspace, where it may listen, and that it stays bounded."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bot.sandbox.workspace import OUTSIDER_ID, is_loopback, people_of, start_workspace
from bot.settings import Settings
from bot.slack_emulator import SlackEmulator
from core.policy.loader import load_policy

REPO = Path(__file__).resolve().parents[3]

POLICY = """\
version: 1
approver_groups:
  leads:
    slack_users: [U0ALICE]
    emails: [carol.chen@example.com, alice@example.com]
  security:
    emails: [carol.chen@example.com]
    slack_usergroup: S0SEC
channels:
  approvals: C0APPROVALS
  security: C0SEC
rules:
  - name: prod
    match: { environment: production }
    decision: approve
    approvers: leads
    channel: approvals
"""


def test_every_approver_once_with_their_groups_then_the_outsider(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    people = people_of(load_policy(path))
    assert [(p.user_id, p.email, p.groups) for p in people] == [
        ("U0ALICE", "alice@example.com", ("leads",)),
        ("U0CAROLCHEN", "carol.chen@example.com", ("leads", "security")),
        (OUTSIDER_ID, "outsider@example.com", ()),
    ]
    assert people[1].name == "Carol Chen" and people[-1].outsider


def test_the_workspace_holds_people_channels_and_a_fresh_secret(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    first = start_workspace(load_policy(path), None)
    second = start_workspace(load_policy(path), "C0OTHER")
    try:
        assert first.signing_secret != second.signing_secret
        assert first.bot_token != second.bot_token
        assert first.channels == (("C0APPROVALS", "approvals"), ("C0SEC", "security"))
        assert ("C0OTHER", "c0other") in second.channels
        api = first.emulator.api_url
        auth = {"Authorization": f"Bearer {first.bot_token}"}
        found = httpx.post(
            f"{api}users.lookupByEmail", data={"email": "carol.chen@example.com"}, headers=auth
        )
        assert found.json()["user"]["id"] == "U0CAROLCHEN"
        group = httpx.post(f"{api}usergroups.users.list", data={"usergroup": "S0SEC"}, headers=auth)
        assert group.json()["ok"] is True
        assert first.emulator.url.startswith("http://127.0.0.1:")
    finally:
        first.stop()
        second.stop()


def test_the_emulator_keeps_only_the_newest_calls_when_told() -> None:
    with SlackEmulator(max_calls=3) as slack, httpx.Client() as http:
        for _ in range(5):
            http.post(f"{slack.api_url}auth.test", headers={"Authorization": "Bearer xoxb-1"})
        assert len(slack.calls()) == 3


def quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No .env and no Slack or sandbox settings from the environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "STEPUP_SANDBOX", "STEPUP_HOST"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_loopback_only(
    host: str, loopback: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet(tmp_path, monkeypatch)
    assert is_loopback(host) is loopback
    settings = Settings(STEPUP_HOST=host or "0.0.0.0")
    assert (settings.sandbox_off_because is None) is loopback
    assert settings.slack_delivers is loopback  # no token: only the sandbox takes messages


def test_never_with_a_slack_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quiet(tmp_path, monkeypatch)
    settings = Settings(SLACK_BOT_TOKEN="xoxb-1-0123456789")
    assert settings.sandbox_off_because == "a Slack bot token is configured"
    assert settings.slack_delivers is False  # a token without its signing secret: no Slack
    both = Settings(SLACK_BOT_TOKEN="xoxb-1-0123456789", SLACK_SIGNING_SECRET="0123456789abcdef")
    assert both.slack_delivers and both.sandbox_off_because is not None
