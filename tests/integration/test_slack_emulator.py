"""The Slack emulator, driven by the real slack_sdk WebClient over loopback HTTP.

The other integration tests trust the emulator to behave like Slack; these tests hold it to
that: answers shaped as Slack's, errors where Slack errs, faults that slack_sdk's own retry
handlers recognise, and signed requests that slack_sdk's verifier (and bolt) accept.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from slack_bolt import Ack, App, BoltRequest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import builtin_handlers
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier

from bot.slack_emulator import SignedSlackClient, SlackEmulator

SECRET = "emulator-signing-secret"
APPROVE_BUTTON: dict[str, Any] = {
    "type": "button",
    "action_id": "approve",
    "style": "primary",
    "value": "req-1",
    "text": {"type": "plain_text", "text": "Approve"},
}
CARD_BLOCKS: list[dict[str, Any]] = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "*deploy* to prod"}},
    {
        "type": "actions",
        "block_id": "decision",
        "elements": [
            APPROVE_BUTTON,
            {
                "type": "button",
                "action_id": "deny",
                "style": "danger",
                "value": "req-1",
                "text": {"type": "plain_text", "text": "Deny"},
            },
        ],
    },
]
MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "deny_reason",
    "title": {"type": "plain_text", "text": "Deny"},
    "blocks": [
        {
            "type": "input",
            "block_id": "reason",
            "label": {"type": "plain_text", "text": "Reason"},
            "element": {"type": "plain_text_input"},
        }
    ],
}


@pytest.fixture
def slack() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(slack: SlackEmulator) -> WebClient:
    return WebClient(token="xoxb-test", base_url=slack.api_url, timeout=5)


def raw_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """A bare POST, for what WebClient would not send (no token at all, say)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback http
        return int(answer.status), dict(json.loads(answer.read()))


# -- auth --------------------------------------------------------------------------------


def test_auth_test_answers_as_the_bot(client: WebClient, slack: SlackEmulator) -> None:
    answer = client.auth_test()
    assert answer["user_id"] == "U0STEPUPBOT"
    assert answer["bot_id"].startswith("B")
    assert answer["team_id"] == "T0STEPUP"
    assert answer["url"].startswith("https://")
    (call,) = slack.calls("auth.test")
    assert call.headers["Authorization"] == "Bearer xoxb-test"
    assert call.status == 200
    assert call.ok


def test_missing_or_wrong_tokens_are_refused(slack: SlackEmulator) -> None:
    url = slack.api_url + "auth.test"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert raw_post(url, b"", form)[1] == {"ok": False, "error": "not_authed"}
    bad = {**form, "Authorization": "Bearer xoxp-user-token"}
    assert raw_post(url, b"", bad)[1]["error"] == "invalid_auth"
    # the old style, token as a form field, works too
    assert raw_post(url, b"token=xoxb-form", form)[1]["ok"] is True
    with pytest.raises(SlackApiError) as caught:
        WebClient(token="xapp-1-app", base_url=slack.api_url).auth_test()
    assert caught.value.response["error"] == "not_allowed_token_type"


def test_a_configured_token_is_the_only_one_accepted() -> None:
    with SlackEmulator(token="xoxb-right") as slack:
        assert WebClient(token="xoxb-right", base_url=slack.api_url).auth_test()["ok"]
        with pytest.raises(SlackApiError) as caught:
            WebClient(token="xoxb-wrong", base_url=slack.api_url).auth_test()
        assert caught.value.response["error"] == "invalid_auth"


def test_unknown_method_is_an_ok_false_with_http_200(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.api_call("chat.teleport", json={"channel": "C0APPROVALS"})
    assert caught.value.response.status_code == 200
    assert caught.value.response["error"] == "unknown_method"


def test_socket_mode_url_needs_an_app_token(slack: SlackEmulator) -> None:
    answer = WebClient(token="xapp-1-A0-1-abc", base_url=slack.api_url).apps_connections_open(
        app_token="xapp-1-A0-1-abc"
    )
    assert answer["url"].startswith(f"ws://127.0.0.1:{slack.socket_mode.port}/link/?ticket=")
    with pytest.raises(SlackApiError) as caught:
        WebClient(token="xoxb-test", base_url=slack.api_url).api_call("apps.connections.open")
    assert caught.value.response["error"] == "not_allowed_token_type"


# -- messages ----------------------------------------------------------------------------


def test_post_update_and_thread_round_trip(client: WebClient, slack: SlackEmulator) -> None:
    posted = client.chat_postMessage(channel="C0APPROVALS", text="card", blocks=CARD_BLOCKS)
    ts = posted["ts"]
    assert posted["channel"] == "C0APPROVALS"
    assert posted["message"]["blocks"] == CARD_BLOCKS
    seconds, fraction = ts.split(".")
    assert len(seconds) == 10 and len(fraction) == 6

    reply = client.chat_postMessage(channel="C0APPROVALS", thread_ts=ts, text="approved by alice")
    assert float(reply["ts"]) > float(ts)
    assert reply["message"]["thread_ts"] == ts

    updated = client.chat_update(channel="C0APPROVALS", ts=ts, text="decided", blocks=[])
    assert updated["ts"] == ts
    assert updated["message"]["edited"]["user"] == "U0STEPUPBOT"

    card = slack.message("C0APPROVALS", ts)
    assert (card.text, card.blocks, card.edited) == ("decided", [], True)
    assert card.history[0].blocks == CARD_BLOCKS
    assert [m.text for m in slack.thread("C0APPROVALS", ts)] == ["approved by alice"]
    assert [m.ts for m in slack.messages("#approvals")] == [ts, reply["ts"]]
    assert slack.messages("C0SECURITY") == []


def test_update_keeps_blocks_it_was_not_given(client: WebClient, slack: SlackEmulator) -> None:
    ts = client.chat_postMessage(channel="C0APPROVALS", text="card", blocks=CARD_BLOCKS)["ts"]
    client.chat_update(channel="C0APPROVALS", ts=ts, text="new text")
    card = slack.message("C0APPROVALS", ts)
    assert card.text == "new text"
    assert card.action_ids() == ["approve", "deny"]


def test_form_encoded_blocks_are_decoded(client: WebClient, slack: SlackEmulator) -> None:
    answer = client.api_call(
        "chat.postMessage",
        params={"channel": "C0SECURITY", "text": "[prod] alert", "blocks": json.dumps(CARD_BLOCKS)},
    )
    assert slack.message("C0SECURITY", answer["ts"]).blocks == CARD_BLOCKS
    assert slack.message("C0SECURITY", answer["ts"]).text == "[prod] alert"
    (call,) = slack.calls("chat.postMessage")
    assert call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert call.params["blocks"] == CARD_BLOCKS


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"channel": "C0NOWHERE", "text": "x"}, "channel_not_found"),
        ({"channel": "U0NOBODY", "text": "x"}, "channel_not_found"),
        ({"channel": "C0APPROVALS"}, "no_text"),
        ({"channel": "C0APPROVALS", "text": "x", "thread_ts": "1.000001"}, "thread_not_found"),
        ({"channel": "C0APPROVALS", "blocks": [{"text": "no type"}]}, "invalid_blocks"),
        ({"channel": "C0APPROVALS", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
    ],
)
def test_post_errors_match_slack(client: WebClient, kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(**kwargs)
    assert caught.value.response["error"] == error


def test_a_too_long_button_value_is_refused(client: WebClient) -> None:
    button = {**APPROVE_BUTTON, "value": "x" * 2001}
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(
            channel="C0APPROVALS", text="x", blocks=[{"type": "actions", "elements": [button]}]
        )
    assert caught.value.response["error"] == "invalid_blocks"
    assert "json-pointer:/blocks/0" in caught.value.response["response_metadata"]["messages"][0]


def test_update_of_a_missing_message_fails(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.chat_update(channel="C0APPROVALS", ts="1700000000.000100", text="x")
    assert caught.value.response["error"] == "message_not_found"


def test_posting_to_a_user_lands_in_their_dm(client: WebClient, slack: SlackEmulator) -> None:
    posted = client.chat_postMessage(channel="U0ALICE", text="you were asked to approve")
    assert posted["channel"].startswith("D")
    opened = client.conversations_open(users="U0ALICE")
    assert opened["channel"]["id"] == posted["channel"]
    assert opened["already_open"] is True
    assert [m.text for m in slack.dms("U0ALICE")] == ["you were asked to approve"]
    assert slack.dms("U0BOB") == []
    with pytest.raises(SlackApiError) as caught:
        client.conversations_open(users="U0NOBODY")
    assert caught.value.response["error"] == "user_not_found"


def test_ephemeral_messages_are_kept_per_user(client: WebClient, slack: SlackEmulator) -> None:
    answer = client.chat_postEphemeral(channel="C0APPROVALS", user="U0BOB", text="not eligible")
    assert answer["message_ts"]
    (note,) = slack.ephemerals("U0BOB")
    assert (note.channel, note.text, note.message_ts) == (
        "C0APPROVALS",
        "not eligible",
        answer["message_ts"],
    )
    assert slack.ephemerals("U0ALICE") == []
    assert slack.messages() == []


# -- directory ---------------------------------------------------------------------------


def test_users_are_found_by_id_and_email(client: WebClient, slack: SlackEmulator) -> None:
    user = client.users_info(user="U0ALICE")["user"]
    assert user["profile"]["email"] == "alice@example.com"
    assert user["name"] == "alice"
    assert {"real_name", "display_name"} <= user["profile"].keys()
    assert isinstance(user["tz_offset"], int)
    slack.add_user("U0ZED", "zed@example.com", real_name="Zed Zero", tz="America/New_York")
    found = client.users_lookupByEmail(email="ZED@example.com")["user"]
    assert (found["id"], found["real_name"], found["tz"]) == (
        "U0ZED",
        "Zed Zero",
        "America/New_York",
    )
    with pytest.raises(SlackApiError) as caught:
        client.users_info(user="U0NOBODY")
    assert caught.value.response["error"] == "user_not_found"
    with pytest.raises(SlackApiError) as caught:
        client.users_lookupByEmail(email="nobody@example.com")
    assert caught.value.response["error"] == "users_not_found"


def test_usergroup_members(client: WebClient, slack: SlackEmulator) -> None:
    slack.add_usergroup("S0ONCALL", ["U0ALICE", "U0CAROL"])
    assert client.usergroups_users_list(usergroup="S0ONCALL")["users"] == ["U0ALICE", "U0CAROL"]
    with pytest.raises(SlackApiError) as caught:
        client.usergroups_users_list(usergroup="S0NONE")
    assert caught.value.response["error"] == "no_such_subteam"


# -- views -------------------------------------------------------------------------------


def test_views_open_update_push(client: WebClient, slack: SlackEmulator) -> None:
    opened = client.views_open(trigger_id="111.222.abc", view=MODAL)["view"]
    assert opened["id"].startswith("V")
    assert opened["callback_id"] == "deny_reason"
    assert opened["state"] == {"values": {}}
    with pytest.raises(SlackApiError) as caught:
        client.views_open(trigger_id="111.222.abc", view=MODAL)
    assert caught.value.response["error"] == "exchanged_trigger_id"

    changed = {**MODAL, "private_metadata": "req-1"}
    updated = client.views_update(view_id=opened["id"], view=changed, hash=opened["hash"])["view"]
    assert updated["hash"] != opened["hash"]
    with pytest.raises(SlackApiError) as caught:
        client.views_update(view_id=opened["id"], view=changed, hash=opened["hash"])
    assert caught.value.response["error"] == "hash_conflict"

    pushed = client.views_push(trigger_id="333.444.def", view=MODAL)["view"]
    assert pushed["previous_view_id"] == opened["id"]
    assert [v.id for v in slack.views_opened()] == [opened["id"], pushed["id"]]
    assert slack.views_opened()[0].private_metadata == "req-1"
    assert slack.views_opened()[0].trigger_id == "111.222.abc"


def test_views_open_refuses_what_slack_refuses(client: WebClient) -> None:
    for view, trigger in [({**MODAL, "type": "home"}, "1.2.a"), (MODAL, "")]:
        with pytest.raises(SlackApiError) as caught:
            client.views_open(trigger_id=trigger, view=view)
        assert caught.value.response["error"] == "invalid_arguments"


def test_home_tab_is_published_per_user(client: WebClient, slack: SlackEmulator) -> None:
    home = {
        "type": "home",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "1 pending"}}],
    }
    first = client.views_publish(user_id="U0ALICE", view=home)["view"]
    again = client.views_publish(user_id="U0ALICE", view={"type": "home", "blocks": []})["view"]
    assert first["id"] == again["id"]
    alice = slack.home("U0ALICE")
    assert alice is not None
    assert alice.blocks == []
    assert len(alice.versions) == 2
    assert slack.home("U0BOB") is None


# -- recording ---------------------------------------------------------------------------


def test_wait_for_returns_once_the_call_arrives(client: WebClient, slack: SlackEmulator) -> None:
    timer = threading.Timer(0.1, lambda: client.chat_postMessage(channel="C0APPROVALS", text="x"))
    timer.start()
    try:
        (call,) = slack.wait_for("chat.postMessage", timeout=3)
    finally:
        timer.join()
    assert call.params == {"channel": "C0APPROVALS", "text": "x"}
    assert call.response["ts"] == slack.messages()[0].ts
    found = slack.wait_for(lambda c: c.params.get("text") == "x", timeout=1)
    assert len(found) == 1


def test_wait_for_gives_up_in_time(client: WebClient, slack: SlackEmulator) -> None:
    client.auth_test()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"auth\.test:200"):
        slack.wait_for("chat.update", timeout=0.2)
    assert time.monotonic() - started < 1.5
    with pytest.raises(TimeoutError):
        slack.wait_for("auth.test", timeout=0.1, count=2)


# -- faults ------------------------------------------------------------------------------


def test_rate_limit_is_honoured_by_the_sdk_retry_handler(
    slack: SlackEmulator, client: WebClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(builtin_handlers, "time", SimpleNamespace(sleep=slept.append))
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
    slack.rate_limit("chat.postMessage", times=1, retry_after=3)

    assert client.chat_postMessage(channel="C0APPROVALS", text="x")["ok"]
    assert [c.status for c in slack.calls("chat.postMessage")] == [429, 200]
    assert slack.calls("chat.postMessage")[0].error == "ratelimited"
    assert len(slept) == 1 and 3 <= slept[0] < 4
    assert len(slack.messages()) == 1


def test_rate_limit_without_retries_reaches_the_caller(
    slack: SlackEmulator, client: WebClient
) -> None:
    slack.rate_limit("users.info", times=2, retry_after=7)
    for _ in range(2):
        with pytest.raises(SlackApiError) as caught:
            client.users_info(user="U0ALICE")
        assert caught.value.response.status_code == 429
        assert caught.value.response.headers["Retry-After"] == "7"
        assert caught.value.response["error"] == "ratelimited"
    assert client.users_info(user="U0ALICE")["ok"]
    assert client.auth_test()["ok"]  # other methods were never limited


def test_fail_then_succeed(slack: SlackEmulator, client: WebClient) -> None:
    slack.fail("chat.postMessage", times=1, error="fatal_error", status=500)
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0APPROVALS", text="x")
    assert caught.value.response.status_code == 500
    assert caught.value.response["error"] == "fatal_error"
    assert slack.messages() == []
    assert client.chat_postMessage(channel="C0APPROVALS", text="x")["ok"]
    assert [c.status for c in slack.calls("chat.postMessage")] == [500, 200]


def test_slow_answers_and_reset(slack: SlackEmulator, client: WebClient) -> None:
    # The delay is long next to a loopback call even on a loaded machine, so "not delayed"
    # can be checked as "answered in less than the delay".
    delay = 1.0

    def took(call: Callable[[], object]) -> float:
        started = time.monotonic()
        call()
        return time.monotonic() - started

    slack.slow("users.info", delay)
    assert took(client.auth_test) < delay  # another method: not delayed
    assert took(lambda: client.users_info(user="U0ALICE")) >= delay

    slack.slow(None, delay)
    assert took(client.auth_test) >= delay  # every method
    slack.reset_faults()
    assert took(client.auth_test) < delay


def test_a_client_timeout_on_a_slow_answer(slack: SlackEmulator) -> None:
    slack.slow("auth.test", 1.0)
    impatient = WebClient(token="xoxb-test", base_url=slack.api_url, timeout=0.2)  # type: ignore[arg-type]  # urllib takes floats
    with pytest.raises(TimeoutError):
        impatient.auth_test()


def test_down_refuses_connections_and_up_serves_the_same_port(
    slack: SlackEmulator, client: WebClient
) -> None:
    client.chat_postMessage(channel="C0APPROVALS", text="before")
    port = slack.port
    slack.down()
    assert not slack.is_up
    # without slack_sdk's default ConnectionErrorRetryHandler, which would wait and retry once
    no_retry = WebClient(token="xoxb-test", base_url=slack.api_url, timeout=5, retry_handlers=[])
    with pytest.raises(urllib.error.URLError) as caught:
        no_retry.auth_test()
    assert isinstance(caught.value.reason, ConnectionRefusedError)
    assert slack.calls("auth.test") == []
    slack.up()
    assert slack.port == port
    assert client.chat_postMessage(channel="C0APPROVALS", text="after")["ok"]
    assert [m.text for m in slack.messages()] == ["before", "after"]
    slack.down()
    slack.up()
    assert client.auth_test()["ok"]


# -- signed requests to a bot ------------------------------------------------------------


def test_signatures_pass_slack_sdk_verification_only_when_fresh_and_right() -> None:
    sim = SignedSlackClient("http://127.0.0.1:9/slack/events", SECRET)
    body = b"payload=%7B%7D"
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid_request(body, sim.sign(body))
    stale = sim.sign(body, timestamp=int(time.time()) - 6 * 60)
    assert not verifier.is_valid_request(body, stale)
    assert not SignatureVerifier("another-secret").is_valid_request(body, sim.sign(body))
    assert not verifier.is_valid_request(body + b"x", sim.sign(body))
    sim.close()


class Recorder:
    """A bot endpoint that only records what reached it."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200)

    def payload(self) -> dict[str, Any]:
        form = parse_qs(self.requests[-1].content.decode())
        return dict(json.loads(form["payload"][0]))


def recording_sim() -> tuple[SignedSlackClient, Recorder]:
    recorder = Recorder()
    http = httpx.Client(transport=httpx.MockTransport(recorder))
    return SignedSlackClient("http://bot.test/slack/events", SECRET, http=http), recorder


def test_click_is_a_signed_block_actions_payload(slack: SlackEmulator, client: WebClient) -> None:
    ts = client.chat_postMessage(channel="C0APPROVALS", text="card", blocks=CARD_BLOCKS)["ts"]
    sim, recorder = recording_sim()
    sim.click("deny", "req-1", "U0BOB", message=slack.message("C0APPROVALS", ts), retry_num=1)
    sent = recorder.requests[-1]
    assert SignatureVerifier(SECRET).is_valid_request(sent.content, dict(sent.headers))
    assert sent.headers["X-Slack-Retry-Num"] == "1"
    assert sent.headers["X-Slack-Retry-Reason"] == "http_timeout"
    payload = recorder.payload()
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == "U0BOB" and payload["user"]["team_id"] == "T0STEPUP"
    assert payload["container"] == {
        "type": "message",
        "message_ts": ts,
        "channel_id": "C0APPROVALS",
        "is_ephemeral": False,
    }
    assert payload["message"]["blocks"] == CARD_BLOCKS
    (action,) = payload["actions"]
    assert (action["action_id"], action["block_id"], action["value"], action["style"]) == (
        "deny",
        "decision",
        "req-1",
        "danger",
    )
    assert payload["trigger_id"] and payload["api_app_id"] and payload["token"]


def test_view_submission_and_slash_command_shapes() -> None:
    sim, recorder = recording_sim()
    sim.submit_view(
        "deny_reason",
        {"reason": {"text": "too risky", "empty": None}},
        "U0BOB",
        private_metadata="r1",
    )
    view = recorder.payload()["view"]
    assert recorder.payload()["type"] == "view_submission"
    assert view["callback_id"] == "deny_reason" and view["private_metadata"] == "r1"
    assert view["state"]["values"] == {
        "reason": {
            "text": {"type": "plain_text_input", "value": "too risky"},
            "empty": {"type": "plain_text_input", "value": None},
        }
    }
    sim.slash("/stepup", "pending", "U0ALICE")
    form = {k: v[0] for k, v in parse_qs(recorder.requests[-1].content.decode()).items()}
    assert (form["command"], form["text"], form["user_id"]) == ("/stepup", "pending", "U0ALICE")
    assert form["trigger_id"] and form["response_url"].startswith("https://hooks.slack.com/")


def test_bolt_accepts_the_simulated_requests(slack: SlackEmulator) -> None:
    """End to end in one process: bolt verifies and routes, its handlers call the emulator."""
    web = WebClient(token="xoxb-test", base_url=slack.api_url, timeout=5)
    app = App(client=web, signing_secret=SECRET, process_before_response=True)

    @app.action("approve")
    def approve(ack: Ack, body: dict[str, Any], client: WebClient, respond: Any) -> None:
        ack()
        client.chat_update(channel=body["channel"]["id"], ts=body["message"]["ts"], text="ok")
        respond(text="recorded", replace_original=False)

    @app.event("app_home_opened")
    def home(event: dict[str, Any], client: WebClient) -> None:
        client.views_publish(user_id=event["user"], view={"type": "home", "blocks": []})

    def bot(request: httpx.Request) -> httpx.Response:
        answer = app.dispatch(
            BoltRequest(body=request.content.decode(), headers=dict(request.headers))
        )
        return httpx.Response(answer.status, content=answer.body.encode())

    http = httpx.Client(transport=httpx.MockTransport(bot))
    sim = SignedSlackClient(
        "http://bot.test/slack/events", SECRET, http=http, response_urls=slack.response_url
    )
    ts = web.chat_postMessage(channel="C0APPROVALS", text="card", blocks=CARD_BLOCKS)["ts"]

    assert (
        sim.click(
            "approve", "req-1", "U0ALICE", message=slack.message("C0APPROVALS", ts)
        ).status_code
        == 200
    )
    assert slack.message("C0APPROVALS", ts).text == "ok"
    (hook,) = slack.wait_for("response_url", timeout=2)
    assert hook.params["text"] == "recorded"
    assert sim.app_home_opened("U0CAROL").status_code == 200
    assert slack.home("U0CAROL") is not None
    stale = sim.click(
        "approve", "req-1", "U0ALICE", message_ts=ts, timestamp=int(time.time()) - 600
    )
    assert stale.status_code == 401
    assert len(slack.calls("chat.update")) == 1
