"""Bolt's and the Slack Web API client's loggers, with every request body withheld.

Bolt and slack-sdk's Socket Mode client log whole request bodies in a few places — a request
that fails signature verification (at INFO), an unhandled request, every Socket Mode envelope
and reply (at DEBUG) — and a body carries a ``response_url`` (which can post to the channel)
and everything an agent wrote. Bolt copies its base logger's filters onto each logger it makes,
and the Socket Mode handler logs through the app's logger, so one filter here covers all of
them. The record is kept (something happened) with the body cut off.
"""

from __future__ import annotations

import logging

BOLT_LOGGER = "stepup.slack.bolt"
WEB_LOGGER = "stepup.slack.web"

# How Bolt's and slack-sdk's log lines that carry a body begin (slack_bolt 1.x, slack_sdk 3.x).
_CARRY_A_BODY = (
    "Invalid request signature detected",
    "A global middleware",
    "Unhandled request",
    "on_message invoked",
    "Sending a message",
    "Failed to send a message",
    "Unsuccessful Bolt execution result",
    "Responding with",  # Bolt's answer to Slack: a modal's errors, an ack body
    "Sending a request - ",  # slack_sdk's WebClient: every argument of every call
    "Received the following response - ",  # its answer: users' emails, message texts
)
# Whatever the wording, a line with these in it came from a body.
_BODY_MARKS = ("response_url", "hooks.slack.com", "trigger_id", "payload=")


class WithholdRequestBodies(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: judge it by its template
            text = str(record.msg)
        for start in _CARRY_A_BODY:
            if text.startswith(start):
                record.msg, record.args = f"{start} (body withheld)", ()
                return True
        if any(mark in text for mark in _BODY_MARKS):
            record.msg, record.args = "Slack request logged (body withheld)", ()
        return True


def bolt_logger() -> logging.Logger:
    """The base logger to give ``App(logger=...)``: a child of stepup's, its level left to the
    root's, and the filter that withholds bodies."""
    logger = logging.getLogger(BOLT_LOGGER)
    if not any(isinstance(f, WithholdRequestBodies) for f in logger.filters):
        logger.addFilter(WithholdRequestBodies())
    return logger


def web_api_logger() -> logging.Logger:
    """The logger to give ``WebClient(logger=...)``: at DEBUG slack_sdk logs every call's
    arguments (agent text, trigger ids) and every answer (people's emails); withheld here."""
    logger = logging.getLogger(WEB_LOGGER)
    if not any(isinstance(f, WithholdRequestBodies) for f in logger.filters):
        logger.addFilter(WithholdRequestBodies())
    return logger
