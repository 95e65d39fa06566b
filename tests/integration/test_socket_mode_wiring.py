"""With SLACK_APP_TOKEN, the Slack app runs in Socket Mode and no HTTP endpoint is mounted."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bot.server import build_runtime
from bot.settings import Settings
from tests.integration.live import running

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("app_token", [None, "xapp-1-A0STEPUP-1-0123456789abcdef"])
def test_http_or_socket_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app_token: str | None
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "STEPUP_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "STEPUP_POLICY_FILE": str(REPO / "manifests" / "policy.example.yaml"),
        "STEPUP_KEYS_DIR": str(tmp_path / "keys"),
        "SLACK_BOT_TOKEN": "xoxb-1-0123456789",
        "SLACK_SIGNING_SECRET": "0123456789abcdef0123456789abcdef",
        "STEPUP_SLACK_API_URL": "http://127.0.0.1:9/api/",
    }
    if app_token:
        env["SLACK_APP_TOKEN"] = app_token
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    runtime = build_runtime(Settings())
    try:
        with running(runtime.app) as url:  # an unsigned request: 401 if mounted, else 404
            status = httpx.post(f"{url}/slack/events", content=b"{}", timeout=10).status_code
        assert runtime.slack is not None
        if app_token:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            assert isinstance(runtime.socket_mode, SocketModeHandler)
            assert runtime.socket_mode.app is runtime.slack.app
            assert status == 404
        else:
            assert runtime.socket_mode is None
            assert status == 401
    finally:
        runtime.context.service.db.dispose()
