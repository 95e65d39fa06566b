"""A Slack emulator: a real Web API server, and a client that sends an app Slack-signed requests.

For tests and the local sandbox only; no production code path imports it
(tests/integration/test_emulator_isolation.py).
"""

from bot.slack_emulator.entities import Call, Ephemeral, Message, MessageVersion, User, View
from bot.slack_emulator.server import SlackEmulator
from bot.slack_emulator.signed_client import SignedSlackClient

__all__ = [
    "Call",
    "Ephemeral",
    "Message",
    "MessageVersion",
    "SignedSlackClient",
    "SlackEmulator",
    "User",
    "View",
]
