"""An auditor's check: ``stepup audit export`` on the service, ``stepup audit keys`` for every
public key, then ``stepup audit verify --export FILE --jwks FILE_OR_URL`` in a fresh process
with no database, no private key and no STEPUP_* setting — on SQLite and PostgreSQL sources.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from core.audit.chain import entry_hash
from core.audit.checkpoints import verify_checkpoint
from core.canonical import canonical_json
from core.keys import KeyRing
from core.model import Vote
from core.storage.database import Database
from tests.conftest import T0
from tests.integration import test_cli
from tests.integration.test_audit_checkpoints import digest_checkpoint, traffic
from tests.integration.test_cli import STEPUP, Cli, Outcome

cli, cli_db = test_cli.cli, test_cli.cli_db  # the CLI's fixtures: STEPUP_* only, scratch cwd
# The file's checks once: both databases' exports are verified by the tests left on both.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass
class Exported:
    log: Path  # the JSON Lines export
    jwks: Path  # `stepup audit keys`
    lines: list[dict[str, Any]]
    checkpoint: str  # the digest's
    keys_dir: Path


@pytest.fixture
def exported(cli_db: Cli, db: Database, tmp_path: Path) -> Exported:
    engine = traffic(db, tmp_path, every=5)
    checkpoint = digest_checkpoint(engine)
    log = tmp_path / "audit.jsonl"
    out = cli_db.invoke("audit", "export", "-o", str(log))
    assert out.code == 0, out.stderr
    keys = cli_db.invoke("audit", "keys")
    assert keys.code == 0, keys.stderr
    jwks = tmp_path / "jwks.json"
    jwks.write_text(keys.stdout, encoding="utf-8")
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    return Exported(log, jwks, lines, checkpoint, tmp_path / "keys")


def offline(tmp_path: Path, *args: str) -> Outcome:
    """``stepup audit verify`` as an auditor runs it: a fresh process, an empty directory, no
    STEPUP_* (nor SLACK_*) variable, so no database and no keys directory to fall back on."""
    work = tmp_path / "auditor"
    work.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPUP_", "SLACK_"))}
    done = subprocess.run(
        [str(STEPUP), "audit", "verify", *args],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert list(work.iterdir()) == []  # nothing created: no default database, no keys
    return Outcome(done.returncode, done.stdout, done.stderr)


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(x, sort_keys=True) + "\n" for x in lines), "utf-8")
    return path


def test_an_export_verifies_offline_with_public_keys_only(
    exported: Exported, tmp_path: Path
) -> None:
    last = exported.lines[-1]
    checkpoints = sum(1 for x in exported.lines if x["kind"] == "audit.checkpoint")
    out = offline(
        tmp_path,
        "--export",
        str(exported.log),
        "--jwks",
        str(exported.jwks),
        "--checkpoint",
        exported.checkpoint,
    )
    assert out.code == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"export intact: {len(exported.lines)} entries, seq 1 to {last['seq']}, "
        f"last hash {last['hash']}",
        f"signatures: 4 signed decisions and {checkpoints} checkpoints verified",
        f"confirmed: the checkpoint of seq {last['seq'] - 1} signed "
        f"{last['at']} matches entry {last['seq'] - 1}",
    ]
    assert out.stderr == ""  # the digest's checkpoint is the last entry: all anchored


@sqlite_only
@pytest.mark.parametrize(
    ("field", "value"),
    [("actor", "mallory@example.com"), ("at", "2026-11-02T09:30:00.000000+00:00")],
)
def test_a_tampered_export_line_is_named(
    exported: Exported, tmp_path: Path, field: str, value: str
) -> None:
    lines = [dict(x) for x in exported.lines]
    target = next(x for x in lines if x["kind"] == "decision.recorded")
    assert target[field] != value
    target[field] = value
    out = offline(
        tmp_path,
        "--export",
        str(write_lines(tmp_path / "t.jsonl", lines)),
        "--jwks",
        str(exported.jwks),
    )
    assert out.code == 1
    assert out.stderr == (
        f"error: export broken at entry {target['seq']}: content was modified (hash mismatch)\n"
    )


@sqlite_only
def test_a_rehashed_export_is_caught_by_its_signatures(exported: Exported, tmp_path: Path) -> None:
    """A decision turned into a denial and every later hash of the file recomputed: the
    signed decision inside still says approve."""
    lines = [dict(x) for x in exported.lines]
    index = next(i for i, x in enumerate(lines) if x["kind"] == "decision.recorded")
    lines[index]["data"] = dict(lines[index]["data"], vote=Vote.DENY.value)
    prev = lines[index]["prev_hash"]
    for line in lines[index:]:
        line["prev_hash"] = prev
        line["hash"] = prev = entry_hash(
            seq=line["seq"],
            at=datetime.fromisoformat(line["at"]),
            kind=line["kind"],
            request_id=line["request_id"],
            actor=line["actor"],
            data=canonical_json(line["data"]),
            prev_hash=prev,
        )
    out = offline(
        tmp_path,
        "--export",
        str(write_lines(tmp_path / "t.jsonl", lines)),
        "--jwks",
        str(exported.jwks),
    )
    assert out.code == 1
    assert f"error: export broken at entry {lines[index]['seq']}: bad decision signature" in (
        out.stderr
    )


def test_a_decision_signed_by_a_key_missing_from_the_jwks_is_named(
    exported: Exported, tmp_path: Path, cli_db: Cli
) -> None:
    """After a rotation the JWKS endpoint drops the old key once its credentials expired; the
    log's decisions were signed with it. ``audit keys`` still lists it."""
    ring = KeyRing.load_or_create(exported.keys_dir)
    old = ring.active_kid
    new = ring.rotate()
    served = tmp_path / "served.json"
    served.write_text(json.dumps(ring.jwks(now=T0 + timedelta(days=3650))), "utf-8")
    assert [k["kid"] for k in json.loads(served.read_text())["keys"]] == [new]
    first = next(x for x in exported.lines if x["kind"] == "decision.recorded")
    out = offline(tmp_path, "--export", str(exported.log), "--jwks", str(served))
    assert out.code == 1
    assert out.stderr == (
        f"error: export broken at entry {first['seq']}: bad decision signature (signed by key "
        f"'{old}', which is not among the public keys given)\n"
    )
    keys = cli_db.invoke("audit", "keys")
    assert keys.code == 0, keys.stderr
    assert [k["kid"] for k in json.loads(keys.stdout)["keys"]] == [new, old]  # active first
    every = tmp_path / "every.json"
    every.write_text(keys.stdout, "utf-8")
    assert offline(tmp_path, "--export", str(exported.log), "--jwks", str(every)).code == 0


def test_an_export_since_a_time_is_verified_from_its_first_entry(
    exported: Exported, tmp_path: Path, cli_db: Cli
) -> None:
    since = T0 + timedelta(hours=1)
    part = tmp_path / "since.jsonl"
    out = cli_db.invoke("audit", "export", "--since", since.isoformat(), "-o", str(part))
    assert out.code == 0
    lines = [json.loads(x) for x in part.read_text(encoding="utf-8").splitlines()]
    first, last = lines[0], lines[-1]
    assert first["seq"] > 1
    checked = offline(
        tmp_path,
        "--export",
        str(part),
        "--jwks",
        str(exported.jwks),
        "--checkpoint",
        exported.checkpoint,
    )
    assert checked.code == 0, checked.stderr
    assert checked.stdout.splitlines()[0] == (
        f"export intact: {len(lines)} entries, seq {first['seq']} to {last['seq']}, "
        f"last hash {last['hash']}"
    )
    assert checked.stderr.splitlines()[0] == (
        f"note: the export starts mid-chain at seq {first['seq']} (exported with --since): "
        f"verified from its first entry's prev_hash {first['prev_hash']}; entries before it "
        "are not covered"
    )
    # A cut at the start is seen the same way; a line missing inside is not hidden.
    holed = write_lines(tmp_path / "holed.jsonl", [x for x in lines if x is not lines[2]])
    broken = offline(tmp_path, "--export", str(holed), "--jwks", str(exported.jwks))
    assert broken.code == 1
    assert f"export broken at entry {lines[2]['seq']}: missing" in broken.stderr


@pytest.fixture
def served_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A plain HTTP server over a directory, on a free port: a JWKS URL."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@sqlite_only
def test_the_jwks_may_be_a_url(
    exported: Exported, tmp_path: Path, served_dir: tuple[Path, str]
) -> None:
    root, url = served_dir
    (root / "jwks.json").write_text(exported.jwks.read_text(), "utf-8")
    out = offline(tmp_path, "--export", str(exported.log), "--jwks", f"{url}/jwks.json")
    assert out.code == 0, out.stderr
    missing = offline(tmp_path, "--export", str(exported.log), "--jwks", f"{url}/nothing.json")
    assert missing.code == 1 and "cannot fetch the JWKS" in missing.stderr


def test_the_database_may_be_verified_with_a_jwks_too(
    exported: Exported, cli_db: Cli, tmp_path: Path
) -> None:
    cli_db.env["STEPUP_KEYS_DIR"] = str(tmp_path / "nowhere")
    out = cli_db.invoke("audit", "verify", "--jwks", str(exported.jwks))
    assert out.code == 0, out.stderr
    assert not (tmp_path / "nowhere").exists()


@sqlite_only
def test_what_offline_verification_needs_is_said(
    exported: Exported, tmp_path: Path, cli: Cli
) -> None:
    no_jwks = offline(tmp_path, "--export", str(exported.log))
    assert no_jwks.code == 1
    assert (
        no_jwks.stderr == "error: --export needs --jwks: the public keys to check signatures with\n"
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(exported.log.read_text().splitlines()[0] + "\n{not json\n", "utf-8")
    unreadable = offline(tmp_path, "--export", str(bad), "--jwks", str(exported.jwks))
    assert unreadable.code == 1
    assert f"error: {bad}: line 2: not an audit entry" in unreadable.stderr
    not_jwks = offline(tmp_path, "--export", str(exported.log), "--jwks", str(exported.log))
    assert not_jwks.code == 1 and "is not JSON (a JWKS is expected)" in not_jwks.stderr
    cli.env["STEPUP_KEYS_DIR"] = str(tmp_path / "no-keys")
    no_keys = cli.invoke("audit", "keys")
    assert no_keys.code == 1 and "no public keys in" in no_keys.stderr


@sqlite_only
def test_the_digest_checkpoint_checks_against_an_export(exported: Exported, tmp_path: Path) -> None:
    """The checkpoint posted to Slack confirms an export too (its entry is in the file)."""
    anchored = verify_checkpoint(
        exported.checkpoint, KeyRing.from_jwks(json.loads(exported.jwks.read_text()))
    )
    cut = write_lines(
        tmp_path / "cut.jsonl", [x for x in exported.lines if x["seq"] < anchored.seq]
    )
    out = offline(
        tmp_path,
        "--export",
        str(cut),
        "--jwks",
        str(exported.jwks),
        "--checkpoint",
        exported.checkpoint,
    )
    assert out.code == 1
    assert (
        f"error: export broken at entry {anchored.seq}: missing: the checkpoint of seq "
        f"{anchored.seq}"
    ) in out.stderr


def test_a_checkpoint_before_the_export_starts_fails_the_check(
    exported: Exported, tmp_path: Path
) -> None:
    """An auditor holding a checkpoint from an earlier digest is handed an export that starts
    after it: whatever follows could be made up, so the check must not pass."""
    entries = [x for x in exported.lines if x["kind"] == "audit.checkpoint"]
    assert entries, "the traffic writes checkpoints"
    early = entries[0]
    signed = early["data"]["signed"]
    later = write_lines(
        tmp_path / "later.jsonl", [x for x in exported.lines if x["seq"] > early["seq"]]
    )
    checked = offline(
        tmp_path, "--export", str(later), "--jwks", str(exported.jwks), "--checkpoint", signed
    )
    assert checked.code == 1, checked.stdout
    assert "is before the first entry verified, so it was not checked" in checked.stderr
    # The same checkpoint against the whole export is confirmed.
    whole = offline(
        tmp_path,
        "--export",
        str(exported.log),
        "--jwks",
        str(exported.jwks),
        "--checkpoint",
        signed,
    )
    assert whole.code == 0, whole.stderr
    assert "confirmed: the " in whole.stdout
