"""Limits per agent over HTTP, on SQLite and PostgreSQL: the pending cap (held in the
database, across replicas) and the submission rate; and the RFC 8785 digest end to end."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select

from core.storage.tables import AuditRow, OutboxRow, RequestRow
from stepup_client import StepupClient
from stepup_client import parameters_digest as client_digest
from tests.integration.conftest import LiveApi
from tests.support import submit_body

PROD_RESTART = submit_body()  # pending: two approvals from sre-leads
READ = submit_body(
    action="db.query", action_class="read", justification="look up order 42", parameters={}
)


def written(api: LiveApi) -> tuple[int, int, int]:
    with api.engine.db.read() as session:
        return tuple(  # type: ignore[return-value]
            int(session.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (RequestRow, AuditRow, OutboxRow)
        )


def assert_429(response: httpx.Response, reason: str) -> dict[str, object]:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["Retry-After"]) >= 1
    body: dict[str, object] = response.json()
    assert body["status"] == 429 and body["reason"] == reason and body["title"]
    assert body["retry_after"] == int(response.headers["Retry-After"])
    return body


def refused(c: httpx.Client, reason: str) -> float:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(f'stepup_submissions_refused_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    raise AssertionError("no refusal counter")


def test_the_eleventh_pending_request_is_refused_and_nothing_is_written(
    live_api: LiveApi,
) -> None:
    with live_api.client() as c:
        assert refused(c, "pending") == 0
        for n in range(10):
            created = c.post("/v1/requests", json=PROD_RESTART, headers={"Idempotency-Key": f"{n}"})
            assert created.status_code == 201 and created.json()["status"] == "pending"
        before = written(live_api)
        assert_429(c.post("/v1/requests", json=PROD_RESTART), "pending")
        body = assert_429(
            c.post("/v1/requests", json=PROD_RESTART, headers={"Idempotency-Key": "eleven"}),
            "pending",
        )
        assert "10" in str(body["detail"])
        assert written(live_api) == before
        # A replay of one of the ten is no new submission: answered as before.
        replay = c.post("/v1/requests", json=PROD_RESTART, headers={"Idempotency-Key": "3"})
        assert replay.status_code in (200, 201)
        # Pre-authorised reads are not blocked at the cap.
        read = c.post("/v1/requests", json=READ)
        assert read.status_code == 201 and read.json()["status"] == "approved"
        assert refused(c, "pending") == 2 and refused(c, "rate") == 0
        # A place freed (the agent cancels one) is a place for the next.
        some = replay.json()["id"]
        assert c.post(f"/v1/requests/{some}/cancel").status_code == 200
        again = c.post("/v1/requests", json=PROD_RESTART, headers={"Idempotency-Key": "eleven"})
        assert again.status_code == 201 and again.json()["status"] == "pending"


def test_concurrent_submissions_at_the_last_place_let_one_through(live_api: LiveApi) -> None:
    with live_api.client() as c:
        for n in range(9):
            c.post("/v1/requests", json=PROD_RESTART, headers={"Idempotency-Key": f"{n}"})

        def submit(n: int) -> int:
            with live_api.client() as one:
                return one.post(
                    "/v1/requests", json=PROD_RESTART, headers={"Idempotency-Key": f"race-{n}"}
                ).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = sorted(pool.map(submit, range(8)))
        assert codes == [201] + [429] * 7
        with live_api.engine.db.read() as session:
            pending = session.execute(
                select(func.count()).select_from(RequestRow).where(RequestRow.status == "pending")
            ).scalar_one()
        assert pending == 10


def test_the_submission_rate_is_refused_with_retry_after(live_api: LiveApi) -> None:
    live_api.engine.service.parts.limits.submit_rate_per_agent = 3
    with live_api.client() as c:
        for _ in range(3):
            assert c.post("/v1/requests", json=READ).status_code == 201
        before = written(live_api)
        body = assert_429(c.post("/v1/requests", json=READ), "rate")
        assert 1 <= int(str(body["retry_after"])) <= 20
        assert_429(c.post("/v1/requests", json=READ, headers={"Idempotency-Key": "x"}), "rate")
        assert written(live_api) == before
        assert refused(c, "rate") == 2 and refused(c, "pending") == 0


def test_the_client_and_server_agree_on_floats_and_non_bmp_keys(live_api: LiveApi) -> None:
    parameters = {"\U0001f600": 1.0, "\ufb33": [1e21, 0.000001], "limit": 3, "ratio": 0.1}
    fields = {k: v for k, v in READ.items() if k != "parameters"}
    with StepupClient(live_api.url, live_api.agent_key, timeout=10) as client:
        request = client.submit(**fields, parameters=parameters)  # raises on a mismatch
    assert request.parameters_digest == client_digest(parameters)
