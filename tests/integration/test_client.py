"""The Python client (stepup_client) against the real API, on SQLite and PostgreSQL.

Approvals are recorded through the core service, as the Slack layer would record them.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TypedDict

import httpx
import jwt
import pytest

from core.canonical import parameters_digest as server_digest
from core.model import Approver, Vote
from stepup_client import (
    ApiError,
    ConnectionFailed,
    Credential,
    ParametersMismatch,
    Request,
    RequestCancelled,
    RequestDenied,
    RequestExpired,
    RequestNotGranted,
    RequestRevoked,
    Status,
    StepupClient,
    StepupClientError,
    WaitTimeout,
    parameters_digest,
)
from tests.integration.conftest import LiveApi
from tests.integration.live import LongPollWatch
from tests.support import eventually

ALICE = Approver("U0ALICE", "alice@example.com", "Alice")


class Intent(TypedDict):
    action: str
    action_class: str
    target: str
    environment: str
    justification: str


READ: Intent = {
    "action": "db.query",
    "action_class": "read",
    "target": "orders-db",
    "environment": "production",
    "justification": "count yesterday's orders for the daily report",
}
# Needs one approval from the `solo` group (TEST_POLICY: staging-writes).
STAGING_WRITE: Intent = {
    "action": "db.migrate",
    "action_class": "write",
    "target": "orders-db",
    "environment": "staging",
    "justification": "apply migration 0042 before the release",
}


def now() -> datetime:
    return datetime.now(UTC)  # the live server runs on the real clock


@pytest.fixture
def client(live_api: LiveApi) -> Iterator[StepupClient]:
    with StepupClient(live_api.url, live_api.agent_key, timeout=10, backoff=0.01) as stepup:
        yield stepup


def introspect(live_api: LiveApi, token: str) -> dict[str, object]:
    return live_api.engine.service.introspect(token, now=now())


def assert_revoked(live_api: LiveApi, client: StepupClient, credential: Credential) -> Request:
    assert introspect(live_api, credential.token) == {"active": False}
    done = client.get(credential.request_id)
    assert done.status is Status.COMPLETED
    assert done.credential is not None and done.credential.revoked_at is not None
    return done


def test_allowed_journey_with_the_context_manager(live_api: LiveApi, client: StepupClient) -> None:
    with client.gated(**READ, parameters={"query": "select count(*) from orders"}) as credential:
        # bound to the client's own key (docs/dpop.md)
        assert credential.scope == "db.query" and credential.token_type == "DPoP"
        assert credential.expires_at > now()
        assert credential.token not in repr(credential) and credential.token not in str(credential)
        assert introspect(live_api, credential.token)["active"] is True
        during = client.get(credential.request_id)
        assert during.status is Status.ACTIVE and during.rule == "reads"
    done = assert_revoked(live_api, client, credential)
    assert done.outcome == "succeeded"
    assert done.parameters == {"query": "select count(*) from orders"}


def raise_in_block(client: StepupClient, error: BaseException, taken: list[Credential]) -> None:
    with client.gated(**READ) as credential:
        taken.append(credential)
        raise error


def test_a_block_that_raises_reports_failed_and_revokes(
    live_api: LiveApi, client: StepupClient
) -> None:
    taken: list[Credential] = []
    with pytest.raises(RuntimeError, match="disk full"):
        raise_in_block(client, RuntimeError("disk full"), taken)
    done = assert_revoked(live_api, client, taken[0])
    assert (done.outcome, done.outcome_detail) == ("failed", "RuntimeError: disk full")


def test_ctrl_c_in_the_block_reports_aborted(live_api: LiveApi, client: StepupClient) -> None:
    taken: list[Credential] = []
    with pytest.raises(KeyboardInterrupt):
        raise_in_block(client, KeyboardInterrupt(), taken)
    assert assert_revoked(live_api, client, taken[0]).outcome == "aborted"


def approve_when_waited_on(
    live_api: LiveApi, watch: LongPollWatch, errors: list[BaseException]
) -> None:
    """Find the pending request, wait until a client long-polls it, then approve it."""
    try:
        service = live_api.engine.service
        waited_on = eventually(
            lambda: [
                r.id
                for r in service.list_requests(status=["pending"], agent_id="deploy-bot")
                if watch.parked(r.id)
            ],
            interval=0.02,
            message="no client long-polled a pending request",
        )
        service.vote(waited_on[0], ALICE, Vote.APPROVE, now=now())
    except BaseException as exc:
        errors.append(exc)


def test_an_approval_between_the_read_and_the_long_poll_is_not_missed(live_api: LiveApi) -> None:
    """wait() reads, then long-polls. An approval landing in between must end the poll at
    once (the poll says which status it saw), not after the whole 20 s hold."""
    with StepupClient(live_api.url, live_api.agent_key, poll_seconds=20) as client:
        request = client.submit(**STAGING_WRITE)
        assert request.status is Status.PENDING
        plain_read = client.get

        def read_then_approve(request_id: str) -> Request:
            seen = plain_read(request_id)
            live_api.engine.service.vote(request_id, ALICE, Vote.APPROVE, now=now())
            return seen

        client.get = read_then_approve  # type: ignore[method-assign]
        started = time.monotonic()
        assert client.wait(request.id, timeout=15).status is Status.APPROVED
        assert time.monotonic() - started < 5


def test_waits_for_an_approval_given_meanwhile(
    live_api: LiveApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[BaseException] = []
    watch = LongPollWatch(live_api.context, monkeypatch)
    live_api.context.cross_replica_recheck_seconds = 30  # so only the change can end a poll
    approver = threading.Thread(target=approve_when_waited_on, args=(live_api, watch, errors))
    approver.start()
    # A long poll of 20 s: returning well before it shows the approval woke the client.
    with StepupClient(live_api.url, live_api.agent_key, poll_seconds=20) as client:
        started = time.monotonic()
        try:
            with client.gated(**STAGING_WRITE, timeout=15) as credential:
                waited = time.monotonic() - started
                assert credential.scope == "db.migrate"
        finally:
            approver.join(timeout=15)
        assert not approver.is_alive() and errors == []
        assert waited < 10
        done = assert_revoked(live_api, client, credential)
    assert done.approvals.received == 1
    assert [a.email for a in done.approvals.approvers] == ["alice@example.com"]
    assert done.outcome == "succeeded"


def test_denied_by_an_approver(live_api: LiveApi, client: StepupClient) -> None:
    request = client.submit(**STAGING_WRITE)
    assert request.status is Status.PENDING and request.approvals.required == 1
    reason = "not during the release freeze"
    live_api.engine.service.vote(request.id, ALICE, Vote.DENY, reason=reason, now=now())
    with pytest.raises(RequestDenied) as denied:
        client.wait(request.id, timeout=5)
    assert denied.value.request.status is Status.DENIED
    assert denied.value.request.status_reason == reason
    assert reason in str(denied.value)


def test_denied_by_policy_never_claims(live_api: LiveApi, client: StepupClient) -> None:
    drop: Intent = {**READ, "action": "db.drop_database", "action_class": "destructive"}
    with pytest.raises(RequestDenied) as denied, client.gated(**drop):
        pytest.fail("the block must not run")
    assert denied.value.request.rule == "never-drop-prod-db"
    assert client.get(denied.value.request.id).credential is None


def _expire(live_api: LiveApi, client: StepupClient, request: Request) -> None:
    live_api.engine.service.expire_one(request.id, now=now() + timedelta(hours=1))


def _revoke(live_api: LiveApi, client: StepupClient, request: Request) -> None:
    live_api.engine.service.vote(request.id, ALICE, Vote.APPROVE, now=now())
    live_api.engine.service.revoke(
        request.id, by="alice@example.com", reason="wrong ticket", now=now()
    )


def _cancel(live_api: LiveApi, client: StepupClient, request: Request) -> None:
    assert client.cancel(request.id).status is Status.CANCELLED


@pytest.mark.parametrize(
    ("end", "error", "status"),
    [
        (_expire, RequestExpired, Status.EXPIRED),
        (_revoke, RequestRevoked, Status.REVOKED),
        (_cancel, RequestCancelled, Status.CANCELLED),
    ],
)
def test_other_endings_raise_their_typed_error(
    live_api: LiveApi,
    client: StepupClient,
    end: Callable[[LiveApi, StepupClient, Request], None],
    error: type[RequestNotGranted],
    status: Status,
) -> None:
    request = client.submit(**STAGING_WRITE)
    end(live_api, client, request)
    with pytest.raises(error) as ended:
        client.wait(request.id, timeout=5)
    assert ended.value.request.status is status
    assert isinstance(ended.value, StepupClientError)


def test_a_gated_request_still_pending_at_the_timeout_is_cancelled(
    live_api: LiveApi, client: StepupClient
) -> None:
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as timed_out, client.gated(**STAGING_WRITE, timeout=1):
        pytest.fail("the block must not run")
    assert time.monotonic() - started < 5
    assert client.get(timed_out.value.request.id).status is Status.CANCELLED


def test_decorator_binds_the_approval_to_the_call_arguments(
    live_api: LiveApi, client: StepupClient
) -> None:
    @client.requires_approval(
        action="db.query",
        action_class="read",
        target=lambda args: str(args["database"]),
        environment="production",
        justification=lambda args: f"look up customer {args['customer']}",
    )
    def lookup(
        database: str,
        customer: str,
        *,
        limit: int = 10,
        columns: tuple[str, ...] = ("id", "name"),
        credential: Credential | None = None,
    ) -> tuple[str, Credential | None]:
        return f"{customer}@{database} limit {limit}", credential

    result, credential = lookup("orders-db", "Zoë ", limit=3)
    assert result == "Zoë @orders-db limit 3"
    assert credential is not None and credential.scope == "db.query"
    request = assert_revoked(live_api, client, credential)
    expected = {"database": "orders-db", "customer": "Zoë ", "limit": 3, "columns": ["id", "name"]}
    assert request.parameters == expected
    canonical = '{"columns":["id","name"],"customer":"Zoë ","database":"orders-db","limit":3}'
    digest = "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert request.parameters_digest == digest == parameters_digest(expected)
    assert (request.target, request.justification) == (
        "orders-db",
        "look up customer Zoë ",
    )  # kept exactly as sent
    claims = jwt.decode(credential.token, options={"verify_signature": False})
    assert claims["args_digest"] == digest and claims["request_id"] == request.id
    assert request.outcome == "succeeded"


def test_decorated_function_that_raises_reports_failed(
    live_api: LiveApi, client: StepupClient
) -> None:
    @client.requires_approval(
        action="db.query",
        action_class="read",
        target="orders-db",
        environment="production",
        justification="export a report",
    )
    def report(day: str) -> None:
        raise ValueError(f"no data for {day}")

    with pytest.raises(ValueError, match="no data for 2026-11-01"):
        report("2026-11-01")
    (request,) = live_api.engine.service.list_requests(agent_id="deploy-bot")
    assert request.parameters == {"day": "2026-11-01"}
    assert (request.outcome, request.outcome_detail) == (
        "failed",
        "ValueError: no data for 2026-11-01",
    )
    assert request.credential is not None and request.credential.revoked_at is not None


def test_cancel(client: StepupClient) -> None:
    request = client.submit(**STAGING_WRITE)
    cancelled = client.cancel(request.id)
    assert cancelled.status is Status.CANCELLED and cancelled.status_reason == "cancelled by agent"
    with pytest.raises(ApiError) as again:
        client.cancel(request.id)  # sent once: a conflict, not a silent success
    assert again.value.status == 409 and again.value.current_status == "cancelled"


def test_errors_are_typed_problem_details(live_api: LiveApi, client: StepupClient) -> None:
    with pytest.raises(ApiError) as missing:
        client.get("req_" + "0" * 32)
    assert (missing.value.status, missing.value.title) == (404, "Not found")
    assert missing.value.type.endswith("/not-found")

    with StepupClient(live_api.url, "sk_not_a_key") as stranger, pytest.raises(ApiError) as refused:
        stranger.submit(**READ)
    assert refused.value.status == 401

    pending = client.submit(**STAGING_WRITE)
    with pytest.raises(ApiError) as early:
        client.claim(pending.id)
    assert early.value.status == 409 and early.value.current_status == "pending"

    client.submit(**READ, idempotency_key="k-1")
    with pytest.raises(ApiError) as reused:
        client.submit(**READ, parameters={"other": True}, idempotency_key="k-1")
    assert reused.value.status == 409 and "Idempotency-Key" in reused.value.detail


class Flaky(httpx.BaseTransport):
    """The real transport, failing the first POST to a path ending in ``suffix``.

    ``lost answer``: the server handles the call but the answer never arrives. ``503``: the
    call never reaches the server. Every POST to such a path is recorded with its headers.
    """

    def __init__(self, failure: str, suffix: str = "/v1/requests") -> None:
        self.inner = httpx.HTTPTransport()
        self.failure = failure
        self.suffix = suffix
        self.sent: list[httpx.Headers] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        chosen = request.method == "POST" and request.url.path.endswith(self.suffix)
        if chosen:
            self.sent.append(request.headers)
        first = chosen and len(self.sent) == 1
        if first and self.failure == "503":
            return httpx.Response(503, json={"title": "Unavailable", "status": 503})
        response = self.inner.handle_request(request)
        if first and self.failure == "lost answer":
            response.read()
            raise httpx.ReadError("connection reset", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("failure", ["lost answer", "503"])
def test_a_retried_submit_creates_one_request(live_api: LiveApi, failure: str) -> None:
    flaky = Flaky(failure)
    with StepupClient(live_api.url, live_api.agent_key, transport=flaky, backoff=0.01) as client:
        request = client.submit(**READ)
    keys = [headers.get("Idempotency-Key") for headers in flaky.sent]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0]
    stored = live_api.engine.service.list_requests(agent_id="deploy-bot")
    assert [r.id for r in stored] == [request.id]


def test_a_complete_whose_answer_was_lost_is_done_once(live_api: LiveApi) -> None:
    flaky = Flaky("lost answer", suffix="/complete")
    with StepupClient(live_api.url, live_api.agent_key, transport=flaky, backoff=0.01) as client:
        request = client.submit(**READ)
        credential = client.claim(request.id)
        done = client.complete(request.id, "succeeded", "3 rows")
    assert len(flaky.sent) == 2
    assert (done.status, done.outcome, done.outcome_detail) == (
        Status.COMPLETED,
        "succeeded",
        "3 rows",
    )
    assert introspect(live_api, credential.token) == {"active": False}


def test_a_claim_that_may_have_landed_is_not_sent_again(live_api: LiveApi) -> None:
    flaky = Flaky("lost answer", suffix="/credential")
    with StepupClient(live_api.url, live_api.agent_key, transport=flaky, backoff=0.01) as client:
        request = client.submit(**READ)
        with pytest.raises(ConnectionFailed):
            client.claim(request.id)
        assert len(flaky.sent) == 1
        # The server did mint it: the request is active, its token lost, and it is cut off.
        assert client.get(request.id).status is Status.ACTIVE
        assert client.complete(request.id, "aborted", "credential lost").status is Status.COMPLETED


class Tampering(httpx.BaseTransport):
    """Changes the parameters of a submit on the way to the server."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/requests":
            body = json.loads(request.content)
            body["parameters"] = {"replicas": 30}
            headers = {k: v for k, v in request.headers.items() if k != "content-length"}
            request = httpx.Request("POST", request.url, headers=headers, json=body)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_request_not_bound_to_the_parameters_sent_is_refused_and_cancelled(
    live_api: LiveApi,
) -> None:
    with StepupClient(live_api.url, live_api.agent_key, transport=Tampering()) as client:
        with pytest.raises(ParametersMismatch) as refused:
            client.submit(**READ, parameters={"replicas": 3})
        assert refused.value.expected == parameters_digest({"replicas": 3})
        assert client.get(refused.value.request_id).status is Status.CANCELLED


@pytest.mark.parametrize(
    "parameters",
    [
        {},
        {"b": 1, "a": [1, 2.5, None, True], "nested": {"z": "é", "y": {"x": "日本"}}},
        {"big": 2**53 - 1, "float": 0.1, "neg": -1e-7, "quote": 'a"b\\c', "ctl": "\u0001\n"},
        {"\U0001f600": 1.0, "\ufb33": 1e21, "\u20ac": [0.000001, 1e-7]},  # RFC 8785 order
    ],
)
def test_client_digest_matches_the_servers(parameters: dict[str, object]) -> None:
    assert parameters_digest(parameters) == server_digest(parameters)
