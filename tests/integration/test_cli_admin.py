"""Agent, resource-server and request administration through the real `stepup` command."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.model import ActionClass, Status
from core.storage.database import Database
from core.storage.pg_changes import PgChangeRelay
from tests.conftest import _reset_postgres
from tests.support import build_engine, intent

STEPUP = str(Path(sys.executable).parent / "stepup")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return make_cli_env(database_url, tmp_path)


def make_cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPUP_", "SLACK_"))}
    policy = tmp_path / "policy.yaml"
    from tests.support import TEST_POLICY

    policy.write_text(TEST_POLICY)
    env.update(
        STEPUP_DATABASE_URL=database_url,
        STEPUP_KEYS_DIR=str(tmp_path / "keys"),
        STEPUP_POLICY_FILE=str(policy),
    )
    return env


def stepup(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [STEPUP, *args], env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def test_agents_and_resource_servers(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    added = stepup(cli_env, "agents", "add", "deploy-bot", "--owner", "Olga@Example.com")
    key = added.stdout.strip().splitlines()[-1]
    assert key.startswith("stpa_") and len(key) > 40
    listed = stepup(cli_env, "agents", "list").stdout
    assert "deploy-bot\tolga@example.com\tactive" in listed
    assert key not in listed

    duplicate = stepup(cli_env, "agents", "add", "deploy-bot", "--owner", "x@example.com", ok=False)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    bad_owner = stepup(cli_env, "agents", "add", "other", "--owner", "not-an-email", ok=False)
    assert bad_owner.returncode == 1 and "--owner" in bad_owner.stderr

    server_key = (
        stepup(cli_env, "resource-servers", "add", "payments-api").stdout.strip().splitlines()[-1]
    )
    assert server_key.startswith("stpr_")

    # The key works against the engine, and only its hash is stored.
    db = Database(database_url)
    engine = build_engine(db, tmp_path)
    agent = engine.registry.authenticate(key)
    assert agent.id == "deploy-bot"
    snap, _ = engine.service.submit(
        agent, intent(agent, action_class=ActionClass.READ), now=datetime.now(UTC)
    )
    engine.service.claim(snap.id, agent, now=datetime.now(UTC))
    with db.read() as session:
        from sqlalchemy import text

        stored = " ".join(
            str(v) for row in session.execute(text("select * from agent_keys")).all() for v in row
        )
    assert key not in stored and server_key not in stored

    disabled = stepup(cli_env, "agents", "disable", "deploy-bot").stdout
    assert "1 live credential(s) revoked" in disabled
    assert engine.service.get(snap.id).status is Status.REVOKED
    assert "deploy-bot\tolga@example.com\tdisabled" in stepup(cli_env, "agents", "list").stdout
    db.dispose()


def test_requests_list_show_and_revoke(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    db = Database(database_url)
    engine = build_engine(db, tmp_path)
    agent = engine.registry.authenticate(
        engine.registry.add("deploy-bot", "olga@example.com", by="t", now=datetime.now(UTC))
    )
    pending, _ = engine.service.submit(agent, intent(agent), now=datetime.now(UTC))
    allowed, _ = engine.service.submit(
        agent, intent(agent, action_class=ActionClass.READ), now=datetime.now(UTC)
    )

    everything = stepup(cli_env, "requests", "list").stdout
    assert pending.id in everything and allowed.id in everything
    only_pending = stepup(cli_env, "requests", "list", "--status", "pending").stdout
    assert pending.id in only_pending and allowed.id not in only_pending
    wrong = stepup(cli_env, "requests", "list", "--status", "bogus", ok=False)
    assert wrong.returncode == 1 and "--status must be one of" in wrong.stderr

    shown = json.loads(stepup(cli_env, "requests", "show", allowed.id).stdout)
    assert shown["id"] == allowed.id and shown["status"] == "approved" and shown["rule"] == "reads"
    missing = stepup(cli_env, "requests", "show", "req_nope", ok=False)
    assert missing.returncode == 1 and "req_nope" in missing.stderr

    revoked = stepup(cli_env, "revoke", allowed.id, "--reason", "incident 7").stdout
    assert f"{allowed.id} revoked" in revoked
    assert engine.service.get(allowed.id).status_reason == "incident 7"
    again = stepup(cli_env, "revoke", allowed.id, ok=False)
    assert again.returncode == 1 and "revoked" in again.stderr
    db.dispose()


@pytest.mark.postgres
def test_cli_changes_wake_the_servers_long_polls(postgres_database: str, tmp_path: Path) -> None:
    """`stepup revoke` and `agents disable` publish what they change (LISTEN/NOTIFY), so a
    long-poll held by a running server answers at once rather than on its re-read."""
    database_url = postgres_database
    _reset_postgres(Database(database_url))
    cli_env = make_cli_env(database_url, tmp_path)
    db = Database(database_url)
    engine = build_engine(db, tmp_path)
    agent = engine.registry.authenticate(
        engine.registry.add("deploy-bot", "olga@example.com", by="t", now=datetime.now(UTC))
    )
    first, _ = engine.service.submit(
        agent, intent(agent, action_class=ActionClass.READ), now=datetime.now(UTC)
    )
    second, _ = engine.service.submit(
        agent,
        intent(agent, action_class=ActionClass.READ, target="orders-db"),
        now=datetime.now(UTC),
    )
    heard: queue.SimpleQueue[str] = queue.SimpleQueue()
    listener = PgChangeRelay(database_url, heard.put, poll_seconds=0.2)
    listener.start()
    try:
        assert listener.listening.wait(10)
        stepup(cli_env, "revoke", first.id)
        assert heard.get(timeout=10) == first.id
        stepup(cli_env, "agents", "disable", "deploy-bot")  # revokes the other live credential
        assert heard.get(timeout=10) == second.id
    finally:
        listener.stop()
        db.dispose()


def test_unreachable_database_and_missing_keys_are_one_clear_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPUP_", "SLACK_"))}
    env["STEPUP_DATABASE_URL"] = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
    result = stepup(env, "db", "upgrade", ok=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: cannot use the database:")
    env["STEPUP_DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.db'}"
    env["STEPUP_KEYS_DIR"] = str(tmp_path / "no-keys-here")
    fresh = stepup(env, "audit", "verify", ok=False)  # no entries, no keys: a fresh install
    assert fresh.returncode == 0 and "a fresh install" in fresh.stdout
    assert not (tmp_path / "no-keys-here").exists()  # verify never invents a key


def test_list_commands_print_a_header_and_json(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    """Each list: a header row over tab-separated columns; with --json an array of objects."""
    assert stepup(cli_env, "agents", "list", "--json").stdout.strip() == "[]"
    added = stepup(cli_env, "agents", "add", "deploy-bot", "--owner", "olga@example.com")
    stepup(cli_env, "resource-servers", "add", "gateway", "--audience", "orders")
    db = Database(database_url)
    engine = build_engine(db, tmp_path)
    agent = engine.registry.authenticate(added.stdout.strip().splitlines()[-1])
    snap, _ = engine.service.submit(
        agent, intent(agent, action_class=ActionClass.READ), now=datetime.now(UTC)
    )
    db.dispose()

    agents = stepup(cli_env, "agents", "list").stdout.splitlines()
    assert agents[0] == "ID\tOWNER\tSTATE\tADDED\tLIVE KEYS\tAUTH"
    assert agents[1].startswith("deploy-bot\tolga@example.com\tactive\t")
    assert agents[1].endswith("\tstatic key (development)")
    [listed] = json.loads(stepup(cli_env, "agents", "list", "--json").stdout)
    assert listed == {
        "id": "deploy-bot",
        "owner": "olga@example.com",
        "state": "active",
        "added": agents[1].split("\t")[3],
        "live_keys": 1,
        "auth": ["static key (development)"],
        "identities": [],
    }

    servers = stepup(cli_env, "resource-servers", "list").stdout.splitlines()
    assert servers[0] == "NAME\tAUDIENCES\tSTATE\tADDED"
    assert servers[1].startswith("gateway\torders\tactive\t")
    [server] = json.loads(stepup(cli_env, "resource-servers", "list", "--json").stdout)
    assert server["name"] == "gateway" and server["audiences"] == ["orders"]
    assert server["state"] == "active"

    requests = stepup(cli_env, "requests", "list").stdout.splitlines()
    assert requests[0] == "ID\tSTATUS\tAGENT\tACTION\tTARGET\tENVIRONMENT\tRULE\tCREATED"
    assert requests[1].startswith(f"{snap.id}\tapproved\tdeploy-bot\t")
    [request] = json.loads(stepup(cli_env, "requests", "list", "--json").stdout)
    assert request["id"] == snap.id and request["status"] == "approved"
    assert request["agent"] == "deploy-bot" and request["rule"] == snap.rule
    assert request["created"] == requests[1].split("\t")[7]
