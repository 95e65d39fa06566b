"""Claiming through a credential issuer, on SQLite and PostgreSQL: the secret in the claim
answer and nowhere else, a failed issue that leaves the request approved, a lost race that
revokes what was minted, revocation at the issuer on complete with retries and alerts, the
grant filled from the request (and refused, naming the field, when a value is unsafe), the
card's account of the credential (an AWS session's real lifetime), and the daily digest's count
of live credentials per issuer.

The issuer here is the ``http`` broker, its far end played by ``responses`` (it speaks
``requests``); the PostgreSQL issuer's own end-to-end test is test_postgres_credentials.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import responses
from sqlalchemy import func, select

from bot.api.app import create_app
from bot.api.context import ApiContext
from bot.slack.cards import card_blocks
from bot.slack.digest_blocks import digest_blocks
from core.audit.events import AuditKind
from core.digest import render_text
from core.errors import Conflict, IllegalTransition, IssuerFailed, ValidationFailed
from core.model import AgentIdentity, SessionOutcome, Status
from core.storage.audit_store import chain_snapshot
from core.storage.audit_verify import verify_database
from core.storage.database import Database
from core.storage.digest_repo import build_digest
from core.storage.tables import AuditRow, CredentialRow, RequestRow, RevocationRow
from tests.integration.live import running
from tests.support import OWNER, Engine, build_engine, intent

BROKER = "https://broker.test/stepup"
SECRET_TOKEN = "s3cr3t-broker-token-" + "x" * 20

POLICY = f"""\
version: 1
defaults: {{max_ttl: 15m, claim_window: 5m}}
approver_groups:
  leads: {{slack_users: [U0ALICE]}}
channels: {{approvals: C0APPROVALS}}
issuers:
  broker:
    type: http
    url: {BROKER}
    retries: 0
rules:
  - name: reads-through-broker
    match: {{action: db.query}}
    decision: allow
    max_ttl: 10m
    issuer: broker
    grant: {{role: "reader-{{parameters.schema}}", database: "{{target}}"}}
  - name: prod-writes
    match: {{action: db.write}}
    decision: approve
    approvers: leads
    channel: approvals
    issuer: broker
    grant: {{role: writer}}
  - name: jwt-only
    match: {{action: k8s.get}}
    decision: allow
"""


@dataclass
class Broker:
    """The broker's end: what it was asked, and what it answers next."""

    calls: list[dict[str, Any]]
    issue_status: int = 200
    revoke_status: int = 204

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["op"] == op]


@pytest.fixture
def broker(keys_of: Any) -> Iterator[Broker]:
    state = Broker(calls=[])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:

        def answer(request: Any) -> tuple[int, dict[str, str], str]:
            claims = jwt.decode(
                request.body,
                key=keys_of(),
                algorithms=["EdDSA"],
                audience=BROKER,
            )
            state.calls.append(claims)
            if claims["op"] == "issue":
                if state.issue_status != 200:
                    return state.issue_status, {}, json.dumps({"error": "down"})
                body = {
                    "handle": f"lease-{claims['request_id']}-{len(state.calls)}",
                    "secret": {"token": SECRET_TOKEN, "role": claims["grant"]["role"]},
                    "expires_at": claims["expires_at"],
                }
                return 200, {"Content-Type": "application/json"}, json.dumps(body)
            if claims["op"] == "revoke":
                return state.revoke_status, {}, ""
            return 200, {}, "{}"

        mock.add_callback(responses.POST, BROKER, callback=answer)
        mock.add_passthru("http://127.0.0.1")
        yield state


@pytest.fixture
def engine(db: Database, tmp_path: Path) -> Engine:
    return build_engine(db, tmp_path, POLICY)


@pytest.fixture
def keys_of(engine: Engine) -> Any:
    """The public key the broker verifies with (stepup's active signing key)."""

    def current() -> Any:
        (key,) = engine.keyring.jwks()["keys"]
        return jwt.PyJWK(key)

    return current


def now() -> datetime:
    return datetime.now(UTC)


def agent_of(engine: Engine) -> AgentIdentity:
    key = engine.registry.add("deploy-bot", OWNER, by="test", now=now())
    return engine.registry.authenticate(key, now=now())


def audit_kinds(engine: Engine, request_id: str) -> list[str]:
    with engine.db.read() as session:
        return list(
            session.execute(
                select(AuditRow.kind)
                .where(AuditRow.request_id == request_id)
                .order_by(AuditRow.seq)
            ).scalars()
        )


def assert_audit_verifies(engine: Engine) -> None:
    """The log stays exact: chain intact and every request as its entries tell it."""
    report = verify_database(engine.db, engine.keyring)
    assert report.requests.ok, report.requests.mismatches


def read_query(**parameters: Any) -> Any:
    return intent(
        action="db.query",
        action_class="read",
        target="orders-db",
        parameters=parameters or {"schema": "sales"},
    )


def test_the_claim_carries_the_brokers_secret_and_nothing_stores_it(
    engine: Engine, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    agent = agent_of(engine)
    request, _ = engine.service.submit(agent, read_query(), now=now())
    assert request.terms.issuer == "broker" and request.terms.issuer_type == "http"
    assert request.terms.grant == {"role": "reader-sales", "database": "orders-db"}

    claimed = engine.service.claim(request.id, agent, now=now())

    assert claimed.minted is not None and claimed.minted.secret["token"] == SECRET_TOKEN
    assert claimed.request.status is Status.ACTIVE
    (issue,) = broker.ops("issue")
    assert issue["request_id"] == request.id and issue["grant"]["role"] == "reader-sales"
    assert issue["args_digest"] == request.parameters_digest
    with engine.db.read() as session:
        row = session.execute(select(CredentialRow)).scalar_one()
        assert row.issuer == "broker" and row.handle == claimed.minted.handle
        everything = json.dumps(
            [str(r) for r in session.execute(select(AuditRow.data)).scalars()]
        ) + json.dumps([r.handle for r in session.execute(select(CredentialRow)).scalars()])
    assert SECRET_TOKEN not in everything
    assert SECRET_TOKEN not in caplog.text
    assert SECRET_TOKEN not in repr(claimed)


def test_complete_revokes_at_the_broker_before_it_answers(engine: Engine, broker: Broker) -> None:
    agent = agent_of(engine)
    request, _ = engine.service.submit(agent, read_query(), now=now())
    claimed = engine.service.claim(request.id, agent, now=now())
    assert claimed.minted is not None

    engine.service.complete(request.id, agent, SessionOutcome.SUCCEEDED, "", now=now())

    (revoke,) = broker.ops("revoke")
    assert revoke["handle"] == claimed.minted.handle
    assert AuditKind.ISSUER_REVOKED.value in audit_kinds(engine, request.id)
    with engine.db.read() as session:
        row = session.execute(select(RevocationRow)).scalar_one()
    assert (row.status, row.attempts, row.issuer) == ("done", 1, "broker")


def test_a_failing_revoke_is_retried_alerted_and_then_recovers(
    engine: Engine, broker: Broker
) -> None:
    engine.service.parts.security_channel = "C0SECURITY"
    agent = agent_of(engine)
    request, _ = engine.service.submit(agent, read_query(), now=now())
    engine.service.claim(request.id, agent, now=now())
    broker.revoke_status = 503

    engine.service.complete(request.id, agent, SessionOutcome.SUCCEEDED, "", now=now())
    later = now()
    for _ in range(3):  # the scheduler's retries, each once its backoff is due
        later += timedelta(minutes=10)
        engine.service.process_revocations(now=later)

    with engine.db.read() as session:
        row = session.execute(select(RevocationRow)).scalar_one()
    assert row.status == "pending" and row.attempts == 4 and row.alerted_at is not None
    assert "503" in (row.last_error or "")
    broker.revoke_status = 204
    assert engine.service.process_revocations(now=later + timedelta(hours=1)) == 1
    kinds = audit_kinds(engine, request.id)
    assert kinds.count(AuditKind.ISSUER_REVOKE_FAILED.value) == 4
    assert kinds[-1] == AuditKind.ISSUER_REVOKED.value
    assert_audit_verifies(engine)


def test_a_failed_issue_leaves_the_request_approved_and_claimable(
    engine: Engine, broker: Broker
) -> None:
    agent = agent_of(engine)
    request, _ = engine.service.submit(agent, read_query(), now=now())
    broker.issue_status = 503

    with pytest.raises(IssuerFailed, match="still approved"):
        engine.service.claim(request.id, agent, now=now())

    assert engine.service.get(request.id).status is Status.APPROVED
    assert audit_kinds(engine, request.id)[-1] == AuditKind.ISSUE_FAILED.value
    with engine.db.read() as session:
        assert session.execute(select(func.count()).select_from(CredentialRow)).scalar() == 0
    broker.issue_status = 200
    claimed = engine.service.claim(request.id, agent, now=now())
    assert claimed.request.status is Status.ACTIVE and claimed.minted is not None
    assert_audit_verifies(engine)


def test_a_claim_that_loses_the_race_revokes_what_its_issuer_minted(
    engine: Engine, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request is cancelled while the broker mints: the claim is refused and the minted
    credential is revoked at the broker, not left alive."""
    agent = agent_of(engine)
    request, _ = engine.service.submit(agent, read_query(), now=now())
    issuer = engine.service.parts.issuers.get("broker")
    real_issue = issuer.issue

    def issue_then_lose(*args: Any) -> Any:
        minted = real_issue(*args)
        engine.service.cancel(request.id, agent, now=now())  # meanwhile, elsewhere
        return minted

    monkeypatch.setattr(issuer, "issue", issue_then_lose)
    with pytest.raises(IllegalTransition):
        engine.service.claim(request.id, agent, now=now())

    assert len(broker.ops("issue")) == 1
    (revoked,) = broker.ops("revoke")
    assert revoked["handle"].startswith(f"lease-{request.id}")
    assert engine.service.get(request.id).status is Status.CANCELLED
    with engine.db.read() as session:
        row = session.execute(select(RevocationRow)).scalar_one()
        assert row.status == "done" and row.jti.startswith("unclaimed_")
        assert session.execute(select(func.count()).select_from(CredentialRow)).scalar() == 0
    assert_audit_verifies(engine)


def test_an_unsafe_parameter_is_refused_naming_it_and_nothing_is_written(
    engine: Engine, broker: Broker
) -> None:
    agent = agent_of(engine)
    for bad in ("sales; drop", "../etc", "a*", "x y", "a'b"):
        with pytest.raises(ValidationFailed, match=r"^parameters\.schema: "):
            engine.service.submit(agent, read_query(schema=bad), now=now())
    with pytest.raises(ValidationFailed, match=r"^parameters\.schema: missing"):
        engine.service.submit(agent, read_query(other="x"), now=now())
    with engine.db.read() as session:
        assert session.execute(select(func.count()).select_from(RequestRow)).scalar() == 0
    assert broker.calls == []


def test_a_rule_without_issuer_keeps_the_built_in_jwt(engine: Engine, broker: Broker) -> None:
    agent = agent_of(engine)
    request, _ = engine.service.submit(
        agent, intent(action="k8s.get", action_class="read"), now=now()
    )
    claimed = engine.service.claim(request.id, agent, now=now())
    assert claimed.minted is None and claimed.request.terms.credential_type == "jwt"
    engine.service.complete(request.id, agent, SessionOutcome.SUCCEEDED, "", now=now())
    assert broker.calls == []


def test_the_card_says_what_an_approval_will_issue(engine: Engine, broker: Broker) -> None:
    agent = agent_of(engine)
    request, _ = engine.service.submit(
        agent,
        intent(action="db.write", action_class="write", parameters={}),
        now=now(),
    )
    assert request.status is Status.PENDING
    fields = [f["text"] for b in card_blocks(request) for f in b.get("fields", [])]
    (credential,) = [f for f in fields if f.startswith("*Credential*")]
    assert "broker" in credential and "role" in credential and credential.endswith(", 15m")


AWS_POLICY = """\
version: 1
defaults: {max_ttl: 1h, claim_window: 5m}
approver_groups:
  leads: {slack_users: [U0ALICE]}
channels: {approvals: C0APPROVALS}
issuers:
  aws-prod:
    type: aws_sts
    role_arn: arn:aws:iam::123456789012:role/agent-ops
    region: eu-west-1
rules:
  - name: report-download
    match: {action: s3.get_report}
    decision: approve
    approvers: leads
    channel: approvals
    issuer: aws-prod
    grant: {actions: [s3:GetObject], resources: ["arn:aws:s3:::reports/*"]}
"""


def test_the_card_of_an_aws_session_shows_its_real_lifetime_and_that_it_cannot_be_cut_short(
    db: Database, tmp_path: Path
) -> None:
    """The agent asks for 5 minutes; AWS's shortest session is 15, so the card says 15m (not
    the 5m asked for) and that the session, once issued, lives until then."""
    engine = build_engine(db, tmp_path, AWS_POLICY)
    agent = agent_of(engine)
    asked = intent(
        action="s3.get_report", action_class="read", target="reports", requested_ttl_seconds=300
    )
    request, _ = engine.service.submit(agent, asked, now=now())
    assert request.status is Status.PENDING and request.requested_ttl_seconds == 300
    fields = [f["text"] for b in card_blocks(request) for f in b.get("fields", [])]
    (credential,) = [f for f in fields if f.startswith("*Credential*")]
    assert "s3:GetObject" in credential
    assert credential.endswith(", 15m (an AWS session cannot be cut short)")


def test_the_api_answers_the_secret_once_and_a_502_when_the_issuer_fails(
    engine: Engine, broker: Broker
) -> None:
    key = engine.registry.add("deploy-bot", OWNER, by="test", now=now())
    context = ApiContext(service=engine.service, registry=engine.registry)
    body = {
        "action": "db.query",
        "action_class": "read",
        "target": "orders-db",
        "environment": "production",
        "justification": "look up order 42",
        "parameters": {"schema": "sales"},
    }
    with (
        running(create_app(context)) as url,
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client,
    ):
        first = client.post("/v1/requests", json=body).json()
        broker.issue_status = 500
        failed = client.post(f"/v1/requests/{first['id']}/credential")
        assert failed.status_code == 502, failed.text
        assert failed.headers["content-type"].startswith("application/problem+json")
        assert "still approved" in failed.json()["detail"]
        broker.issue_status = 200
        answer = client.post(f"/v1/requests/{first['id']}/credential")
        assert answer.status_code == 200, answer.text
        claim = answer.json()
        assert claim["credential_type"] == "http"
        assert claim["secret"] == {"token": SECRET_TOKEN, "role": "reader-sales"}
        assert claim["token"].count(".") == 2  # the JWT stays the proof of approval
        again = client.post(f"/v1/requests/{first['id']}/credential")
        assert again.status_code == 409 and SECRET_TOKEN not in again.text
        shown = client.get(f"/v1/requests/{first['id']}").text
        assert SECRET_TOKEN not in shown
        unsafe = client.post("/v1/requests", json=body | {"parameters": {"schema": "a b"}})
        assert unsafe.status_code == 422
        assert unsafe.json()["detail"].startswith("parameters.schema: ")
        jwt_rule = client.post(
            "/v1/requests", json=body | {"action": "k8s.get", "parameters": {}}
        ).json()
        plain = client.post(f"/v1/requests/{jwt_rule['id']}/credential").json()
        assert plain["credential_type"] == "jwt" and "secret" not in plain


# -- the approval holds the issuer it named (review findings) --------------------------------

MOVED = "https://broker-moved.test/stepup"


def reload_policy(engine: Engine, text: str) -> None:
    engine.policy_path.write_text(text)
    engine.service.parts.policy.reload(engine.policy_path)


def test_a_claim_after_the_issuers_settings_changed_is_refused_and_nothing_is_issued(
    engine: Engine, broker: Broker
) -> None:
    """Approved for the broker at one address: the policy now points the name elsewhere. The
    approval was not for that, so the claim is refused (409), audited, and nothing minted."""
    agent = agent_of(engine)
    request, _ = engine.service.submit(agent, read_query(), now=now())
    reload_policy(engine, POLICY.replace(BROKER, MOVED))

    with pytest.raises(Conflict, match="changed its settings since this request was approved"):
        engine.service.claim(request.id, agent, now=now())

    assert broker.calls == []
    assert engine.service.get(request.id).status is Status.APPROVED
    assert audit_kinds(engine, request.id)[-1] == AuditKind.ISSUE_FAILED.value


def test_a_claim_after_the_issuer_left_the_policy_is_a_409_not_a_500(
    engine: Engine, broker: Broker
) -> None:
    agent = agent_of(engine)
    request, _ = engine.service.submit(agent, read_query(), now=now())
    reload_policy(
        engine,
        POLICY.replace("  broker:", "  other-broker:", 1).replace(
            "issuer: broker", "issuer: other-broker"
        ),
    )
    with pytest.raises(Conflict, match="no longer in the policy"):
        engine.service.claim(request.id, agent, now=now())
    assert broker.calls == []


def test_a_credential_is_revoked_with_the_settings_it_was_minted_under(
    engine: Engine, broker: Broker
) -> None:
    """The policy moves the issuer after the claim (or drops it, then the service restarts):
    the revoke still goes to where the credential lives, from the record on the credential."""
    agent = agent_of(engine)
    request, _ = engine.service.submit(agent, read_query(), now=now())
    claimed = engine.service.claim(request.id, agent, now=now())
    assert claimed.minted is not None
    reload_policy(engine, POLICY.replace(BROKER, MOVED))
    engine.service.parts.issuers = type(engine.service.parts.issuers)(  # a fresh process
        lambda: engine.service.parts.policy.current.issuers,
        engine.service.parts.issuers._context,
    )

    engine.service.complete(request.id, agent, SessionOutcome.SUCCEEDED, "", now=now())

    (revoke,) = broker.ops("revoke")  # at the original address (MOVED is not mocked)
    assert revoke["handle"] == claimed.minted.handle
    with engine.db.read() as session:
        assert session.execute(select(RevocationRow.status)).scalar_one() == "done"


def test_a_grant_edited_in_the_database_is_refused_at_claim(engine: Engine, broker: Broker) -> None:
    """An insider widens the frozen grant of an approved request: the stored terms no longer
    match the audit log's, so nothing is issued."""
    agent = agent_of(engine)
    request, _ = engine.service.submit(agent, read_query(), now=now())
    with engine.db.write() as session:
        row = session.get(RequestRow, request.id)
        assert row is not None
        row.terms = row.terms.replace("reader-sales", "admin")

    with pytest.raises(Conflict, match="differ from what the audit log recorded"):
        engine.service.claim(request.id, agent, now=now())
    assert broker.calls == []


def test_terms_logged_before_a_newer_terms_field_still_match(
    engine: Engine, broker: Broker
) -> None:
    """An upgrade adds a field to the terms: a request logged before it (its entry lacks the
    field) is still claimable; the field reads as its default on both sides."""
    agent = agent_of(engine)
    request, _ = engine.service.submit(agent, read_query(), now=now())
    with engine.db.write() as session:
        entry = session.execute(
            select(AuditRow).where(
                AuditRow.request_id == request.id,
                AuditRow.kind == AuditKind.POLICY_DECIDED.value,
            )
        ).scalar_one()
        data = json.loads(entry.data)
        del data["terms"]["require_dpop"]
        entry.data = json.dumps(data)

    claimed = engine.service.claim(request.id, agent, now=now())
    assert claimed.minted is not None


def test_submit_with_claim_mints_through_the_issuer_in_the_same_call(
    engine: Engine, broker: Broker
) -> None:
    """The issuer mints outside any transaction: the request is committed, then claimed in
    the same call; recorded as a claim would be, the secret in the answer only."""
    key = engine.registry.add("deploy-bot", OWNER, by="test", now=now())
    request, created, claimed = engine.service.submit_and_claim(
        key, lambda agent: read_query(), now=now()
    )
    assert created and claimed is not None and claimed.minted is not None
    assert claimed.minted.secret["token"] == SECRET_TOKEN
    assert request.status is Status.ACTIVE and request.id == claimed.request.id
    (issue,) = broker.ops("issue")
    assert issue["request_id"] == request.id
    kinds = audit_kinds(engine, request.id)
    assert kinds[-1] == AuditKind.CREDENTIAL_ISSUED.value
    assert_audit_verifies(engine)


def test_submit_with_claim_whose_issuer_fails_leaves_the_request_approved(
    engine: Engine, broker: Broker
) -> None:
    broker.issue_status = 503
    key = engine.registry.add("deploy-bot", OWNER, by="test", now=now())
    request, created, claimed = engine.service.submit_and_claim(
        key, lambda agent: read_query(), now=now()
    )
    assert created and claimed is None and request.status is Status.APPROVED
    assert audit_kinds(engine, request.id)[-1] == AuditKind.ISSUE_FAILED.value
    broker.issue_status = 200  # the agent claims as usual once the issuer is back
    agent = engine.registry.authenticate(key, now=now())
    assert engine.service.claim(request.id, agent, now=now()).minted is not None


def test_the_digest_counts_live_credentials_per_issuer(engine: Engine, broker: Broker) -> None:
    """One live credential from the broker, two of stepup's own JWTs, and a broker credential
    already completed (not live): the digest counts 2 jwt then 1 broker, busiest first."""
    agent = agent_of(engine)

    def claimed(fields: Any) -> str:
        request, _ = engine.service.submit(agent, fields, now=now())
        engine.service.claim(request.id, agent, now=now())
        return request.id

    done = claimed(read_query(schema="archive"))
    engine.service.complete(done, agent, SessionOutcome.SUCCEEDED, "", now=now())
    through_broker = claimed(read_query())
    jwts = {claimed(intent(action="k8s.get", action_class="read", target=t)) for t in "ab"}

    with chain_snapshot(engine.db) as session:
        digest = build_digest(session, engine.keyring, now=now())

    issuers = {item.request.request_id: item.issuer for item in digest.active_credentials}
    assert issuers == {through_broker: "broker"} | dict.fromkeys(jwts, "jwt")
    assert list(digest.live_by_issuer.items()) == [("jwt", 2), ("broker", 1)]
    assert "Live credentials by issuer: jwt 2, broker 1" in render_text(digest).splitlines()
    sections = [b["text"]["text"] for b in digest_blocks(digest) if "text" in b]
    assert "*Live credentials by issuer*: jwt 2, broker 1" in sections
