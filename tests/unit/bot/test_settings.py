from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import load_settings
from core.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in (
        "STEPUP_DATABASE_URL",
        "STEPUP_PUBLIC_URL",
        "STEPUP_HOST",
        "STEPUP_PORT",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "STEPUP_TIMEZONE",
    ):
        monkeypatch.delenv(name, raising=False)


def test_embedded_defaults(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{tmp_path}/.stepup/stepup.db"
    assert settings.public_url == "http://127.0.0.1:8080"
    assert not settings.slack_enabled


def test_env_file_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "STEPUP_PORT=9000\nSTEPUP_PUBLIC_URL=https://stepup.example.com/\n"
    )
    monkeypatch.setenv("STEPUP_HOST", "0.0.0.0")
    settings = load_settings()
    assert (settings.host, settings.port, settings.public_url) == (
        "0.0.0.0",
        9000,
        "https://stepup.example.com",
    )


@pytest.mark.parametrize("value", ["xoxb-your-token-here", "changeme", "PLACEHOLDER"])
def test_placeholder_secrets_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SLACK_SIGNING_SECRET", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "SLACK_SIGNING_SECRET" in info.value.detail
    assert value not in info.value.detail


def test_real_secrets_are_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1234-abcd")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "8f3c0d9e")
    settings = load_settings()
    assert settings.slack_enabled
    assert "xoxb-1234-abcd" not in repr(settings) and "8f3c0d9e" not in str(settings)


def test_unknown_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPUP_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ConfigError, match="time zone"):
        load_settings()
