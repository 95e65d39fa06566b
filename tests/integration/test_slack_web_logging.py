"""stepup's Slack Web API client logs no call's arguments and no answer, even at DEBUG: they
carry what agents wrote, trigger ids and people's emails. Bolt's answer to Slack neither."""

from __future__ import annotations

import logging

import pytest

from bot.slack.app import web_client
from bot.slack.bolt_logging import BOLT_LOGGER, bolt_logger
from bot.slack_emulator import SlackEmulator

MARKER = "Zq9SECRETMARKER"


def test_web_api_calls_and_answers_are_not_logged_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with SlackEmulator() as slack, caplog.at_level(logging.DEBUG):
        client = web_client("xoxb-test", slack.api_url)
        client.logger.setLevel(logging.DEBUG)
        answer = client.chat_postMessage(channel="C0APPROVALS", text=f"agent text {MARKER}")
        assert answer["ok"] and MARKER in answer["message"]["text"]
    web_records = [r for r in caplog.records if r.name.startswith("stepup.slack.web")]
    assert web_records, "the client logged through stepup's filtered logger"
    assert MARKER not in caplog.text


def test_bolts_answer_to_slack_is_withheld(caplog: pytest.LogCaptureFixture) -> None:
    bolt_logger()
    with caplog.at_level(logging.DEBUG, logger=BOLT_LOGGER):
        logging.getLogger(BOLT_LOGGER).debug(
            'Responding with status: 200 body: "{\\"errors\\": {\\"confirm\\": \\"%s\\"}}"',
            MARKER,
        )
    assert caplog.records and MARKER not in caplog.text
