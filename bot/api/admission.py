"""Admission control: beyond a bound of API requests in flight, refuse at once with 503.

Queueing past what the machine serves only makes every request slow (seconds, under a load of
a few hundred a second) and still fails the ones that time out. So a request to the agent API
(``/v1/…``) that finds ``max_in_flight`` others of its kind still running is answered at once
with 503 and ``Retry-After``, as an RFC 9457 problem (type ``…/problems/overloaded``), before
anything reads its body, authenticates it or touches the database: the refusal means nothing
was done, so the client may send the same call again, whatever it is (``stepup_client`` does).

Never shed: ``/slack/events`` (an approver's click must be acknowledged within Slack's 3 s,
and a shed click is a lost decision), ``/healthz``, ``/metrics`` (a scrape during overload is
when it matters), the JWKS (targets verify credentials with it; it is a memory read) and the
loopback-only ``/sandbox`` (a human clicking; its clicks go through ``/slack/events`` anyway).

A long-poll (``GET /v1/requests/{id}?wait=N``, N > 0) spends almost all its time parked on
an event, holding no thread and no CPU, so it is not counted against ``max_in_flight``; it has
a bound of its own, ``max_long_polls`` (each parked poll holds a connection and a little
memory), past which it gets the same 503.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

SHED_PREFIX = "/v1/"
OVERLOADED_TYPE = "https://stepup.dev/problems/overloaded"
RETRY_AFTER_SECONDS = 1
# The agent API's cheapest calls cost a few milliseconds of CPU and the machine runs a couple
# of hundred a second: 16 in flight already means up to ~0.1 s of queue behind the last one.
DEFAULT_MAX_IN_FLIGHT = 16
DEFAULT_MAX_LONG_POLLS = 500


def is_long_poll(scope: Scope) -> bool:
    """``GET /v1/requests/{id}`` with ``wait`` > 0 (an invalid ``wait`` is not one: 422)."""
    if scope.get("method") != "GET" or not scope.get("path", "").startswith("/v1/requests/"):
        return False
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query):
        if name == "wait":
            return value.isascii() and value.isdigit() and int(value) > 0
    return False


@dataclass
class Admission:
    """The bounds and the counts of one process (one event loop: no lock needed). The counts
    are read by tests and may be shown by metrics."""

    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_long_polls: int = DEFAULT_MAX_LONG_POLLS
    retry_after: int = RETRY_AFTER_SECONDS
    in_flight: int = 0
    long_polls: int = 0
    shed: int = 0
    _shed_counter: Counter | None = field(default=None, init=False, repr=False)

    def expose(self, registry: CollectorRegistry) -> None:
        """Show the counts in ``registry`` (``/metrics``)."""
        self._shed_counter = Counter(
            "stepup_requests_shed",
            "Agent API requests this process refused with 503 at once, by the bound they met "
            "(in_flight: STEPUP_MAX_IN_FLIGHT; long_poll: STEPUP_MAX_LONG_POLLS).",
            ["bound"],
            registry=registry,
        )
        for bound in ("in_flight", "long_poll"):
            self._shed_counter.labels(bound)  # both shown from the start, at 0
        in_flight = Gauge(
            "stepup_requests_in_flight",
            "Agent API requests in progress in this process (parked long-polls apart).",
            registry=registry,
        )
        in_flight.set_function(lambda: self.in_flight)
        long_polls = Gauge(
            "stepup_long_polls_waiting",
            "Long-polls parked in this process.",
            registry=registry,
        )
        long_polls.set_function(lambda: self.long_polls)

    def count_shed(self, bound: str) -> None:
        self.shed += 1
        if self._shed_counter is not None:
            self._shed_counter.labels(bound).inc()


class AdmissionMiddleware:
    """Pure ASGI: counts the agent API's requests in flight and refuses the ones past a bound."""

    def __init__(self, app: ASGIApp, *, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(SHED_PREFIX):
            await self.app(scope, receive, send)
            return
        state = self.admission
        if is_long_poll(scope):
            if state.long_polls >= state.max_long_polls:
                why = f"{state.max_long_polls} long-polls are already waiting"
                await self._refuse(send, "long_poll", why)
                return
            state.long_polls += 1
            try:
                await self.app(scope, receive, send)
            finally:
                state.long_polls -= 1
            return
        if state.in_flight >= state.max_in_flight:
            why = f"{state.max_in_flight} requests are already in progress"
            await self._refuse(send, "in_flight", why)
            return
        state.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            state.in_flight -= 1

    async def _refuse(self, send: Send, bound: str, why: str) -> None:
        state = self.admission
        state.count_shed(bound)
        retry_after = state.retry_after
        body = json.dumps(
            {
                "type": OVERLOADED_TYPE,
                "title": "Overloaded",
                "status": 503,
                "detail": (
                    f"the server is at capacity ({why}); nothing was done: "
                    f"send the same request again after {retry_after} s"
                ),
                "retry_after": retry_after,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(retry_after).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
