"""The agent API over real HTTP (uvicorn on loopback), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import pytest
from fastapi import APIRouter
from sqlalchemy import func, select

from bot.api.app import create_app
from bot.api.context import ApiContext
from core.agents import AgentRegistry
from core.model import Approver, Status, Vote
from core.storage.database import Database
from core.storage.tables import AuditRow, CredentialRow, RequestRow
from tests.integration.conftest import LiveApi
from tests.integration.live import LongPollWatch, running
from tests.support import build_engine, submit_body

PROD_RESTART = submit_body()
READ = submit_body(
    action="db.query",
    action_class="read",
    justification="look up order 42",
    parameters={"order": 42},
)
DROP = READ | {"action": "db.drop_database", "action_class": "destructive"}


def now() -> datetime:
    return datetime.now(UTC)


def count(api: LiveApi, table: type) -> int:
    with api.engine.db.read() as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"] and "detail" in body
    return body  # type: ignore[no-any-return]


def test_allowed_journey_and_introspection(live_api: LiveApi) -> None:
    with live_api.client() as c:
        created = c.post("/v1/requests", json=READ)
        assert created.status_code == 201
        req = created.json()
        assert req["status"] == "approved" and req["rule"] == "reads" and req["tier"] == "low"
        assert req["parameters_digest"].startswith("sha256:") and req["agent"] == "deploy-bot"
        claim = c.post(f"/v1/requests/{req['id']}/credential")
        assert claim.status_code == 200, claim.text
        token = claim.json()["token"]
        assert claim.json()["token_type"] == "Bearer" and claim.json()["scope"] == "db.query"
        # A second claim gets nothing.
        assert_problem(c.post(f"/v1/requests/{req['id']}/credential"), 409)
        shown = c.get(f"/v1/requests/{req['id']}").json()
        assert shown["status"] == "active" and shown["credential"]["jti"] == claim.json()["jti"]
        assert token not in str(shown)

    # Verify against the JWKS fetched over HTTP, with PyJWT's own client (urllib).
    signing_key = jwt.PyJWKClient(f"{live_api.url}/.well-known/jwks.json").get_signing_key_from_jwt(
        token
    )
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=["EdDSA"],
        audience="payments-api",
        issuer="https://stepup.test",
    )
    assert claims["request_id"] == req["id"] and claims["sub"] == "deploy-bot"

    rs = httpx.Client(
        base_url=live_api.url, headers={"Authorization": f"Bearer {live_api.server_key}"}
    )
    assert rs.post("/v1/introspect", data={"token": token}).json()["active"] is True
    assert rs.post("/v1/introspect", json={"token": token}).json()["scope"] == "db.query"
    with live_api.client() as c:
        done = c.post(
            f"/v1/requests/{req['id']}/complete", json={"outcome": "succeeded", "detail": "1 row"}
        )
        assert done.status_code == 200 and done.json()["status"] == "completed"
    assert rs.post("/v1/introspect", data={"token": token}).json() == {"active": False}
    # Introspection is only for registered target systems.
    assert_problem(httpx.post(f"{live_api.url}/v1/introspect", data={"token": token}), 401)
    with live_api.client() as agent:  # an agent key is not a resource-server key
        assert_problem(agent.post("/v1/introspect", data={"token": token}), 401)


def test_denied_request(live_api: LiveApi) -> None:
    with live_api.client() as c:
        req = c.post("/v1/requests", json=DROP).json()
        assert req["status"] == "denied" and req["rule"] == "never-drop-prod-db"
        assert any("never automated" in r for r in req["reasons"])
        assert_problem(c.post(f"/v1/requests/{req['id']}/credential"), 409)


def test_approval_journey_with_long_poll(
    live_api: LiveApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = LongPollWatch(live_api.context, monkeypatch)
    # Held for 10 s with no periodic re-read: only the change itself can answer it early.
    live_api.context.cross_replica_recheck_seconds = 30
    with live_api.client() as c:
        req = c.post("/v1/requests", json=PROD_RESTART | {"on_behalf_of": "sam@example.com"}).json()
        assert req["status"] == "pending" and req["approvals"] == {
            "required": 2,
            "received": 0,
            "approvers": [],
        }
        service = live_api.engine.service
        service.vote(
            req["id"], Approver("U0ALICE", "alice@example.com", "Alice"), Vote.APPROVE, now=now()
        )
        assert c.get(f"/v1/requests/{req['id']}").json()["approvals"]["received"] == 1

        changed_at: list[float] = []

        def approve_once_polled() -> None:
            watch.wait_parked(req["id"])
            service.vote(
                req["id"], Approver("U0BOB", "bob@example.com", "Bob"), Vote.APPROVE, now=now()
            )
            changed_at.append(time.monotonic())

        approver = threading.Thread(target=approve_once_polled)
        approver.start()
        polled = c.get(f"/v1/requests/{req['id']}", params={"wait": 10})
        answered_at = time.monotonic()
        approver.join(timeout=10)
        assert polled.json()["status"] == "approved"
        assert answered_at - changed_at[0] < 5  # on the change, well before the 10 s hold
        token = c.post(f"/v1/requests/{req['id']}/credential").json()["token"]
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["approvers"] == ["alice@example.com", "bob@example.com"]
        assert claims["on_behalf_of"] == "sam@example.com"


def test_long_poll_times_out_with_current_state(live_api: LiveApi) -> None:
    with live_api.client() as c:
        req = c.post("/v1/requests", json=PROD_RESTART).json()
        start = time.monotonic()
        polled = c.get(f"/v1/requests/{req['id']}", params={"wait": 1})
        assert 0.9 < time.monotonic() - start < 5  # held for the second asked, then answered
        assert polled.json()["status"] == "pending"
        assert_problem(c.get(f"/v1/requests/{req['id']}", params={"wait": 61}), 422)


def test_cancel(live_api: LiveApi) -> None:
    with live_api.client() as c:
        req = c.post("/v1/requests", json=PROD_RESTART).json()
        assert c.post(f"/v1/requests/{req['id']}/cancel").json()["status"] == "cancelled"
        body = assert_problem(c.post(f"/v1/requests/{req['id']}/cancel"), 409)
        assert body["current_status"] == "cancelled"


def test_concurrent_submissions_with_one_idempotency_key(live_api: LiveApi) -> None:
    def submit(_: int) -> httpx.Response:
        with live_api.client() as c:
            return c.post("/v1/requests", json=READ, headers={"Idempotency-Key": "same-key"})

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(submit, range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert count(live_api, RequestRow) == 1
    with live_api.client() as c:
        other = c.post(
            "/v1/requests",
            json=READ | {"parameters": {"order": 43}},
            headers={"Idempotency-Key": "same-key"},
        )
    assert_problem(other, 409)
    assert count(live_api, RequestRow) == 1


def test_concurrent_claims_yield_one_token(live_api: LiveApi) -> None:
    with live_api.client() as c:
        req = c.post("/v1/requests", json=READ).json()

    def claim(_: int) -> httpx.Response:
        with live_api.client() as c:
            return c.post(f"/v1/requests/{req['id']}/credential")

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(claim, range(10)))
    assert sorted(r.status_code for r in responses) == [200] + [409] * 9
    assert count(live_api, CredentialRow) == 1
    with live_api.engine.db.read() as session:
        issued = session.execute(
            select(func.count()).select_from(AuditRow).where(AuditRow.kind == "credential.issued")
        ).scalar_one()
    assert issued == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (READ | {"colour": "red"}, "colour"),
        (READ | {"action_class": "telepathy"}, "action_class"),
        (READ | {"requested_ttl_seconds": "soon"}, "requested_ttl_seconds"),
        (READ | {"data_volume_bytes": 2**63}, "data_volume_bytes"),  # over BIGINT: was a 500
        ({k: v for k, v in READ.items() if k != "target"}, "target"),
        (READ | {"agent": "someone-else"}, "agent"),
    ],
)
def test_bad_bodies_name_the_field(live_api: LiveApi, body: dict[str, object], field: str) -> None:
    with live_api.client() as c:
        problem = assert_problem(c.post("/v1/requests", json=body), 422)
    assert field in str(problem["detail"])
    assert (
        count(live_api, RequestRow) == 0 and count(live_api, AuditRow) == 2
    )  # agent + server added


def test_deep_and_large_bodies(live_api: LiveApi) -> None:
    deep: dict[str, object] = {}
    cursor = deep
    for _ in range(40):
        cursor["x"] = {}
        cursor = cursor["x"]  # type: ignore[assignment]
    with live_api.client() as c:
        assert "parameters" in str(
            assert_problem(c.post("/v1/requests", json=READ | {"parameters": deep}), 422)["detail"]
        )
        big = READ | {"parameters": {"blob": "x" * (65 * 1024)}}
        assert_problem(c.post("/v1/requests", json=big), 413)

        # Chunked upload with no Content-Length is counted as it streams.
        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(80):
                yield b"x" * 1024

        assert_problem(
            c.post("/v1/requests", content=chunks(), headers={"content-type": "application/json"}),
            413,
        )
        assert (
            c.post(
                "/v1/requests", content=b"{not json", headers={"content-type": "application/json"}
            ).status_code
            == 422
        )
    assert count(live_api, RequestRow) == 0


@pytest.mark.parametrize("chunked", [False, True])
def test_a_client_still_sending_an_oversized_body_reads_the_413(
    live_api: LiveApi, chunked: bool
) -> None:
    """The server answers 413 once the body is over the limit; closing at once while the
    client is still sending made the client's kernel see a reset instead of the answer. The
    client here pauses mid-body, so the server has refused before the rest arrives."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(live_api.url)
    body = b"x" * (200 * 1024)
    head = [
        b"POST /v1/requests HTTP/1.1",
        f"Host: {parts.hostname}".encode(),
        f"Authorization: Bearer {live_api.agent_key}".encode(),
        b"Content-Type: application/json",
    ]
    head.append(
        b"Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}".encode()
    )
    frames = (
        [b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:100_000], body[100_000:])] + [b"0\r\n\r\n"]
        if chunked
        else [body[:100_000], body[100_000:]]
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + frames[0])
        time.sleep(0.3)  # the server has seen enough to refuse
        for frame in frames[1:]:
            sock.sendall(frame)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            assert data, "the server closed without answering"
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert count(live_api, RequestRow) == 0


def test_authentication_and_visibility(live_api: LiveApi) -> None:
    with live_api.client() as c:
        req = c.post("/v1/requests", json=READ).json()
    for key in ("", "stpa_unknown", live_api.server_key):
        with live_api.client(key) as c:
            body = assert_problem(c.get(f"/v1/requests/{req['id']}"), 401)
            assert body["detail"] == "invalid or missing credentials"
    other_key = live_api.engine.registry.add("other-bot", "x@example.com", by="test", now=now())
    with live_api.client(other_key) as c:
        assert_problem(c.get(f"/v1/requests/{req['id']}"), 404)
        assert_problem(c.post(f"/v1/requests/{req['id']}/credential"), 404)
        assert_problem(c.get("/v1/requests/req_doesnotexist"), 404)
    live_api.engine.registry.disable("other-bot", by="test", now=now())
    with live_api.client(other_key) as c:
        assert (
            assert_problem(c.get("/v1/requests/req_x"), 401)["detail"]
            == "invalid or missing credentials"
        )
    # Submitting: the key is checked in the transaction that would record the request (or
    # on its own first, with an Idempotency-Key); a bad one writes nothing, audit included.
    requests_before, entries_before = count(live_api, RequestRow), count(live_api, AuditRow)
    for key in ("stpa_unknown", live_api.server_key, other_key):
        for headers in ({}, {"Idempotency-Key": "k-1"}):
            with live_api.client(key) as c:
                body = assert_problem(c.post("/v1/requests", json=READ, headers=headers), 401)
                assert body["detail"] == "invalid or missing credentials"
    assert count(live_api, RequestRow) == requests_before
    assert count(live_api, AuditRow) == entries_before


def test_disable_agent_revokes_over_http(live_api: LiveApi) -> None:
    with live_api.client() as c:
        req = c.post("/v1/requests", json=READ).json()
        token = c.post(f"/v1/requests/{req['id']}/credential").json()["token"]
    live_api.engine.registry.disable("deploy-bot", by="test", now=now())
    rs = httpx.Client(
        base_url=live_api.url, headers={"Authorization": f"Bearer {live_api.server_key}"}
    )
    assert rs.post("/v1/introspect", data={"token": token}).json() == {"active": False}
    assert live_api.engine.service.get(req["id"]).status is Status.REVOKED


def test_health_openapi_jwks(live_api: LiveApi) -> None:
    assert httpx.get(f"{live_api.url}/healthz").json() == {"status": "ok"}
    spec = httpx.get(f"{live_api.url}/openapi.json").json()
    assert "/v1/requests" in spec["paths"] and "/v1/introspect" in spec["paths"]
    keys = httpx.get(f"{live_api.url}/.well-known/jwks.json").json()["keys"]
    assert keys[0]["alg"] == "EdDSA" and keys[0]["kid"] == live_api.engine.keyring.active_kid


def test_long_poll_answers_at_once_when_nothing_can_change_or_already_changed(
    live_api: LiveApi,
) -> None:
    with live_api.client() as c:
        denied = c.post("/v1/requests", json=DROP).json()
        start = time.monotonic()
        assert (
            c.get(f"/v1/requests/{denied['id']}", params={"wait": 5}).json()["status"] == "denied"
        )
        assert time.monotonic() - start < 2.5  # final, so it cannot change: not held for 5 s
        allowed = c.post("/v1/requests", json=READ).json()
        start = time.monotonic()
        seen = c.get(f"/v1/requests/{allowed['id']}", params={"wait": 5, "since": "pending"}).json()
        assert seen["status"] == "approved" and time.monotonic() - start < 2.5
        assert_problem(
            c.get(f"/v1/requests/{allowed['id']}", params={"wait": 1, "since": "bogus"}), 422
        )


@pytest.mark.parametrize(("threads", "expected"), [(2, 2), (None, 6)])
def test_blocking_handlers_run_on_the_configured_number_of_threads(
    db: Database, tmp_path: Path, threads: int | None, expected: int
) -> None:
    """STEPUP_API_THREADS bounds how many blocking handlers run at once (None: anyio's 40)."""
    lock, running_now, most = threading.Lock(), [0], [0]
    probe = APIRouter()

    @probe.get("/probe")
    def slow() -> dict[str, int]:
        with lock:
            running_now[0] += 1
            most[0] = max(most[0], running_now[0])
        time.sleep(0.3)
        with lock:
            running_now[0] -= 1
        return {"ok": 1}

    engine = build_engine(db, tmp_path)
    context = ApiContext(
        service=engine.service, registry=AgentRegistry(engine.service), threads=threads
    )
    with running(create_app(context, extra_routers=[probe])) as url, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: httpx.get(f"{url}/probe", timeout=10), range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert most[0] == expected
