"""Admission control over real HTTP: with the bound of agent API requests in flight taken by
requests parked in the threadpool, the next API request is refused at once with 503 problem
details and Retry-After, while Slack's events, the health check and parked long-polls still get
through; the Python client waits as told and its retry succeeds, a claim included."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from slack_bolt import App

from bot.api.admission import OVERLOADED_TYPE, Admission, is_long_poll
from bot.api.app import create_app
from bot.api.context import ApiContext
from bot.slack.events_route import slack_router
from core.agents import AgentRegistry
from core.storage.database import Database
from stepup_client import StepupClient
from tests.integration.live import running
from tests.support import OWNER, Engine, build_engine, eventually, submit_body

SIGNING_SECRET = "admission-test-signing-secret"
READ = submit_body(
    action="db.query",
    action_class="read",
    target="orders-db",
    environment="staging",
    justification="check",
)


@dataclass
class Overloadable:
    url: str
    engine: Engine
    admission: Admission
    agent_key: str
    release: threading.Event

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.agent_key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def fill(self, pool: ThreadPoolExecutor) -> list[Future[httpx.Response]]:
        """Take every slot of the bound with requests that hold a thread until released."""
        held = [
            pool.submit(httpx.get, f"{self.url}/v1/test-hold", timeout=30)
            for _ in range(self.admission.max_in_flight)
        ]
        eventually(
            lambda: self.admission.in_flight,
            until=lambda n: n == self.admission.max_in_flight,
            timeout=10,
            message="the held requests did not all arrive",
        )
        return held


@pytest.fixture
def overloadable(db: Database, tmp_path: Path) -> Iterator[Overloadable]:
    engine = build_engine(db, tmp_path)
    registry = AgentRegistry(engine.service)
    from tests.conftest import T0

    agent_key = registry.add("deploy-bot", OWNER, by="test", now=T0)
    context = ApiContext(service=engine.service, registry=registry)
    release = threading.Event()
    hold = APIRouter()

    @hold.get("/v1/test-hold")
    def held() -> dict[str, str]:  # a sync route: it holds a threadpool thread, like real work
        release.wait(30)
        return {"held": "done"}

    bolt = App(
        token="xoxb-admission-test",
        signing_secret=SIGNING_SECRET,
        token_verification_enabled=False,
    )
    admission = Admission(max_in_flight=2, max_long_polls=1)
    app = create_app(
        context,
        extra_routers=[hold, slack_router(bolt, signing_secret=SIGNING_SECRET)],
        admission=admission,
    )
    with running(app) as url:
        try:
            yield Overloadable(url, engine, admission, agent_key, release)
        finally:
            release.set()


def slack_challenge(url: str, challenge: str) -> httpx.Response:
    body = json.dumps({"type": "url_verification", "challenge": challenge}).encode()
    stamp = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest.hexdigest()}",
    }
    return httpx.post(f"{url}/slack/events", content=body, headers=headers, timeout=30)


def test_past_the_bound_the_api_answers_503_and_slack_still_gets_through(
    overloadable: Overloadable,
) -> None:
    live = overloadable
    with live.client() as client:
        created = client.post("/v1/requests", json=READ)
        assert created.status_code == 201
        request_id = created.json()["id"]
    with ThreadPoolExecutor(4) as pool:
        held = live.fill(pool)
        with live.client() as client:
            refused = client.get(f"/v1/requests/{request_id}")
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "1"
            assert refused.headers["content-type"] == "application/problem+json"
            problem = refused.json()
            assert problem["type"] == OVERLOADED_TYPE and problem["status"] == 503
            assert "nothing was done" in problem["detail"]
            posted = client.post("/v1/requests", json=READ)
            assert posted.status_code == 503
            # Slack's clicks, the health check and the JWKS are never shed.
            answered = slack_challenge(live.url, "still-here")
            assert answered.status_code == 200 and "still-here" in answered.text
            assert client.get("/healthz").status_code == 200
            assert client.get("/.well-known/jwks.json").status_code == 200
            # A long-poll holds no thread: it has its own bound, not the busy one.
            waited = client.get(f"/v1/requests/{request_id}", params={"wait": 1})
            assert waited.status_code == 200 and waited.json()["id"] == request_id
            shown = client.get("/metrics").text
            assert 'stepup_requests_shed_total{bound="in_flight"} 2.0' in shown
            assert "stepup_requests_in_flight 2.0" in shown
        assert live.admission.shed == 2
        # Nothing refused was done: only the request created before the bound was full.
        stored = live.engine.service.list_requests(agent_id="deploy-bot")
        assert [r.id for r in stored] == [request_id]
        live.release.set()
        assert [f.result().status_code for f in held] == [200, 200]
    with live.client() as client:
        assert client.get(f"/v1/requests/{request_id}").status_code == 200
    # The count drops once the middleware has sent the answer, a moment after the client has it.
    eventually(lambda: live.admission.in_flight, until=lambda n: n == 0, timeout=10)


def test_long_polls_past_their_own_bound_are_refused(overloadable: Overloadable) -> None:
    live = overloadable
    with live.client() as client:
        pending = client.post(
            "/v1/requests",
            json=submit_body(
                action="deploy",
                action_class="write",
                target="payments-api",
                environment="staging",
                justification="ship it",
            ),
        )
    assert pending.status_code == 201 and pending.json()["status"] == "pending"
    request_id = pending.json()["id"]
    with ThreadPoolExecutor(1) as pool, live.client() as client:
        parked = pool.submit(client.get, f"/v1/requests/{request_id}", params={"wait": 2})
        eventually(lambda: live.admission.long_polls, until=lambda n: n == 1, timeout=10)
        refused = client.get(f"/v1/requests/{request_id}", params={"wait": 2})
        assert refused.status_code == 503 and refused.json()["type"] == OVERLOADED_TYPE
        assert client.get(f"/v1/requests/{request_id}").status_code == 200  # not a long-poll
        assert parked.result().status_code == 200
        shown = client.get("/metrics").text
        assert 'stepup_requests_shed_total{bound="long_poll"} 1.0' in shown


def _release_after_first_refusal(live: Overloadable) -> threading.Thread:
    def release() -> None:
        eventually(lambda: live.admission.shed, until=lambda n: n >= 1, timeout=20)
        live.release.set()

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def test_the_client_backs_off_on_503_and_its_retry_succeeds(overloadable: Overloadable) -> None:
    live = overloadable
    with StepupClient(live.url, live.agent_key, backoff=0.05) as agent:
        allowed = agent.submit(**READ)
        with ThreadPoolExecutor(4) as pool:
            held = live.fill(pool)
            releaser = _release_after_first_refusal(live)
            # A claim is never sent again once it may have run, but a 503 from admission
            # control says it never ran: the client waits Retry-After and claims.
            credential = agent.claim(allowed.id)
            releaser.join()
            assert [f.result().status_code for f in held] == [200, 200]
    assert credential.token
    assert live.admission.shed >= 1
    assert live.engine.service.get(allowed.id).status.value == "active"


def test_a_503_that_is_not_admission_control_is_not_retried_for_a_claim(
    overloadable: Overloadable,
) -> None:
    """Any other 503 (a proxy in front, say) may come after the claim ran: not sent again."""
    live = overloadable
    sent: list[str] = []

    class Proxy503(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(request.url.path)
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"status": 503})

    with StepupClient(live.url, live.agent_key, transport=Proxy503(), backoff=0.01) as agent:
        from stepup_client import ApiError

        with pytest.raises(ApiError) as refused:
            agent.claim("req_0123456789abcdef")
    assert refused.value.status == 503 and len(sent) == 1


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/v1/requests/req_1", b"wait=5", True),
        ("GET", "/v1/requests/req_1", b"since=pending&wait=30", True),
        ("GET", "/v1/requests/req_1", b"wait=0", False),
        ("GET", "/v1/requests/req_1", b"wait=x", False),
        ("GET", "/v1/requests/req_1", b"", False),
        ("POST", "/v1/requests/req_1/credential", b"wait=5", False),
    ],
)
def test_what_counts_as_a_long_poll(method: str, path: str, query: bytes, expected: bool) -> None:
    scope = {"type": "http", "method": method, "path": path, "query_string": query}
    assert is_long_poll(scope) is expected
