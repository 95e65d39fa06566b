"""A stand-in for Slack: a real Web API server and a simulator of Slack's signed requests."""

from bot.slack_standin.records import Call, Ephemeral, Message, MessageVersion, User, View
from bot.slack_standin.requests import SlackClientSim
from bot.slack_standin.server import SlackStandIn

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
