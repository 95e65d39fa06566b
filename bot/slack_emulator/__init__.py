"""A stand-in for Slack: a real Web API server and a simulator of Slack's signed requests."""

from bot.slack_emulator.entities import Call, Ephemeral, Message, MessageVersion, User, View
from bot.slack_emulator.server import SlackStandIn
from bot.slack_emulator.signed_client import SlackClientSim

__all__ = [
    "Call",
    "Ephemeral",
    "Message",
    "MessageVersion",
    "SlackClientSim",
    "SlackStandIn",
    "User",
    "View",
]
