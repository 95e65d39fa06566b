"""``.env.example`` lists every setting the service reads, and nothing else; it loads as is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.settings import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[3] / ".env.example"


def setting_names() -> set[str]:
    return {str(field.validation_alias) for field in Settings.model_fields.values()}


def example_names() -> set[str]:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    return set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


def test_every_setting_is_in_the_example_and_nothing_else() -> None:
    assert example_names() == setting_names()


def test_the_example_cites_no_document_outside_the_repository() -> None:
    assert "DESIGN" not in ENV_EXAMPLE.read_text(encoding="utf-8")


def test_the_example_loads_as_a_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    assert settings.port == 8080 and settings.sandbox is True
    assert settings.slack_bot_token is None and settings.security_channel in (None, "")
