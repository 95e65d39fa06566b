"""The whole approval flow in the sandbox page, in real headless Chromium (issue 12, "Done when").

``stepup serve`` runs in sandbox mode (no Slack token) on the example policy; ``stepup demo``
submits its four requests; in the page an outsider's Approve is refused, two approvers approve
the production change through the typed confirmation, the card shows both approvals, then the
credential's expiry, then Completed while the demo agent completes. A second demo run's
production change is denied through the deny modal with a reason.

The README's screenshot is taken here: ``STEPUP_UPDATE_SCREENSHOT=1`` writes it to
``docs/sandbox.png`` (otherwise it goes to the test's temporary directory only).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from tests.browser.conftest import REPO, SandboxServer

TIMEOUT_MS = 20_000
TARGET = "payments-api"  # the production change's target: the typed confirmation
OUTSIDER, ALICE, BOB = "U0OUTSIDER", "U0ALICE", "U0BOB"
PENDING_LINE = r"(req_\w+) pending \(rule prod-destructive\) approvals 0/2"


def test_two_approvers_approve_in_the_page_and_the_demo_agent_goes_on(
    browser: Any, sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    demo = sandbox_server.demo("--timeout", "120", "--pause", "5")
    request_id = demo.until(PENDING_LINE).group(1)

    page.goto(f"{sandbox_server.url}/sandbox?as={OUTSIDER}")
    expect(page.locator("body[data-ready='1']")).to_have_count(1)
    card = page.locator(f"#conversation > article.sk-message[data-request-id='{request_id}']")
    expect(card).to_contain_text("Approval needed")
    expect(card).to_contain_text("0 of 2")

    # An outsider's click: refused, in an ephemeral message only they see.
    card.get_by_role("button", name="Approve", exact=True).click()
    refusal = page.locator("#conversation > article.sk-ephemeral")
    expect(refusal).to_have_count(1)
    expect(refusal).to_contain_text("Only visible to you")
    expect(refusal).to_contain_text("you are not an approver for this request")
    expect(refusal).to_contain_text("Nothing was recorded")
    expect(card).to_contain_text("0 of 2")

    _approve(page, card, ALICE)
    expect(refusal).to_have_count(0)  # Alice does not see the outsider's ephemeral
    expect(card).to_contain_text("1 of 2")
    demo.until(rf"{request_id} pending approvals 1/2")
    _approve(page, card, BOB)

    expect(card).to_contain_text("2 of 2")
    expect(card).to_contain_text("Alice")
    expect(card).to_contain_text("Bob")
    # The demo claims and works for 5 s: the page (polling each second) shows the expiry.
    expect(card).to_contain_text("Credential active")
    expect(card).to_contain_text("active until")
    demo.until(rf"{request_id} active credential expires")
    expect(card).to_contain_text("Completed")
    expect(card).to_contain_text("Credential revoked")
    demo.until(rf"{request_id} completed \(succeeded\)")
    demo.until(r"^done: 3 completed, 1 denied")
    assert sandbox_server.demos[-1].wait(timeout=30) == 0
    thread = page.locator(f"#conversation > article[data-request-id='{request_id}'] + .sk-thread")
    expect(thread).to_contain_text("Credential issued")

    shot = tmp_path / "sandbox.png"
    page.screenshot(path=str(shot))
    if os.environ.get("STEPUP_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO / "docs" / "sandbox.png")

    # A second run: its production change is denied through the modal, with a reason.
    again = sandbox_server.demo("--timeout", "120", "--pause", "0")
    second = again.until(PENDING_LINE).group(1)
    card = page.locator(f"#conversation > article.sk-message[data-request-id='{second}']")
    _act_as(page, ALICE)
    expect(card).to_contain_text("Approval needed")
    card.get_by_role("button", name="Deny", exact=True).click()
    modal = page.locator("#modal")
    expect(modal).to_be_visible()
    expect(modal).to_contain_text("Deny request")
    modal.get_by_role("textbox").fill("not during the incident freeze")
    modal.locator(".sk-view-submit").click()
    expect(modal).to_be_hidden()
    expect(card).to_contain_text("Denied")
    expect(card).to_contain_text("not during the incident freeze")
    again.until(rf"{second} denied - not during the incident freeze")
    again.until(r"^done: 2 completed, 2 denied")
    assert sandbox_server.demos[-1].wait(timeout=30) == 0

    assert errors == []


def _act_as(page: Any, user: str) -> None:
    page.select_option("#acting-as", user)


def _approve(page: Any, card: Any, user: str) -> None:
    """Approve as ``user``: the rule asks for the target's name, typed in a modal."""
    from playwright.sync_api import expect

    _act_as(page, user)
    card.get_by_role("button", name="Approve", exact=True).click()
    modal = page.locator("#modal")
    expect(modal).to_be_visible()
    expect(modal).to_contain_text("Confirm approval")
    modal.get_by_role("textbox").fill(TARGET)
    modal.locator(".sk-view-submit").click()
    expect(modal).to_be_hidden()
