"""`GET /metrics` over real HTTP: counters of this process, gauges read from the database."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from core.storage.tables import AuditRow, OutboxRow, RevocationRow
from tests.integration.conftest import LiveApi
from tests.integration.test_api import DROP, PROD_RESTART, READ


def scrape(api: LiveApi, accept: str = "") -> tuple[dict[tuple[str, str], float], str]:
    """{(sample name, status label or ""): value}, and the raw text."""
    answer = httpx.get(f"{api.url}/metrics", headers={"Accept": accept}, timeout=10)
    assert answer.status_code == 200
    if accept.startswith("application/openmetrics-text"):
        assert answer.headers["content-type"].startswith("application/openmetrics-text")
        assert answer.text.endswith("# EOF\n")
        return {}, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (sample.name, sample.labels.get("status", "")): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
    return samples, answer.text


def db_count(api: LiveApi, table: type, *where: Any) -> int:
    with api.engine.db.read() as session:
        return int(
            session.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
        )


def test_metrics_count_submissions_and_changes_and_read_the_database(live_api: LiveApi) -> None:
    before, _ = scrape(live_api)
    assert before[("stepup_requests_submitted_total", "approved")] == 0
    assert before[("stepup_requests", "pending")] == 0
    assert before[("stepup_audit_entries", "")] == db_count(live_api, AuditRow)
    assert ("process_resident_memory_bytes", "") in before

    with live_api.client() as c:
        allowed = c.post("/v1/requests", json=READ).json()
        pending = c.post("/v1/requests", json=PROD_RESTART).json()
        denied = c.post("/v1/requests", json=DROP).json()
        assert (allowed["status"], pending["status"], denied["status"]) == (
            "approved",
            "pending",
            "denied",
        )
        assert c.post(f"/v1/requests/{allowed['id']}/credential").status_code == 200
        done = c.post(f"/v1/requests/{allowed['id']}/complete", json={"outcome": "succeeded"})
        assert done.status_code == 200
        assert c.post(f"/v1/requests/{pending['id']}/cancel").status_code == 200

    after, text = scrape(live_api)
    for status in ("approved", "pending", "denied"):
        assert after[("stepup_requests_submitted_total", status)] == 1
    assert after[("stepup_request_changes_total", "active")] == 1
    assert after[("stepup_request_changes_total", "completed")] == 1
    assert after[("stepup_request_changes_total", "cancelled")] == 1
    assert after[("stepup_request_changes_total", "expired")] == 0
    assert after[("stepup_requests", "completed")] == 1
    assert after[("stepup_requests", "cancelled")] == 1
    assert after[("stepup_requests", "denied")] == 1
    assert after[("stepup_requests", "pending")] == 0
    owed = db_count(live_api, OutboxRow, OutboxRow.status == "pending")
    assert owed > 0  # the pending request's card and its update, with no Slack to take them
    assert after[("stepup_outbox_pending", "")] == owed
    assert after[("stepup_outbox_oldest_pending_seconds", "")] >= 0
    assert after[("stepup_revocations_pending", "")] == db_count(
        live_api, RevocationRow, RevocationRow.status == "pending"
    )
    assert after[("stepup_audit_entries", "")] == db_count(live_api, AuditRow)
    # Volumes only: no agent, target, person or request id in the figures.
    for secretish in ("deploy-bot", "payments-api", allowed["id"], "example.com"):
        assert secretish not in text
    # Prometheus asking for OpenMetrics gets it (content negotiation of prometheus_client).
    _, openmetrics = scrape(live_api, accept="application/openmetrics-text; version=1.0.0")
    assert 'stepup_requests_submitted_total{status="approved"} 1.0' in openmetrics
