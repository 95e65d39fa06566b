"""Sandbox mode over real HTTP: `stepup serve`'s runtime with no Slack token, driven through
the sandbox's own endpoints as the page drives them, with the agent API on the same server.

Every click and modal submission travels as a signed Slack payload to ``/slack/events``; the
outcomes asserted here (who is refused, what the card says, the request's status) are the
bot's, read back through the agent API and the sandbox's state.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.server import Runtime, build_runtime
from bot.settings import Settings
from bot.slack.cards import APPROVE, CONFIRM_MODAL, DENY, DENY_MODAL, FULL_VIEW, SHOW_ALL
from core.storage.database import Database
from tests.integration.live import running
from tests.support import eventually, submit_body

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "manifests" / "policy.example.yaml"


def settings(tmp_path: Path, db: Database, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "STEPUP_DATABASE_URL": db.url,
        "STEPUP_POLICY_FILE": str(POLICY),
        "STEPUP_KEYS_DIR": str(tmp_path / "keys"),
        "STEPUP_SWEEP_INTERVAL_SECONDS": 1.0,
        **extra,
    }
    return Settings(**values)


@dataclass
class Sandboxed:
    url: str
    runtime: Runtime
    agent: httpx.Client
    page: httpx.Client

    def state(self, user: str) -> dict[str, Any]:
        answer = self.page.get("/sandbox/api/state", params={"user": user})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def channel_html(self, user: str, channel: str = "C0APPROVALS") -> str:
        [found] = [c for c in self.state(user)["conversations"] if c["id"] == channel]
        return str(found["html"])

    def card(self, user: str, request_id: str) -> tuple[str, str, str]:
        """(channel, ts, html) of the request's card as ``user`` sees it."""

        def find() -> tuple[str, str, str] | None:
            html = self.channel_html(user)
            match = re.search(
                r'<article class="sk-message sk-message" id="[^"]*" data-channel="([^"]+)" '
                rf'data-ts="([^"]+)" data-request-id="{request_id}">(.*?)</article>',
                html,
                re.DOTALL,
            )
            return (match.group(1), match.group(2), match.group(3)) if match else None

        found = eventually(find, message=f"no card for {request_id}")
        assert found is not None
        return found

    def click(self, user: str, action_id: str, value: str, channel: str, ts: str) -> None:
        body = {"user": user, "action_id": action_id, "value": value, "channel": channel}
        sent = self.page.post("/sandbox/api/action", json=body | {"ts": ts})
        assert sent.status_code == 200, sent.text
        assert sent.json()["status"] == 200

    def modal(self, user: str, callback_id: str) -> dict[str, Any]:
        def opened() -> dict[str, Any] | None:
            modal = self.state(user)["modal"]
            return modal if modal and modal["callback_id"] == callback_id else None

        found = eventually(opened, message=f"no {callback_id} modal for {user}")
        assert found is not None
        return found

    def submit(self, user: str, view_id: str, values: dict[str, dict[str, str]]) -> dict[str, Any]:
        body = {"user": user, "view_id": view_id, "values": values}
        sent = self.page.post("/sandbox/api/submit", json=body)
        assert sent.status_code == 200, sent.text
        return dict(sent.json())

    def status(self, request_id: str) -> str:
        return str(self.agent.get(f"/v1/requests/{request_id}").json()["status"])


@pytest.fixture
def sandbox(db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandboxed]:
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "STEPUP_SANDBOX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    runtime = build_runtime(settings(tmp_path, db))
    assert runtime.sandbox is not None
    key = runtime.context.registry.add(
        "demo-agent", "olga@example.com", by="test", now=datetime.now(UTC)
    )
    runtime.start()
    try:
        with running(runtime.app) as url:
            agent = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
            )
            page = httpx.Client(base_url=url, timeout=30)
            with agent, page:
                yield Sandboxed(url, runtime, agent, page)
    finally:
        runtime.stop()


def value_of(html: str, action_id: str) -> str:
    match = re.search(rf'data-action-id="{action_id}" data-value="([^"]*)"', html)
    assert match, f"no {action_id} button in {html[:500]}"
    return match.group(1)


def submit_destructive(sandbox: Sandboxed, target: str) -> str:
    created = sandbox.agent.post("/v1/requests", json=submit_body(target=target))
    assert created.status_code in (201, 202), created.text
    body = created.json()
    assert body["status"] == "pending" and body["rule"] == "prod-destructive"
    return str(body["id"])


def test_the_page_and_its_assets_are_served(sandbox: Sandboxed) -> None:
    page = sandbox.page.get("/sandbox")
    assert page.status_code == 200 and 'id="acting-as"' in page.text
    assert sandbox.page.get("/sandbox/static/sandbox.js").status_code == 200
    assert sandbox.page.get("/sandbox/static/sandbox.css").status_code == 200
    assert sandbox.page.get("/sandbox/static/nope.js").status_code == 404
    people = sandbox.page.get("/sandbox/api/people").json()["people"]
    ids = {p["id"] for p in people}
    # Every approver of the example policy, by id or by email, and one outsider.
    assert {"U0ALICE", "U0BOB", "U0CAROL", "U0DAVE", "U0ERIN", "U0OUTSIDER"} <= ids
    assert [p["id"] for p in people if p["outsider"]] == ["U0OUTSIDER"]
    # A page on another origin that rebinds its name to 127.0.0.1 is refused.
    foreign = sandbox.page.get("/sandbox/api/people", headers={"Host": "evil.example"})
    assert foreign.status_code == 403
    assert sandbox.page.get("/sandbox/api/state", params={"user": "U0NOBODY"}).status_code == 422


def test_two_approvers_approve_through_the_typed_confirmation(sandbox: Sandboxed) -> None:
    request_id = submit_destructive(sandbox, "payments-api")
    channel, ts, html = sandbox.card("U0ALICE", request_id)
    assert ">Approve</button>" in html and ">Deny</button>" in html
    assert "sk-primary" in html and "sk-danger" in html
    value = value_of(html, APPROVE)

    # An outsider's click: refused, with an ephemeral only the outsider sees; nothing recorded.
    sandbox.click("U0OUTSIDER", APPROVE, value, channel, ts)
    eventually(lambda: "sk-ephemeral" in sandbox.channel_html("U0OUTSIDER"))
    assert "sk-ephemeral" not in sandbox.channel_html("U0ALICE")
    assert sandbox.status(request_id) == "pending"

    for n, user in enumerate(("U0ALICE", "U0BOB"), start=1):
        sandbox.click(user, APPROVE, value, channel, ts)
        modal = sandbox.modal(user, CONFIRM_MODAL)
        assert "sk-input" in modal["html"] and "sk-view-submit" in modal["html"]
        wrong = sandbox.submit(user, modal["id"], {"confirm": {"confirm_input": "nope"}})
        assert wrong.get("errors"), wrong
        right = sandbox.submit(user, modal["id"], {"confirm": {"confirm_input": "payments-api"}})
        assert right == {"status": 200, "closed": True}
        assert sandbox.state(user)["modal"] is None
        if n == 1:
            eventually(lambda: "1 of 2" in sandbox.card("U0ALICE", request_id)[2])
    eventually(lambda: sandbox.status(request_id) == "approved")
    # Edited in place: the buttons are gone, the events are in its thread.
    eventually(lambda: ">Approve</button>" not in sandbox.card("U0CAROL", request_id)[2])
    html = sandbox.channel_html("U0CAROL")
    assert "sk-unsupported" not in html
    assert 'class="sk-thread"' in html and "(edited)" in html


def test_deny_through_the_modal_with_a_reason(sandbox: Sandboxed) -> None:
    request_id = submit_destructive(sandbox, "orders-db")
    channel, ts, html = sandbox.card("U0BOB", request_id)
    sandbox.click("U0BOB", DENY, value_of(html, DENY), channel, ts)
    modal = sandbox.modal("U0BOB", DENY_MODAL)
    assert sandbox.state("U0ALICE")["modal"] is None  # only the one who clicked sees it
    short = sandbox.submit("U0BOB", modal["id"], {"reason": {"reason_input": "no"}})
    assert short["errors"] == {"reason": "A denial needs a reason."}
    done = sandbox.submit("U0BOB", modal["id"], {"reason": {"reason_input": "change freeze"}})
    assert done["closed"] is True
    eventually(lambda: sandbox.status(request_id) == "denied")
    eventually(lambda: "change freeze" in sandbox.channel_html("U0ALICE"))


def test_no_sandbox_with_a_slack_token(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runtime = build_runtime(
        settings(
            tmp_path,
            db,
            SLACK_BOT_TOKEN="xoxb-1-0123456789",
            SLACK_SIGNING_SECRET="0123456789abcdef0123456789abcdef",
            STEPUP_SLACK_API_URL="http://127.0.0.1:9/api/",
        )
    )
    try:
        assert runtime.sandbox is None
        with running(runtime.app) as url:
            assert httpx.get(f"{url}/sandbox").status_code == 404
            assert httpx.get(f"{url}/sandbox/api/people").status_code == 404
    finally:
        runtime.context.service.db.dispose()


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"STEPUP_HOST": "0.0.0.0"}, "STEPUP_HOST 0.0.0.0 is not a loopback address"),
        ({"STEPUP_SANDBOX": "false"}, "STEPUP_SANDBOX is off"),
    ],
)
def test_no_sandbox_off_loopback_or_when_switched_off(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: dict[str, str], why: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        monkeypatch.delenv(name, raising=False)
    chosen = settings(tmp_path, db, **extra)
    assert chosen.sandbox_off_because == why
    runtime = build_runtime(chosen)
    try:
        assert runtime.sandbox is None and runtime.slack is None
    finally:
        runtime.context.service.db.dispose()


def test_app_home_and_the_approvers_dm(sandbox: Sandboxed) -> None:
    request_id = submit_destructive(sandbox, "ledger-api")
    sandbox.card("U0ALICE", request_id)
    opened = sandbox.page.post("/sandbox/api/home", json={"user": "U0ALICE"})
    assert opened.status_code == 200 and opened.json()["status"] == 200

    def home() -> str:
        [found] = [c for c in sandbox.state("U0ALICE")["conversations"] if c["id"] == "home"]
        return str(found["html"])

    eventually(lambda: "Waiting for your decision" in home() and "ledger-api" in home())
    assert "sk-unsupported" not in home()
    # The rule notifies approvers by DM too: Alice's DM holds it, the outsider's does not.
    eventually(lambda: request_id in sandbox.channel_html("U0ALICE", "dm"))
    assert request_id not in sandbox.channel_html("U0OUTSIDER", "dm")


def test_show_all_opens_the_whole_request_and_close_closes_it(sandbox: Sandboxed) -> None:
    long = "word " * 800  # 4,000 characters: more than the card shows
    created = sandbox.agent.post(
        "/v1/requests", json=submit_body(target="search-api", justification=long)
    )
    assert created.status_code in (201, 202), created.text
    request_id = created.json()["id"]
    channel, ts, html = sandbox.card("U0ALICE", request_id)
    assert ">Show all</button>" in html
    sandbox.click("U0ALICE", SHOW_ALL, value_of(html, SHOW_ALL), channel, ts)
    modal = sandbox.modal("U0ALICE", FULL_VIEW)
    assert "The request in full" in modal["html"] and "sk-view-close" in modal["html"]
    assert "sk-view-submit" not in modal["html"] and "sk-unsupported" not in modal["html"]
    closed = sandbox.page.post(
        "/sandbox/api/close", json={"user": "U0ALICE", "view_id": modal["id"]}
    )
    assert closed.status_code == 200
    assert sandbox.state("U0ALICE")["modal"] is None
