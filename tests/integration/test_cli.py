"""The ``stepup`` command line, on SQLite and PostgreSQL.

Some tests run the installed console script in a subprocess, exactly as an operator would; the
rest call the typer app in-process (same code, no interpreter start-up). Both get their
configuration only from ``STEPUP_*`` variables and run in a scratch working directory, so no
``.env`` of the checkout leaks in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from bot.cli import app
from core.audit.events import AuditKind
from core.canonical import canonical_json
from core.keys import KeyRing
from core.model import ActionClass, Approver, SessionOutcome, Vote
from core.policy import load_policy
from core.storage import audit_verify
from core.storage.audit_store import SqlAuditAppender
from core.storage.database import Database
from core.storage.migrate import alembic_config
from core.storage.tables import AuditRow
from tests.conftest import T0
from tests.integration.test_audit_store import rewrite_from
from tests.support import OWNER, TEST_POLICY, build_engine, intent, submit_body

STEPUP = Path(sys.executable).parent / "stepup"
EXAMPLE_POLICY = Path(__file__).resolve().parents[2] / "manifests" / "policy.example.yaml"
LATER = T0 + timedelta(hours=2)  # the second request's events


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


@dataclass
class Cli:
    """Runs ``stepup`` with this test's configuration, as a process or in-process."""

    env: dict[str, str]
    cwd: Path

    def run(self, *args: str) -> Outcome:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("STEPUP_", "SLACK_"))}
        done = subprocess.run(
            [str(STEPUP), *args],
            env=inherited | self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Outcome(done.returncode, done.stdout, done.stderr)

    def invoke(self, *args: str) -> Outcome:
        result = CliRunner().invoke(app, list(args), env=self.env, catch_exceptions=False)
        return Outcome(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """No database configured: commands that need one get ``cli_db``."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # for in-process runs: no stray .env
    env = {
        "STEPUP_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
        "STEPUP_KEYS_DIR": str(tmp_path / "keys"),
        "STEPUP_POLICY_FILE": str(EXAMPLE_POLICY),
    }
    return Cli(env, work)


@pytest.fixture
def cli_db(cli: Cli, database_url: str) -> Cli:
    """``cli`` pointed at the test database (SQLite in tmp_path, or PostgreSQL)."""
    cli.env["STEPUP_DATABASE_URL"] = database_url
    return cli


def write(path: Path, content: str) -> Path:
    path.write_text(content, encoding="utf-8")
    return path


# -- policy -------------------------------------------------------------------------------------


def test_policy_check_accepts_the_example_policy(cli: Cli) -> None:
    out = cli.run("policy", "check", str(EXAMPLE_POLICY))
    assert out.code == 0, out.stderr
    policy = load_policy(EXAMPLE_POLICY)
    assert f"{len(policy.rule_names)} rules" in out.stdout
    assert policy.digest in out.stdout
    assert out.stderr == ""


def test_policy_check_names_rule_and_field_of_a_typo(cli: Cli, tmp_path: Path) -> None:
    broken = TEST_POLICY.replace("    approvers: solo\n", "    aprovers: solo\n")
    out = cli.run("policy", "check", str(write(tmp_path / "typo.yaml", broken)))
    assert out.code == 1
    assert "staging-writes" in out.stderr
    assert "aprovers" in out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("approvers: sre-leads\n    quorum: 2", "approvers: sre-leadz\n    quorum: 2",
         ["prod-destructive", "approvers", "sre-leadz"]),
        ("    max_ttl: 10m\n", "    max_ttl: ten minutes\n", ["prod-destructive", "max_ttl"]),
        ("    decision: allow\n", "    decision: allwo\n", ["reads", "decision"]),
        ("    channel: approvals\n    max_ttl", "    channel: nowhere\n    max_ttl",
         ["prod-destructive", "channel", "nowhere"]),
    ],
)  # fmt: skip
def test_policy_check_names_what_is_wrong(
    cli: Cli, tmp_path: Path, old: str, new: str, named: list[str]
) -> None:
    assert old in TEST_POLICY
    policy = write(tmp_path / "broken.yaml", TEST_POLICY.replace(old, new))
    out = cli.invoke("policy", "check", str(policy))
    assert out.code == 1
    for word in named:
        assert word in out.stderr
    assert out.stdout == ""


def test_policy_check_reports_unreadable_files_once(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    out = cli.invoke("policy", "check", str(missing))
    assert out.code == 1
    assert out.stderr.count(str(missing)) == 1
    assert "cannot read" in out.stderr
    syntax = cli.invoke("policy", "check", str(write(tmp_path / "bad.yaml", "rules: [\n")))
    assert syntax.code == 1
    assert "line" in syntax.stderr


def test_policy_explain_shows_the_deciding_rule(cli: Cli, tmp_path: Path) -> None:
    policy = write(tmp_path / "policy.yaml", TEST_POLICY)
    request = submit_body() | {"agent": "deploy-bot", "now": "2026-11-02T09:30:00Z"}
    req = write(tmp_path / "req.json", json.dumps(request))
    out = cli.run("policy", "explain", str(policy), "--request", str(req))
    assert out.code == 0, out.stderr
    deciding = [line for line in out.stdout.splitlines() if "<- decides" in line]
    assert len(deciding) == 1
    assert "prod-destructive" in deciding[0]
    assert "decision APPROVE by rule prod-destructive" in out.stdout
    assert "quorum 2 of sre-leads" in out.stdout

    # A deny rule wins over an earlier match, and explain says so.
    write(req, json.dumps(request | {"action": "db.drop_database"}))
    denied = cli.invoke("policy", "explain", str(policy), "--request", str(req))
    assert denied.code == 0, denied.stderr
    assert "decision DENY by rule never-drop-prod-db" in denied.stdout


def test_policy_explain_refuses_a_bad_request(cli: Cli, tmp_path: Path) -> None:
    policy = write(tmp_path / "policy.yaml", TEST_POLICY)
    req = write(tmp_path / "req.json", json.dumps({"action": "x", "target": "t"}))
    out = cli.invoke("policy", "explain", str(policy), "--request", str(req))
    assert out.code == 1
    assert "action_class" in out.stderr
    assert "environment" in out.stderr


# -- database and keys --------------------------------------------------------------------------


def alembic_head(url: str) -> str:
    db = Database(url)
    try:
        head = ScriptDirectory.from_config(alembic_config(db.engine)).get_current_head()
    finally:
        db.dispose()
    assert head is not None
    return head


def test_db_upgrade_creates_the_schema_and_is_idempotent(cli: Cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'stepup.db'}"
    cli.env["STEPUP_DATABASE_URL"] = url
    first, second = cli.run("db", "upgrade"), cli.run("db", "upgrade")
    expected = f"database at revision {alembic_head(url)}"
    assert (first.code, first.stdout.strip()) == (0, expected), first.stderr
    assert (second.code, second.stdout.strip()) == (0, expected), second.stderr
    db = Database(url)
    try:
        assert {"audit_log", "audit_head", "requests", "agents"} <= set(
            inspect(db.engine).get_table_names()
        )
    finally:
        db.dispose()


def test_db_upgrade_on_a_current_database(cli_db: Cli, database_url: str) -> None:
    out = cli_db.invoke("db", "upgrade")
    assert out.code == 0
    assert out.stdout.strip() == f"database at revision {alembic_head(database_url)}"


def test_keys_rotate_keeps_the_old_public_key(cli: Cli) -> None:
    keys_dir = Path(cli.env["STEPUP_KEYS_DIR"])
    first = KeyRing.load_or_create(keys_dir).active_kid
    out = cli.run("keys", "rotate")
    assert out.code == 0, out.stderr
    ring = KeyRing.load_or_create(keys_dir)
    assert ring.active_kid != first
    assert [k["kid"] for k in ring.jwks()["keys"]] == [ring.active_kid, first]
    assert f"active key {ring.active_kid} (was {first}" in out.stdout


# -- audit --------------------------------------------------------------------------------------


def record_activity(db: Database, tmp_path: Path) -> None:
    """Real engine traffic: a request approved by two signed votes, claimed and completed, then
    a second request two hours later. The engine's keys are the ones the CLI is given."""
    engine = build_engine(db, tmp_path)
    agent = engine.registry.authenticate(engine.registry.add("deploy-bot", OWNER, by="t", now=T0))
    snap, _ = engine.service.submit(agent, intent(agent), now=T0)
    for i, who in enumerate(["U0ALICE", "U0BOB"], start=1):
        approver = Approver(who, f"{who[3:].lower()}@example.com")
        engine.service.vote(snap.id, approver, Vote.APPROVE, now=T0 + timedelta(seconds=i))
    engine.service.claim(snap.id, agent, now=T0 + timedelta(seconds=5))
    engine.service.complete(
        snap.id, agent, SessionOutcome.SUCCEEDED, "ok", now=T0 + timedelta(seconds=9)
    )
    read = intent(agent, action="db.query", action_class=ActionClass.READ)
    engine.service.submit(agent, read, now=LATER)


def stored(db: Database) -> list[AuditRow]:
    with db.read() as session:
        return list(session.execute(select(AuditRow).order_by(AuditRow.seq)).scalars())


def test_audit_verify_clean_then_tampered(cli_db: Cli, db: Database, tmp_path: Path) -> None:
    record_activity(db, tmp_path)
    rows = stored(db)
    out = cli_db.run("audit", "verify")
    assert out.code == 0, out.stderr
    assert f"audit chain intact: {len(rows)} entries, head {len(rows)} {rows[-1].hash}" in (
        out.stdout
    )

    with db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 4"))
    tampered = cli_db.run("audit", "verify")
    assert tampered.code != 0
    assert "entry 4" in tampered.stderr
    assert "intact" not in tampered.stdout


def test_audit_verify_checks_decision_signatures(cli_db: Cli, db: Database, tmp_path: Path) -> None:
    record_activity(db, tmp_path)
    decision = next(r for r in stored(db) if r.kind == AuditKind.DECISION_RECORDED.value)
    data = json.loads(decision.data)
    data["vote"] = Vote.DENY.value  # the signed JWS still says approve
    rewrite_from(db, decision.seq, canonical_json(data))  # hashes and head stay consistent
    out = cli_db.run("audit", "verify")
    assert out.code != 0
    assert f"entry {decision.seq}" in out.stderr
    assert "signature" in out.stderr


def test_audit_verify_needs_the_service_keys(cli_db: Cli, db: Database, tmp_path: Path) -> None:
    record_activity(db, tmp_path)
    first_decision = next(r for r in stored(db) if r.kind == AuditKind.DECISION_RECORDED.value)
    cli_db.env["STEPUP_KEYS_DIR"] = str(tmp_path / "other-keys")
    missing = cli_db.invoke("audit", "verify")
    assert missing.code == 1 and "no signing keys" in missing.stderr
    assert not (tmp_path / "other-keys").exists()
    KeyRing.load_or_create(tmp_path / "other-keys")  # another service's keys
    out = cli_db.invoke("audit", "verify")
    assert out.code == 1
    assert f"entry {first_decision.seq}: bad decision signature" in out.stderr


def test_audit_verify_on_a_fresh_install_says_so(cli_db: Cli, db: Database, tmp_path: Path) -> None:
    """No entry and no keys yet: nothing to verify, said plainly, exit 0, no key invented.
    One entry (an agent registered with the keys elsewhere) and no keys: refused."""
    out = cli_db.run("audit", "verify")
    assert out.code == 0, out.stderr
    assert out.stdout == (
        "the audit log is empty and there are no signing keys yet (a fresh install): "
        "nothing to verify\n"
    )
    assert not (tmp_path / "keys").exists()
    with db.write() as session:
        SqlAuditAppender(session).append(
            AuditKind.AGENT_ADDED, at=T0, request_id=None, actor="t", data={"agent": "a"}
        )
    refused = cli_db.run("audit", "verify")
    assert refused.code == 1 and "no signing keys at" in refused.stderr
    assert not (tmp_path / "keys").exists()


def test_audit_verify_ignores_entries_appended_meanwhile(
    cli_db: Cli, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_activity(db, tmp_path)
    entries = len(stored(db))
    real_read_head = audit_verify.read_head

    def head_then_service_appends(session: Session) -> tuple[int, str]:
        head = real_read_head(session)
        with db.write() as other:  # the running service, on a connection of its own
            SqlAuditAppender(other).append(
                AuditKind.REQUEST_EXPIRED,
                at=LATER,
                request_id=None,
                actor="scheduler",
                data={"was": "approved"},
            )
        return head

    monkeypatch.setattr(audit_verify, "read_head", head_then_service_appends)
    out = cli_db.invoke("audit", "verify")
    assert out.code == 0, out.stderr
    assert f"audit chain intact: {entries} entries" in out.stdout
    assert len(stored(db)) == entries + 1


def export_lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_audit_export_writes_json_lines(cli_db: Cli, db: Database, tmp_path: Path) -> None:
    record_activity(db, tmp_path)
    rows = stored(db)
    out = cli_db.run("audit", "export")
    assert out.code == 0, out.stderr
    lines = export_lines(out.stdout)
    assert [(e["seq"], e["hash"], e["kind"]) for e in lines] == [
        (r.seq, r.hash, r.kind) for r in rows
    ]
    assert all(e["prev_hash"] == prev["hash"] for prev, e in pairwise(lines))
    assert lines[0]["data"] == {"agent": "deploy-bot", "owner": OWNER}

    since = cli_db.run("audit", "export", "--since", (T0 + timedelta(hours=1)).isoformat())
    assert since.code == 0, since.stderr
    later = [r.seq for r in rows if r.at >= LATER]
    assert 0 < len(later) < len(rows)
    assert [e["seq"] for e in export_lines(since.stdout)] == later


@pytest.mark.parametrize(
    "since", ["2026-11-02T10:30:03+01:00", "2026-11-02T09:30:03Z", "2026-11-02T09:30:03"]
)
def test_audit_export_since_is_an_instant(
    cli_db: Cli, db: Database, tmp_path: Path, since: str
) -> None:
    record_activity(db, tmp_path)  # T0 is 09:30:00 UTC; a time without offset is taken as UTC
    out = cli_db.invoke("audit", "export", "--since", since)
    assert out.code == 0
    expected = [r.seq for r in stored(db) if r.at >= T0 + timedelta(seconds=3)]
    assert 0 < len(expected) < len(stored(db))
    assert [e["seq"] for e in export_lines(out.stdout)] == expected


def test_audit_export_to_a_file(cli_db: Cli, db: Database, tmp_path: Path) -> None:
    record_activity(db, tmp_path)
    target = tmp_path / "audit.jsonl"
    since = LATER.isoformat()
    out = cli_db.invoke("audit", "export", "--since", since, "--output", str(target))
    assert out.code == 0
    later = [r.seq for r in stored(db) if r.at >= LATER]
    assert out.stdout.strip() == f"wrote {len(later)} entries to {target}"
    assert [e["seq"] for e in export_lines(target.read_text(encoding="utf-8"))] == later


def test_audit_export_refuses_a_bad_since(cli_db: Cli) -> None:
    out = cli_db.run("audit", "export", "--since", "yesterday")
    assert out.code != 0
    assert "--since 'yesterday' is not an ISO 8601 time" in out.stderr
    assert out.stdout == ""
