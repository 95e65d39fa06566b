"""`GET /metrics` in Prometheus' text format.

Two kinds of figures. Counters of what *this process* committed since it started (sum them
across replicas): requests submitted by the status the policy gave them, and later changes by
the status they left the request in. Gauges of what *the database* holds at scrape time (the
same on every replica, so aggregate them with max): requests by status, Slack messages owed
and the age of the oldest, Slack messages given up on (dead letters), issuer revocations
pending and failing, audit entries; and apart from Slack's, signed callbacks owed, the age of
the oldest, and callbacks given up on (docs/callbacks.md). Labels are statuses only: no agent,
target or person, so the figures reveal volumes and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from core.model import Status
from core.snapshots import RequestSnapshot
from core.storage.database import Database
from core.storage.stats import current_figures


class StepupMetrics:
    """The registry behind ``/metrics`` (one per app, so test apps do not share counters)."""

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self.registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
        self.submitted = Counter(
            "stepup_requests_submitted",
            "Requests submitted to this process, by the status the policy gave them "
            "(approved: pre-authorised; pending: approval required; denied).",
            ["status"],
            registry=self.registry,
        )
        self.changed = Counter(
            "stepup_request_changes",
            "Later changes committed by this process, by the status they left the request in.",
            ["status"],
            registry=self.registry,
        )
        self.refused = Counter(
            "stepup_submissions_refused",
            "Submissions this process refused with 429, by the limit per agent they hit "
            "(pending: too many requests pending; rate: too many a minute).",
            ["reason"],
            registry=self.registry,
        )
        # Every series exists from the start, at zero; the children are kept, so counting a
        # change is one dictionary lookup and an increment (``labels()`` is far dearer).
        self._children = {
            (created, status): (self.submitted if created else self.changed).labels(status.value)
            for created in (True, False)
            for status in Status
        }
        for reason in ("pending", "rate"):
            self.refused.labels(reason)
        self.registry.register(_DatabaseCollector(db, clock))

    def on_change(self, snapshot: RequestSnapshot) -> None:
        """Service listener (any thread)."""
        self._children[snapshot.just_created, snapshot.status].inc()


class _DatabaseCollector(Collector):
    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        with self._db.read() as session:
            figures = current_figures(session, self._clock())
        by_status = GaugeMetricFamily(
            "stepup_requests", "Requests in the database, by status.", labels=["status"]
        )
        for status, count in figures.requests_by_status.items():
            by_status.add_metric([status.value], count)
        yield by_status
        for name, doc, value in (
            ("stepup_outbox_pending", "Slack messages owed.", figures.outbox_pending),
            (
                "stepup_outbox_oldest_pending_seconds",
                "Age of the oldest Slack message owed (0 when none).",
                figures.outbox_oldest_age_seconds,
            ),
            (
                "stepup_slack_dead_letters",
                "Slack messages given up on: refused by Slack, or failing past the attempt cap "
                "(stepup requests show ID lists them with their error).",
                figures.outbox_dead,
            ),
            ("stepup_callbacks_pending", "Signed callbacks owed.", figures.callbacks_pending),
            (
                "stepup_callbacks_oldest_pending_seconds",
                "Age of the oldest signed callback owed (0 when none).",
                figures.callbacks_oldest_age_seconds,
            ),
            (
                "stepup_callback_dead_letters",
                "Signed callbacks given up on after the attempt cap "
                "(stepup requests show ID lists them with their error).",
                figures.callbacks_dead,
            ),
            (
                "stepup_revocations_pending",
                "Issuer-side revocations not yet done.",
                figures.revocations_pending,
            ),
            (
                "stepup_revocations_failing",
                "Issuer-side revocations pending after at least one failed attempt.",
                figures.revocations_failing,
            ),
            ("stepup_audit_entries", "Entries in the audit chain.", figures.audit_entries),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


def metrics_router(metrics: StepupMetrics) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", tags=["health"], response_class=Response)
    def scrape(request: Request) -> Response:
        """Prometheus text format: counters of this process, gauges of the database."""
        # A sync route, so the database read runs in the threadpool (prometheus_client's own
        # ASGI app would collect on the event loop); its encoder negotiation is reused.
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(metrics.registry), headers={"Content-Type": content_type})

    return router
