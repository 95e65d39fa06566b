"""A submission is all or nothing, on SQLite and PostgreSQL: whichever step after the request's
row fails — an audit entry, the Slack card's outbox entry, or building the answer itself — the
agent gets a 500 and nothing is left behind (no request it never heard of, no card, no audit
entry), and a retry with the same Idempotency-Key then makes the request once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import bot.api.routes
from core.audit.events import AuditLog
from core.notices import Notices
from tests.integration.conftest import LiveApi
from tests.integration.test_api_strict_input import written
from tests.support import submit_body

BODY = submit_body()  # needs approval: a request row, two audit entries and a Slack card


class Injected(RuntimeError):
    """The fault a test plants in one step of a submission."""


def fail_once(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original``, except that its first call raises."""
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Injected("planted by the test")
        return original(*args, **kwargs)

    return wrapper


# Each step that runs after the request's row is inserted, in the order a submission runs them.
STEPS: dict[str, tuple[Any, str]] = {
    "intent audit entry": (AuditLog, "intent_submitted"),
    "policy audit entry": (AuditLog, "policy_decided"),
    "Slack card in the outbox": (Notices, "post_card"),
    "building the answer": (bot.api.routes, "request_json"),
}


@pytest.mark.parametrize("step", STEPS, ids=list(STEPS))
@pytest.mark.parametrize("idempotency_key", [None, "retry-me"], ids=["no key", "with key"])
def test_a_failure_after_the_write_leaves_nothing_half_told(
    live_api: LiveApi, monkeypatch: pytest.MonkeyPatch, step: str, idempotency_key: str | None
) -> None:
    owner, name = STEPS[step]
    monkeypatch.setattr(owner, name, fail_once(getattr(owner, name)))
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    before = written(live_api)
    with live_api.client() as c:  # the server closes a connection after a 500: a new one
        failed = c.post("/v1/requests", json=BODY, headers=headers)
    assert failed.status_code == 500, failed.text
    assert "planted" not in failed.text  # no internals in the answer
    assert written(live_api) == before  # no request, no audit entry, no card

    with live_api.client() as c:
        retried = c.post("/v1/requests", json=BODY, headers=headers)
        assert retried.status_code == 201, retried.text
        request_id = retried.json()["id"]
        assert retried.json()["status"] == "pending"
        requests, entries, outbox = written(live_api)
        assert requests == before[0] + 1
        assert entries == before[1] + 2  # intent and policy decision, once
        assert outbox > before[2]  # the card is owed once the request exists
        again = c.post("/v1/requests", json=BODY, headers=headers)
    if idempotency_key:
        assert (again.status_code, again.json()["id"]) == (200, request_id)
    else:
        assert again.status_code == 201 and again.json()["id"] != request_id
