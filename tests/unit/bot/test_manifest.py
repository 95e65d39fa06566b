"""The Slack manifests declare exactly what the code uses, and the example policy is valid."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from core.policy import load_policy

REPO = Path(__file__).resolve().parents[3]
SLACK_CODE = sorted((REPO / "bot" / "slack").glob("*.py"))

# Scopes each Web API method needs (https://api.slack.com/methods).
METHOD_SCOPES = {
    "chat_postMessage": {"chat:write"},
    "chat_update": {"chat:write"},
    "chat_postEphemeral": {"chat:write"},
    "conversations_open": {"im:write"},
    "users_info": {"users:read", "users:read.email"},  # email needs users:read.email
    "users_lookupByEmail": {"users:read.email"},
    "usergroups_users_list": {"usergroups:read"},
    "views_open": set(),
    "views_publish": set(),
    "views_update": set(),
}


def called_methods() -> set[str]:
    found: set[str] = set()
    for path in SLACK_CODE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in METHOD_SCOPES:
                found.add(node.attr)
    return found


def code_text() -> str:
    return "\n".join(p.read_text() for p in SLACK_CODE)


@pytest.mark.parametrize("name", ["slack-app.yaml", "slack-app.socket.yaml"])
def test_manifest_declares_exactly_what_the_code_uses(name: str) -> None:
    manifest = yaml.safe_load((REPO / "manifests" / name).read_text())
    methods = called_methods()
    assert {
        "chat_postMessage",
        "chat_update",
        "chat_postEphemeral",
        "users_info",
        "views_open",
    } <= methods
    needed = set().union(*(METHOD_SCOPES[m] for m in methods))
    if '@app.command("/stepup")' in code_text():
        needed.add("commands")
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == needed

    commands = {c["command"] for c in manifest["features"]["slash_commands"]}
    assert commands == set(re.findall(r'@app\.command\("([^"]+)"\)', code_text()))
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert events == set(re.findall(r'@app\.event\("([^"]+)"\)', code_text()))
    uses_interactivity = "@app.action(" in code_text() or "@app.view(" in code_text()
    assert manifest["settings"]["interactivity"]["is_enabled"] is uses_interactivity
    assert manifest["features"]["app_home"]["home_tab_enabled"] is ("app_home_opened" in events)
    socket = name.endswith("socket.yaml")
    assert manifest["settings"]["socket_mode_enabled"] is socket
    if not socket:
        assert manifest["settings"]["interactivity"]["request_url"].endswith("/slack/events")
        assert manifest["settings"]["event_subscriptions"]["request_url"].endswith("/slack/events")


def test_example_policy_passes_check() -> None:
    policy = load_policy(REPO / "manifests" / "policy.example.yaml")
    assert len(policy.rule_names) >= 5
    manifest = yaml.safe_load((REPO / "manifests" / "slack-app.yaml").read_text())
    assert manifest["features"]["bot_user"]["display_name"] == "stepup"
