"""``stepup keys rotate`` and ``stepup keys list``: what the operator is told, and what is kept.

In-process (typer's runner) with the wall clock fixed, so the times printed are exact; the
rotation as a separate process next to running replicas is in test_key_rotation_replicas.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bot.clock
from bot.cli import app
from core.keyretention import read_manifest
from core.keys import KeyRing

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
EXAMPLE_POLICY = Path(__file__).resolve().parents[2] / "manifests" / "policy.example.yaml"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setattr(bot.clock, "utc_now", lambda: NOW)
    return {
        "STEPUP_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
        "STEPUP_KEYS_DIR": str(tmp_path / "keys"),
        "STEPUP_POLICY_FILE": str(EXAMPLE_POLICY),  # its longest credential: 15 minutes
    }


def stepup(env: dict[str, str], *args: str, code: int = 0) -> tuple[str, str]:
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, result.stderr
    return result.stdout, result.stderr


def test_rotate_names_both_keys_and_says_when_replicas_and_verifiers_follow(
    env: dict[str, str],
) -> None:
    old = KeyRing.load_or_create(Path(env["STEPUP_KEYS_DIR"])).active_kid

    out, err = stepup(env, "keys", "rotate")

    new = KeyRing.load_or_create(Path(env["STEPUP_KEYS_DIR"])).active_kid
    assert out.splitlines() == [
        f"active key {new} (was {old})",
        f"{old} stays in the JWKS until 2026-11-02T09:50:00Z (credentials live up to 15m, "
        "plus 5m of clock skew); its public key stays on disk for audit verification",
        f"running replicas that share {env['STEPUP_KEYS_DIR']} sign with the new key within "
        "2 seconds, no restart needed",
        "recorded in the audit log",
    ]
    assert err == ""
    record = read_manifest(Path(env["STEPUP_KEYS_DIR"]))[old]
    assert record.retired_at == NOW
    assert record.jwks_until == NOW + timedelta(minutes=20)
    # The rotation is an audit entry (kids only, never key material), and the chain verifies.
    entries = [json.loads(line) for line in stepup(env, "audit", "export")[0].splitlines()]
    rotations = [e for e in entries if e["kind"] == "signing_key.rotated"]
    assert [(e["actor"], e["data"]) for e in rotations] == [
        ("cli", {"new_kid": new, "old_kid": old, "old_leaves_jwks": "2026-11-02T09:50:00+00:00"})
    ]
    assert "intact" in stepup(env, "audit", "verify")[0]


def test_a_rotation_the_database_cannot_record_says_the_key_changed_anyway(
    env: dict[str, str], tmp_path: Path
) -> None:
    old = KeyRing.load_or_create(Path(env["STEPUP_KEYS_DIR"])).active_kid
    (tmp_path / "not-a-dir").write_text("")
    env["STEPUP_DATABASE_URL"] = f"sqlite:///{tmp_path / 'not-a-dir' / 'stepup.db'}"

    out, err = stepup(env, "keys", "rotate", code=1)

    assert f"(was {old})" in out  # the rotation happened, and is said first
    assert "the key WAS rotated, but the rotation is not in the audit log" in err
    assert KeyRing.load_or_create(Path(env["STEPUP_KEYS_DIR"])).active_kid != old


def test_rotate_without_a_readable_policy_assumes_the_api_cap(
    env: dict[str, str], tmp_path: Path
) -> None:
    env["STEPUP_POLICY_FILE"] = str(tmp_path / "missing.yaml")
    old = KeyRing.load_or_create(Path(env["STEPUP_KEYS_DIR"])).active_kid

    out, err = stepup(env, "keys", "rotate")

    assert "assuming credentials live up to the API's cap of 1d" in err
    assert f"{old} stays in the JWKS until 2026-11-03T09:35:00Z" in out
    record = read_manifest(Path(env["STEPUP_KEYS_DIR"]))[old]
    assert record.jwks_until == NOW + timedelta(days=1, minutes=5)


def test_list_shows_each_key_and_when_it_leaves_or_left_the_jwks(env: dict[str, str]) -> None:
    keys_dir = Path(env["STEPUP_KEYS_DIR"])
    ring = KeyRing.load_or_create(keys_dir)
    first = ring.active_kid
    second = ring.rotate(NOW - timedelta(days=10), lifetime=timedelta(minutes=15))
    stepup(env, "keys", "rotate")
    third = KeyRing.load_or_create(keys_dir).active_kid
    created_first = ring.key_statuses()[-1].created_at
    assert created_first is not None

    out, _ = stepup(env, "keys", "list")

    assert [line.split("\t") for line in out.splitlines()] == [
        ["KID", "CREATED", "STATE", "JWKS"],
        [third, "2026-11-02T09:30:00Z", "active", "listed, signs new credentials"],
        [
            second,
            "2026-10-23T09:30:00Z",
            "retired at 2026-11-02T09:30:00Z",
            "leaves the JWKS at 2026-11-02T09:50:00Z",
        ],
        [
            first,
            created_first.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            "retired at 2026-10-23T09:30:00Z",
            "left the JWKS at 2026-10-23T09:50:00Z",
        ],
    ]
    as_json, _ = stepup(env, "keys", "list", "--json")
    listed = json.loads(as_json)
    assert [(key["kid"], key["active"], key["in_jwks"]) for key in listed] == [
        (third, True, True),
        (second, False, True),
        (first, False, False),
    ]
    assert listed[1]["retired"] == "2026-11-02T09:30:00Z"
    assert listed[1]["jwks_until"] == "2026-11-02T09:50:00Z"


def test_list_without_keys_says_so_and_creates_none(env: dict[str, str]) -> None:
    _, err = stepup(env, "keys", "list", code=1)

    assert f"no signing keys at {env['STEPUP_KEYS_DIR']}" in err
    assert not Path(env["STEPUP_KEYS_DIR"]).exists()


@pytest.mark.parametrize("command", ["list", "rotate"])
def test_an_unusable_key_is_one_clear_line_and_nothing_changes(
    env: dict[str, str], command: str
) -> None:
    keys_dir = Path(env["STEPUP_KEYS_DIR"])
    KeyRing.load_or_create(keys_dir)
    (keys_dir / "active.key").chmod(0o644)
    before = sorted(p.name for p in keys_dir.rglob("*"))

    result = CliRunner().invoke(app, ["keys", command], env=env)

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # a message and an exit, no traceback
    assert result.stderr.startswith(f"error: private key {keys_dir / 'active.key'} is accessible")
    assert sorted(p.name for p in keys_dir.rglob("*")) == before
