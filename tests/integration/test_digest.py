"""The daily digest on a real database (SQLite and PostgreSQL), from traffic driven through the
engine at fixed times: every figure is asserted exactly, posting is once per day across
replicas, and the ``stepup digest`` command runs as the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from bot.slack.digest_blocks import digest_blocks, digest_message
from bot.slack_emulator.server import SlackEmulator
from core.digest import (
    ActiveCredential,
    AuditStatus,
    BreakGlassUse,
    DecisionTimes,
    Denial,
    Digest,
    Expired,
    RefusedClick,
    RequestRef,
    RevocationFailure,
    TierOutcome,
    render_text,
)
from core.errors import NotEligible
from core.model import ActionClass, Approver, Vote
from core.policy.engine import NO_MATCH_REASON
from core.storage.agents_repo import AgentIdentity
from core.storage.audit_store import chain_snapshot, read_head
from core.storage.database import Database
from core.storage.digest_repo import build_digest
from core.storage.tables import AuditRow, DigestRow, OutboxRow, RevocationRow
from core.usecases.digest import post_digest
from tests.conftest import T0
from tests.support import OWNER, SPONSOR, Engine, build_engine, intent

STEPUP = Path(sys.executable).parent / "stepup"
NOW = T0 + timedelta(days=1)  # the digest covers [T0, NOW)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
OPS_OWNER = "otto@example.com"
SECURITY = "C0SECURITY"

DIGEST_POLICY = """\
version: 1
defaults: { approval_timeout: 30m, claim_window: 5m, max_ttl: 1h }
approver_groups:
  sre-leads:
    slack_users: [U0ALICE, U0BOB, U0CAROL]
channels:
  approvals: C0APPROVALS
rules:
  - name: never-drop-prod-db
    match: { action: "db.drop_database", environment: production }
    decision: deny
    tier: critical
    reason: Dropping a production database is never automated
  - name: prod-destructive
    match: { environment: production, action_class: destructive }
    decision: approve
    tier: high
    approvers: sre-leads
    quorum: 2
    channel: approvals
    break_glass: true
  - name: staging-writes
    match: { environment: staging, action_class: write }
    decision: approve
    tier: medium
    approvers: sre-leads
    quorum: 1
    channel: approvals
  - name: reads
    match: { action_class: read }
    decision: allow
    tier: low
    max_ttl: 5m
"""

ALICE = Approver("U0ALICE", "alice@example.com", "Alice")
BOB = Approver("U0BOB", "bob@example.com", "Bob")
CAROL = Approver("U0CAROL", "carol@example.com", "Carol")


@dataclass
class Traffic:
    engine: Engine
    ids: dict[str, str]

    def ref(
        self, name: str, agent: str, action: str, target: str, env: str, tier: str
    ) -> RequestRef:
        return RequestRef(self.ids[name], agent, action, target, env, tier)


def agents(engine: Engine, at: datetime) -> tuple[AgentIdentity, AgentIdentity]:
    registry = engine.registry
    deploy = registry.authenticate(registry.add("deploy-bot", OWNER, by="test", now=at))
    ops = registry.authenticate(registry.add("ops-bot", OPS_OWNER, by="test", now=at))
    return deploy, ops


def refuse(engine: Engine, request_id: str, who: Approver, at: datetime) -> str:
    with pytest.raises(NotEligible) as refused:
        engine.service.vote(request_id, who, Vote.APPROVE, now=at)
    return refused.value.why


def drive(db: Database, tmp_path: Path) -> Traffic:
    """A day of traffic; each figure of the digest at NOW is known from it."""
    engine = build_engine(db, tmp_path, DIGEST_POLICY)
    svc = engine.service
    deploy, ops = agents(engine, T0 - timedelta(hours=2))
    ids: dict[str, str] = {}

    def submit(name: str, agent: AgentIdentity, at: datetime, **fields: object) -> str:
        snap, _ = svc.submit(agent, intent(agent, **fields), now=at)  # type: ignore[arg-type]
        ids[name] = snap.id
        return snap.id

    read = {"action": "db.query", "action_class": ActionClass.READ}
    write_staging = {"action_class": ActionClass.WRITE, "environment": "staging"}
    drop = {"action": "db.drop_database", "target": "orders-db"}

    # Before the window: counted nowhere.
    submit("old", deploy, T0 - timedelta(hours=1), **drop)
    # Approved by two people 3 minutes after submission, then never claimed.
    d1 = submit("d1", deploy, T0 + timedelta(hours=2))
    svc.vote(d1, ALICE, Vote.APPROVE, now=T0 + timedelta(hours=2) + MIN)
    svc.vote(d1, BOB, Vote.APPROVE, now=T0 + timedelta(hours=2) + 3 * MIN)
    # Denied by an approver after 60 s.
    d2 = submit("d2", deploy, T0 + timedelta(hours=3), target="billing-api", **write_staging)
    svc.vote(
        d2,
        CAROL,
        Vote.DENY,
        now=T0 + timedelta(hours=3, seconds=60),
        reason="not during the freeze",
    )
    # Refused clicks of each kind, then nobody decides.
    e = submit("expired", deploy, T0 + timedelta(hours=5), on_behalf_of=SPONSOR)
    click = T0 + timedelta(hours=5) + MIN
    assert refuse(engine, e, Approver("U0EVE", "eve@example.com"), click) == "ineligible"
    assert refuse(engine, e, Approver("U0MALLORY"), click) == "ineligible"
    assert refuse(engine, e, Approver("U0BOB", SPONSOR), click) == "sponsor"
    assert refuse(engine, e, Approver("U0CAROL", OWNER), click) == "owner"
    expired = svc.expire_due(now=T0 + timedelta(hours=5, minutes=31))
    assert {r.request_id for r in expired} == {d1, e}
    # Denied by a rule, and by default.
    submit("rule_deny", deploy, T0 + timedelta(hours=6), **drop)
    submit(
        "default_deny",
        deploy,
        T0 + timedelta(hours=7),
        action_class=ActionClass.DATA_EXPORT,
        environment="dev",
        target="warehouse",
    )
    # Break-glass granted twice (one reviewed since), once asked for where not permitted.
    submit("bg1", ops, T0 + timedelta(hours=8), target="orders-db", break_glass=True)
    bg2 = submit("bg2", ops, T0 + timedelta(hours=9), target="orders-db", break_glass=True)
    svc.review_break_glass(bg2, Approver("U0CAROL", "sec@example.com"), now=T0 + 10 * HOUR)
    submit(
        "bg_refused",
        ops,
        T0 + timedelta(hours=13),
        target="billing-api",
        break_glass=True,
        **write_staging,
    )
    # Allowed reads: one claimed whose credential ran out (no sweep yet), one never claimed.
    stale = submit("stale", deploy, T0 + timedelta(hours=11), target="a-cache", **read)
    svc.claim(stale, deploy, now=T0 + timedelta(hours=11))
    submit("unclaimed", ops, T0 + timedelta(hours=12), target="z-cache", **read)
    submit("pending", ops, NOW - timedelta(hours=1), target="billing-api", **write_staging)
    # Approved after 120 s and holding its credential at NOW.
    d3 = submit("d3", deploy, NOW - 20 * MIN)
    svc.vote(d3, ALICE, Vote.APPROVE, now=NOW - 19 * MIN)
    svc.vote(d3, BOB, Vote.APPROVE, now=NOW - 18 * MIN)
    svc.claim(d3, deploy, now=NOW - 17 * MIN)
    live = submit("live_read", ops, NOW - 3 * MIN, **read)
    svc.claim(live, ops, now=NOW - 2 * MIN)
    # At NOW exactly: the next digest's.
    submit("edge", deploy, NOW, **read)
    with db.write() as session:
        for jti, status, attempts in [
            ("jti-failing", "pending", 3),
            ("jti-done", "done", 2),
            ("jti-new", "pending", 0),
        ]:
            session.add(
                RevocationRow(
                    jti=jti,
                    request_id=ids["bg1"],
                    status=status,
                    attempts=attempts,
                    next_attempt_at=NOW + MIN,
                    last_error="vault: permission denied" if attempts else None,
                    alerted_at=T0 + timedelta(hours=10) if jti == "jti-failing" else None,
                    created_at=T0 + timedelta(hours=9),
                )
            )
    return Traffic(engine, ids)


@pytest.fixture
def traffic(db: Database, tmp_path: Path) -> Traffic:
    return drive(db, tmp_path)


def digest_at(traffic: Traffic, now: datetime = NOW) -> Digest:
    with chain_snapshot(traffic.engine.db) as session:
        return build_digest(session, traffic.engine.keyring, now=now)


def audit_count(db: Database) -> int:
    with db.read() as session:
        return int(session.execute(select(func.count()).select_from(AuditRow)).scalar_one())


def test_every_figure_of_the_day(traffic: Traffic) -> None:
    t = traffic
    digest = digest_at(t)
    assert (digest.window_start, digest.window_end) == (T0, NOW)
    assert digest.requests == (
        TierOutcome("low", "allowed", 3),
        TierOutcome("medium", "denied", 1),
        TierOutcome("medium", "pending", 2),
        TierOutcome("high", "break-glass", 2),
        TierOutcome("high", "approved", 2),
        TierOutcome("high", "denied", 1),
        TierOutcome("high", "expired", 1),
        TierOutcome("critical", "denied", 1),
    )
    assert digest.total_requests == 13
    # 60 s, 120 s, 180 s: median 120, p95 by linear interpolation 120 + 0.9 * 60.
    assert digest.decision_times == DecisionTimes(3, 120.0, 174.0)
    expiry = T0 + timedelta(hours=5, minutes=31)
    prod = ("deploy-bot", "k8s.rollout_restart", "payments-api", "production", "high")
    assert digest.expired == (
        Expired(t.ref("expired", *prod), expiry, "pending"),
        Expired(t.ref("d1", *prod), expiry, "approved"),
    )
    assert digest.denials == (
        Denial(
            t.ref("d2", "deploy-bot", "k8s.rollout_restart", "billing-api", "staging", "medium"),
            T0 + timedelta(hours=3, seconds=60),
            "carol@example.com",
            "staging-writes",
            "not during the freeze",
        ),
        Denial(
            t.ref(
                "rule_deny", "deploy-bot", "db.drop_database", "orders-db", "production", "critical"
            ),
            T0 + timedelta(hours=6),
            "policy",
            "never-drop-prod-db",
            "Dropping a production database is never automated",
        ),
        Denial(
            t.ref("default_deny", "deploy-bot", "k8s.rollout_restart", "warehouse", "dev", "high"),
            T0 + timedelta(hours=7),
            "policy",
            None,
            NO_MATCH_REASON,
        ),
    )
    click = T0 + timedelta(hours=5) + MIN
    assert digest.refused_clicks == (
        RefusedClick(click, t.ids["expired"], "eve@example.com", "ineligible"),
        RefusedClick(click, t.ids["expired"], "U0MALLORY", "ineligible"),
        RefusedClick(click, t.ids["expired"], SPONSOR, "sponsor"),
        RefusedClick(click, t.ids["expired"], OWNER, "owner"),
    )
    assert digest.refused_by_kind == {"ineligible": 2, "sponsor": 1, "owner": 1}
    orders = ("ops-bot", "k8s.rollout_restart", "orders-db", "production", "high")
    assert digest.break_glass == (
        BreakGlassUse(
            t.ref("bg1", *orders),
            T0 + timedelta(hours=8),
            "prod-destructive",
            "approved",
            None,
            None,
        ),
        BreakGlassUse(
            t.ref("bg2", *orders),
            T0 + timedelta(hours=9),
            "prod-destructive",
            "approved",
            "sec@example.com",
            T0 + timedelta(hours=10),
        ),
    )
    assert digest.revocation_failures == (
        RevocationFailure(
            "jti-failing",
            t.ids["bg1"],
            "ops-bot",
            "orders-db",
            3,
            "vault: permission denied",
            T0 + timedelta(hours=9),
            T0 + timedelta(hours=10),
        ),
    )
    assert digest.active_credentials == (
        ActiveCredential(
            t.ref("live_read", "ops-bot", "db.query", "payments-api", "production", "low"),
            NOW + 3 * MIN,
            "reads",
            (),
        ),
        ActiveCredential(
            t.ref("d3", *prod),
            NOW + 43 * MIN,
            "prod-destructive",
            ("alice@example.com", "bob@example.com"),
        ),
    )
    assert digest.top_agents == (("deploy-bot", 7), ("ops-bot", 6))
    assert digest.top_targets == (
        ("payments-api", 4),
        ("billing-api", 3),
        ("orders-db", 3),
        ("a-cache", 1),
        ("warehouse", 1),
    )
    with t.engine.db.read() as session:
        head = read_head(session)
    assert digest.audit == AuditStatus(True, audit_count(t.engine.db), *head)
    assert head[0] == audit_count(t.engine.db)


def test_the_text_shows_the_figures(traffic: Traffic) -> None:
    body = render_text(digest_at(traffic))
    lines = body.splitlines()
    head_seq, head_hash = digest_at(traffic).audit.head_seq, digest_at(traffic).audit.head_hash
    assert lines[0] == "stepup digest 2026-11-02 09:30 UTC to 2026-11-03 09:30 UTC"
    assert lines[1] == f"Audit chain: intact — {head_seq} entries, head {head_seq} {head_hash}"
    assert "  high: break-glass 2, approved 2, denied 1, expired 1" in lines
    assert "Time to decision: 3 decided by approvers: median 2m 0s, p95 2m 54s" in lines
    assert "Refused clicks [ineligible 2, sponsor 1, owner 1] (4):" in lines
    assert sum("UNREVIEWED" in line for line in lines) == 1
    assert any("reviewed by sec@example.com at 2026-11-02 19:30 UTC" in line for line in lines)
    assert any("by policy (no rule matched)" in line for line in lines)
    assert any("approved by alice@example.com, bob@example.com" in line for line in lines)
    assert (
        "Top targets: payments-api 4, billing-api 3, orders-db 3, a-cache 1, warehouse 1" in lines
    )
    capped = render_text(digest_at(traffic), limit=1)
    assert "  … and 3 more" in capped.splitlines()  # four refused clicks, one shown


def test_an_empty_day(db: Database, tmp_path: Path) -> None:
    engine = build_engine(db, tmp_path, DIGEST_POLICY)
    with chain_snapshot(db) as session:
        digest = build_digest(session, engine.keyring, now=NOW)
    assert digest.requests == () and digest.total_requests == 0
    assert digest.decision_times == DecisionTimes(0, None, None)
    assert digest.audit == AuditStatus(True, 0, 0, "0" * 64)
    assert "no request was decided by approvers" in render_text(digest)


def test_a_tampered_chain_is_reported_with_its_first_bad_entry(traffic: Traffic) -> None:
    db = traffic.engine.db
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 7"))
    audit = digest_at(traffic).audit
    assert (audit.ok, audit.broken_seq) == (False, 7)
    assert audit.problem is not None and "content was modified" in audit.problem
    assert "Audit chain: BROKEN at entry 7: content was modified" in render_text(digest_at(traffic))


def test_a_forged_decision_signature_is_reported(traffic: Traffic) -> None:
    """The digest checks signatures too, not only hashes (re-hashed so only the JWS is wrong)."""
    from tests.integration.test_audit_store import corrupt_signature, rewrite_from

    db = traffic.engine.db
    with db.read() as session:
        seq, data = session.execute(
            select(AuditRow.seq, AuditRow.data)
            .where(AuditRow.kind == "decision.recorded")
            .order_by(AuditRow.seq)
        ).first()  # type: ignore[misc]
    record = json.loads(data)
    record["signed_decision"] = corrupt_signature(record["signed_decision"], traffic.engine.keyring)
    rewrite_from(db, seq, json.dumps(record, sort_keys=True, separators=(",", ":")))
    audit = digest_at(traffic).audit
    assert (audit.ok, audit.broken_seq) == (False, seq)
    assert audit.problem is not None and "signature" in audit.problem


# -- posting ----------------------------------------------------------------------------------


def digest_rows(db: Database) -> list[DigestRow]:
    with db.read() as session:
        return list(session.execute(select(DigestRow).order_by(DigestRow.day)).scalars())


def channel_messages(db: Database) -> list[OutboxRow]:
    """Digests queued for Slack (break-glass and revocation alerts also go to channels)."""
    with db.read() as session:
        rows = session.execute(
            select(OutboxRow).where(OutboxRow.kind == "channel").order_by(OutboxRow.id)
        ).scalars()
        return [r for r in rows if json.loads(r.payload)["text"].startswith("stepup digest ")]


def test_posting_is_once_per_day(traffic: Traffic) -> None:
    db, keyring = traffic.engine.db, traffic.engine.keyring
    post = {"timezone": "Europe/Paris", "channel": SECURITY, "render": digest_message}
    assert post_digest(db, keyring, now=NOW, **post) is True  # type: ignore[arg-type]
    assert post_digest(db, keyring, now=NOW + timedelta(hours=5), **post) is False  # type: ignore[arg-type]
    with db.read() as session:
        head = read_head(session)
    [row] = digest_rows(db)
    assert (row.day, row.created_at, row.head_seq, row.head_hash) == ("2026-11-03", NOW, *head)
    [message] = channel_messages(db)
    payload = json.loads(message.payload)
    assert payload["channel"] == SECURITY and message.request_id is None
    assert payload["text"] == digest_message(digest_at(traffic))[0]
    assert payload["text"].endswith(
        f"```\n{render_text(digest_at(traffic), limit=20).split(chr(10), 1)[1].rstrip()}\n```"
    )
    assert json.loads(payload["blocks"]) == digest_blocks(digest_at(traffic))
    # 23:30 UTC on 3 November is already 4 November in Paris: a new day, a second digest.
    assert post_digest(db, keyring, now=datetime(2026, 11, 3, 23, 30, tzinfo=UTC), **post) is True  # type: ignore[arg-type]
    assert [r.day for r in digest_rows(db)] == ["2026-11-03", "2026-11-04"]
    assert len(channel_messages(db)) == 2
    # Each digest starts where the previous one ended; after a long gap, a week at most.
    assert post_digest(db, keyring, now=datetime(2026, 11, 20, 8, 0, tzinfo=UTC), **post) is True  # type: ignore[arg-type]
    firsts = [json.loads(m.payload)["text"].splitlines()[0] for m in channel_messages(db)]
    assert firsts == [
        "stepup digest 2026-11-02 09:30 UTC to 2026-11-03 09:30 UTC",
        "stepup digest 2026-11-03 09:30 UTC to 2026-11-03 23:30 UTC",
        "stepup digest 2026-11-13 08:00 UTC to 2026-11-20 08:00 UTC",
    ]


def test_without_a_block_renderer_the_text_alone_is_queued(traffic: Traffic) -> None:
    db = traffic.engine.db
    assert post_digest(db, traffic.engine.keyring, now=NOW, timezone="UTC", channel=SECURITY)
    [message] = channel_messages(db)
    assert json.loads(message.payload)["blocks"] == ""


def test_replicas_racing_post_one_digest(traffic: Traffic) -> None:
    db, keyring = traffic.engine.db, traffic.engine.keyring
    start = threading.Barrier(4)
    results: list[bool] = []
    errors: list[BaseException] = []

    def replica() -> None:
        try:
            start.wait()
            results.append(post_digest(db, keyring, now=NOW, timezone="UTC", channel=SECURITY))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(results) == [False, False, False, True]
    assert len(digest_rows(db)) == 1 and len(channel_messages(db)) == 1


# -- the command ------------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def stepup(env: dict[str, str], cwd: Path, *args: str) -> Run:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("STEPUP_", "SLACK_"))}
    done = subprocess.run(
        [str(STEPUP), *args],
        env=inherited | env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def live_traffic(
    db: Database, tmp_path: Path, database_url: str
) -> tuple[Engine, dict[str, str], Path]:
    """A little traffic in the last hour of the real clock (the command reads the real time)."""
    engine = build_engine(db, tmp_path, DIGEST_POLICY)
    now = datetime.now(UTC) - timedelta(hours=1)
    deploy, _ = agents(engine, now)
    engine.service.submit(
        deploy, intent(deploy, action="db.query", action_class=ActionClass.READ), now=now
    )
    engine.service.submit(
        deploy, intent(deploy, action="db.drop_database", target="orders-db"), now=now
    )
    pending, _ = engine.service.submit(deploy, intent(deploy, on_behalf_of=SPONSOR), now=now)
    refuse(engine, pending.id, Approver("U0BOB", SPONSOR), now + MIN)
    env = {
        "STEPUP_DATABASE_URL": database_url,
        "STEPUP_KEYS_DIR": str(tmp_path / "keys"),
        "STEPUP_POLICY_FILE": str(engine.policy_path),
    }
    work = tmp_path / "work"
    work.mkdir()
    return engine, env, work


def test_print_shows_the_figures_and_records_nothing(
    live_traffic: tuple[Engine, dict[str, str], Path],
) -> None:
    engine, env, work = live_traffic
    out = stepup(env, work, "digest", "--print")
    assert out.code == 0, out.stderr
    with engine.db.read() as session:
        head_seq, head_hash = read_head(session)
    lines = out.stdout.splitlines()
    assert f"Audit chain: intact — {head_seq} entries, head {head_seq} {head_hash}" in lines
    assert "Requests: 3" in lines
    assert "  low: allowed 1" in lines
    assert "  high: pending 1" in lines
    assert "  critical: denied 1" in lines
    assert "Refused clicks [ineligible 0, sponsor 1, owner 0] (1):" in lines
    assert "Top agents: deploy-bot 3" in lines
    assert digest_rows(engine.db) == [] and channel_messages(engine.db) == []


def test_the_command_needs_an_option_and_a_channel(
    live_traffic: tuple[Engine, dict[str, str], Path],
) -> None:
    engine, env, work = live_traffic
    neither = stepup(env, work, "digest")
    assert neither.code == 1 and "--print" in neither.stderr and "--now" in neither.stderr
    no_channel = stepup(env, work, "digest", "--now")
    assert no_channel.code == 1
    assert "STEPUP_SECURITY_CHANNEL" in no_channel.stderr
    assert digest_rows(engine.db) == [] and channel_messages(engine.db) == []


def test_now_in_sandbox_mode_queues_for_the_service(
    live_traffic: tuple[Engine, dict[str, str], Path],
) -> None:
    engine, env, work = live_traffic
    out = stepup(env | {"STEPUP_SECURITY_CHANNEL": SECURITY}, work, "digest", "--now")
    assert out.code == 0, out.stderr
    assert "queued for C0SECURITY in the Slack sandbox" in out.stdout
    [message] = channel_messages(engine.db)
    assert message.status == "pending"
    assert json.loads(message.payload)["blocks"]  # Block Kit queued with the text
    assert len(digest_rows(engine.db)) == 1


def test_now_without_any_slack_prints_the_digest_and_says_it_was_not_posted(
    live_traffic: tuple[Engine, dict[str, str], Path],
) -> None:
    engine, env, work = live_traffic
    out = stepup(env | {"STEPUP_SANDBOX": "0"}, work, "digest", "--now")
    assert out.code == 0, out.stderr
    assert "Requests: 3" in out.stdout  # the digest itself, here
    assert "printed above, not posted: Slack is not configured" in out.stdout
    assert "queued" not in out.stdout
    assert digest_rows(engine.db) == [] and channel_messages(engine.db) == []


def test_now_posts_to_slack_once(live_traffic: tuple[Engine, dict[str, str], Path]) -> None:
    engine, env, work = live_traffic
    with SlackEmulator() as slack:
        slack_env = env | {
            "STEPUP_SECURITY_CHANNEL": SECURITY,
            "SLACK_BOT_TOKEN": "xoxb-1-stepup-test",
            "SLACK_SIGNING_SECRET": "8f14e45fceea167a5a36dedd4bea2543",
            "STEPUP_SLACK_API_URL": slack.api_url,
        }
        out = stepup(slack_env, work, "digest", "--now", "--print")
        assert out.code == 0, out.stderr
        assert "posted to C0SECURITY" in out.stdout
        assert "Requests: 3" in out.stdout  # --print as well
        [message] = slack.messages(SECURITY)
        assert message.text.startswith("stepup digest ")
        assert message.blocks[0] == {
            "type": "header",
            "text": {"type": "plain_text", "text": "stepup daily digest", "emoji": False},
        }
        with engine.db.read() as session:
            head_hash = read_head(session)[1]
        assert head_hash in json.dumps(message.blocks)  # the head, published outside the database
        again = stepup(slack_env, work, "digest", "--now")
        assert again.code == 0, again.stderr
        assert "already posted" in again.stdout
        assert len(slack.messages(SECURITY)) == 1
    [sent] = channel_messages(engine.db)
    assert sent.status == "sent"


def test_now_reports_a_failed_delivery(live_traffic: tuple[Engine, dict[str, str], Path]) -> None:
    engine, env, work = live_traffic
    with SlackEmulator() as slack:
        out = stepup(
            env
            | {
                "STEPUP_SECURITY_CHANNEL": "C0NOWHERE",
                "SLACK_BOT_TOKEN": "xoxb-1-stepup-test",
                "SLACK_SIGNING_SECRET": "8f14e45fceea167a5a36dedd4bea2543",
                "STEPUP_SLACK_API_URL": slack.api_url,
            },
            work,
            "digest",
            "--now",
        )
    assert out.code == 0, out.stderr
    assert (
        "queued for C0NOWHERE; not delivered "
        "(Slack said channel_not_found; Slack refused it: not retried)"
    ) in out.stdout
    [queued] = channel_messages(engine.db)
    assert queued.status == "dead" and queued.last_error == "Slack said channel_not_found"
