"""The proxy's gate and mapping against stand-ins of the stepup client (review findings): a
cancel landing as the upstream answers still reports the outcome (the credential is revoked),
a failed poll withdraws the request, a template value cannot step out of a path or differ from
what the upstream gets, and --init-tools does not trust an upstream's hints or names."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import mcp_types as types
import pytest

from bot.mcp_proxy.defaults import with_defaults
from bot.mcp_proxy.gate import Gate
from bot.mcp_proxy.mapping import MappingRefused, parse_tools
from bot.mcp_proxy.server import _PLAIN_TOOL_NAME, _action_class
from stepup_client import Status, StepupClientError

TOOLS = parse_tools(
    {
        "tools": {
            "drop": {
                "action": "db.drop",
                "action_class": "destructive",
                "target": "t",
                "environment": "e",
            },
            "drop_with": {
                "action": "db.drop",
                "action_class": "destructive",
                "target": "{database}/{table}",
                "environment": "e",
                "credential_argument": "auth",
            },
            "write": {
                "action": "fs.write",
                "action_class": "write",
                "target": "workspace/{path}",
                "environment": "e",
            },
        }
    }
)


class _Approvals:
    received, required = 0, 2


class _Credential:
    token = "tok"


class _Request:
    def __init__(self, status: Status, claimed: _Credential | None = None) -> None:
        self.id, self.status, self.status_reason, self.reasons = "req_1", status, None, []
        self.approvals = _Approvals()
        self.claimed = claimed


class _Client:
    """Answers each submit with the next status given (the last one repeats). ``active``
    comes with its credential (``claim=True``, pre-authorised) unless ``token_lost``."""

    def __init__(self, *statuses: Status, token_lost: bool = False) -> None:
        self.statuses, self.token_lost = list(statuses), token_lost
        self.calls: list[Any] = []

    def submit(self, *args: Any, **kwargs: Any) -> _Request:
        self.calls.append("submit")
        self.submitted = (args, kwargs)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        hands_over = status is Status.ACTIVE and kwargs.get("claim") and not self.token_lost
        return _Request(status, _Credential() if hands_over else None)

    def claim(self, request_id: str) -> _Credential:
        self.calls.append("claim")
        return _Credential()

    def complete(self, request_id: str, outcome: str, detail: str) -> None:
        self.calls.append(("complete", outcome))

    def cancel(self, request_id: str) -> None:
        self.calls.append("cancel")

    def poll(self, request_id: str, **kwargs: Any) -> _Request:
        self.calls.append("poll")
        raise StepupClientError("503 from server (transient)")


def test_a_cancel_as_the_upstream_answers_still_reports_and_so_revokes() -> None:
    client = _Client(Status.APPROVED)
    gate = Gate(client, TOOLS, 5)  # type: ignore[arg-type]

    async def main() -> None:
        with anyio.CancelScope() as scope:  # the SDK's per-request scope

            async def upstream(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
                scope.cancel()  # notifications/cancelled lands just as the answer arrives
                return types.CallToolResult(content=[types.TextContent(text="dropped")])

            await gate.call("drop", {}, upstream, None)

    anyio.run(main)
    assert client.calls == ["submit", "claim", ("complete", "succeeded")]


class _ParkingClient(_Client):
    """Parks inside ``submit`` or ``claim`` (after the server would have answered) until the
    test releases it, so a cancel can land exactly while that call is in flight."""

    def __init__(self, status: Status, park_in: str) -> None:
        super().__init__(status)
        self.park_in = park_in
        self.parked, self.release = threading.Event(), threading.Event()

    def _park(self, step: str) -> None:
        if step == self.park_in:
            self.parked.set()
            assert self.release.wait(30), "never released"

    def submit(self, *args: Any, **kwargs: Any) -> _Request:
        request = super().submit(*args, **kwargs)
        self._park("submit")
        return request

    def claim(self, request_id: str) -> _Credential:
        credential = super().claim(request_id)
        self._park("claim")
        return credential


@pytest.mark.parametrize(
    ("status", "park_in", "expected"),
    [
        # allowed at once: the approved request is cancelled, never left to expire
        (Status.APPROVED, "submit", ["submit", "cancel"]),
        (Status.PENDING, "submit", ["submit", "cancel"]),
        # the credential was minted: reported as aborted (which revokes it), upstream not called
        (Status.APPROVED, "claim", ["submit", "claim", ("complete", "aborted")]),
        (Status.ACTIVE, "submit", ["submit", ("complete", "aborted")]),  # claimed by the submit
    ],
)
def test_a_cancel_while_submit_or_claim_is_in_flight_withdraws_the_request(
    status: Status, park_in: str, expected: list[Any]
) -> None:
    client = _ParkingClient(status, park_in)
    gate = Gate(client, TOOLS, 5)  # type: ignore[arg-type]
    upstream_calls: list[str] = []

    async def upstream(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        upstream_calls.append(name)
        return types.CallToolResult(content=[types.TextContent(text="dropped")])

    async def main() -> None:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:  # the SDK's per-request scope
                group.start_soon(gate.call, "drop", {}, upstream, None)
                await anyio.to_thread.run_sync(client.parked.wait)
                group.cancel_scope.cancel()  # notifications/cancelled, or the proxy stops
                client.release.set()

    anyio.run(main)
    assert client.calls == expected
    assert upstream_calls == []


class _SlowReportClient(_Client):
    """Its ``complete`` parks until the test releases it (a slow server)."""

    def __init__(self, status: Status) -> None:
        super().__init__(status)
        self.reporting, self.release = threading.Event(), threading.Event()

    def complete(self, request_id: str, outcome: str, detail: str) -> None:
        self.reporting.set()
        assert self.release.wait(30), "never released"
        super().complete(request_id, outcome, detail)


def _ok(text: str = "rows: 87") -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)])


def test_a_success_is_answered_while_its_report_is_sent_and_the_proxy_waits_for_it() -> None:
    client = _SlowReportClient(Status.ACTIVE)
    gate = Gate(client, TOOLS, 5)  # type: ignore[arg-type]
    answered: list[types.CallToolResult] = []

    async def upstream(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        return _ok()

    async def main() -> None:
        with anyio.fail_after(10):
            async with gate.reports.open():
                # The answer comes back while complete is still parked at the server...
                answered.append(await gate.call("drop", {}, upstream, None))
                assert client.calls == ["submit"]
                await anyio.to_thread.run_sync(client.reporting.wait)
                client.release.set()
            # ...and leaving `open` (the proxy stopping) waited for the report.
            assert client.calls == ["submit", ("complete", "succeeded")]

    anyio.run(main)
    assert [text_of(r) for r in answered] == ["rows: 87"] and not answered[0].is_error


def test_a_report_in_flight_is_still_sent_when_the_proxy_is_told_to_stop() -> None:
    client = _SlowReportClient(Status.ACTIVE)
    gate = Gate(client, TOOLS, 5)  # type: ignore[arg-type]

    async def upstream(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        return _ok()

    async def main() -> None:
        with anyio.fail_after(10):
            with anyio.CancelScope() as stopping:  # SIGTERM cancels the whole proxy
                async with gate.reports.open():
                    await gate.call("drop", {}, upstream, None)
                    await anyio.to_thread.run_sync(client.reporting.wait)
                    stopping.cancel()
                    client.release.set()
                    await anyio.sleep_forever()

    anyio.run(main)
    assert client.calls == ["submit", ("complete", "succeeded")]


class _BrokenReportClient(_Client):
    def complete(self, request_id: str, outcome: str, detail: str) -> None:
        super().complete(request_id, outcome, detail)
        raise RuntimeError("not a StepupClientError")


def test_a_report_that_fails_unexpectedly_ends_no_other_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = _BrokenReportClient(Status.ACTIVE)
    gate = Gate(client, TOOLS, 5)  # type: ignore[arg-type]

    async def upstream(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        return _ok()

    async def main() -> list[types.CallToolResult]:
        with anyio.fail_after(10):
            async with gate.reports.open():
                first = await gate.call("drop", {}, upstream, None)
                while ("complete", "succeeded") not in client.calls:  # the report has failed
                    await anyio.sleep(0.01)
                second = await gate.call("drop", {}, upstream, None)
                return [first, second]

    results = anyio.run(main)
    assert [text_of(r) for r in results] == ["rows: 87", "rows: 87"]
    assert client.calls == ["submit", ("complete", "succeeded")] * 2
    assert "an outcome report failed" in caplog.text


def test_an_error_result_is_reported_failed_before_the_client_hears_of_it() -> None:
    client = _Client(Status.ACTIVE)
    gate = Gate(client, TOOLS, 5)  # type: ignore[arg-type]

    async def upstream(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        return types.CallToolResult(
            content=[types.TextContent(text="no such table")], is_error=True
        )

    async def main() -> types.CallToolResult:
        async with gate.reports.open():
            result = await gate.call("drop", {}, upstream, None)
            assert client.calls == ["submit", ("complete", "failed")]  # already, not later
            return result

    assert anyio.run(main).is_error


def text_of(result: types.CallToolResult) -> str:
    return " ".join(b.text for b in result.content if isinstance(b, types.TextContent))


def test_a_progress_notification_that_fails_withdraws_the_request() -> None:
    client = _Client(Status.PENDING)

    async def progress(waited: float, message: str) -> None:
        raise anyio.BrokenResourceError  # the client's stream is gone

    with pytest.raises(anyio.BrokenResourceError):
        anyio.run(Gate(client, TOOLS, 60).call, "drop", {}, None, progress)  # type: ignore[arg-type]
    assert client.calls == ["submit", "cancel"]


def test_a_failed_poll_withdraws_the_request() -> None:
    client = _Client(Status.PENDING)
    result = anyio.run(Gate(client, TOOLS, 60).call, "drop", {}, None, None)  # type: ignore[arg-type]
    assert result.is_error
    assert client.calls == ["submit", "poll", "cancel"]


@pytest.mark.parametrize("path", ["../.ssh/authorized_keys", "a/./b", "a/..", "\uff53\uff43ratch"])
def test_a_value_that_steps_out_or_is_not_canonical_is_refused(path: str) -> None:
    with pytest.raises(MappingRefused):
        TOOLS.intent("write", {"path": path})
    assert TOOLS.intent("write", {"path": "notes/today.md"}).target == "workspace/notes/today.md"


def test_init_tools_trusts_no_upstream_hint_or_name() -> None:
    both = types.Tool(
        name="purge_all",
        input_schema={"type": "object"},
        annotations=types.ToolAnnotations(read_only_hint=True, destructive_hint=True),
    )
    assert _action_class(both) == "destructive"
    assert not _PLAIN_TOOL_NAME.fullmatch("*")
    assert not _PLAIN_TOOL_NAME.fullmatch("drop_[a-z]*")
    assert _PLAIN_TOOL_NAME.fullmatch("count_rows")


SCHEMA = {
    "type": "object",
    "properties": {
        "database": {"type": "string"},
        "table": {"type": "string", "default": "sessions"},
        "auth": {"type": "string", "default": ""},
        "options": {"$ref": "#/$defs/Options"},
        "extra": {"anyOf": [{"$ref": "#/$defs/Options"}, {"type": "null"}], "default": None},
    },
    "required": ["database", "options"],
    "$defs": {
        "Options": {
            "type": "object",
            "properties": {
                "level": {"type": "integer", "default": 6},
                "tags": {"type": "array", "default": ["a"]},
                "inner": {
                    "type": "object",
                    "properties": {"depth": {"default": 1}},
                    "default": {},
                },
            },
        }
    },
}


def test_defaults_are_approved_and_sent_upstream_as_one_set_of_arguments() -> None:
    """What the upstream would fill in itself is in the request's parameters, the target is
    built from it, and the upstream gets exactly those arguments plus the credential."""
    client = _Client(Status.APPROVED)
    sent: list[dict[str, Any]] = []

    async def upstream(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        sent.append(arguments)
        return types.CallToolResult(content=[types.TextContent(text="dropped")])

    arguments = {"database": "orders", "options": {"level": 9}}
    gate = Gate(client, TOOLS, 5)  # type: ignore[arg-type]
    result = anyio.run(gate.call, "drop_with", arguments, upstream, None, SCHEMA)
    assert not result.is_error
    filled = {
        "database": "orders",
        "table": "sessions",
        "options": {"level": 9, "tags": ["a"], "inner": {"depth": 1}},
        "extra": None,
    }
    args, kwargs = client.submitted
    assert kwargs["parameters"] == filled and "orders/sessions" in args
    assert sent == [{**filled, "auth": "tok"}]  # the credential argument is never defaulted
    assert arguments == {"database": "orders", "options": {"level": 9}}  # not written into


def test_without_a_schema_or_with_a_strange_one_the_arguments_are_sent_as_given() -> None:
    given = {"a": 1, "nested": [1]}
    assert with_defaults(None, given) == given
    assert with_defaults({"properties": "no"}, given) == given
    assert with_defaults({"properties": {"nested": {"default": 5}}}, given) == given
    # a default its own type refuses means "absent" (sent as null, the upstream would refuse)
    sloppy = {"properties": {"n": {"type": "integer", "default": None}, "m": {"default": None}}}
    assert with_defaults(sloppy, {}) == {"m": None}
    # an ambiguous union between two objects is left to the upstream
    either = {
        "properties": {
            "o": {
                "anyOf": [
                    {"properties": {"x": {"default": 1}}},
                    {"properties": {"y": {"default": 2}}},
                ]
            }
        }
    }
    assert with_defaults(either, {"o": {}}) == {"o": {}}
    # a $ref that leads nowhere, or loops, is no crash
    assert with_defaults({"properties": {"o": {"$ref": "#/$defs/Missing"}}}, {"o": {}}) == {"o": {}}
    loop = {"$defs": {"A": {"$ref": "#/$defs/A"}}, "properties": {"o": {"$ref": "#/$defs/A"}}}
    assert with_defaults(loop, {"o": {}}) == {"o": {}}


def test_a_recursive_schema_is_filled_only_so_deep() -> None:
    tree = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "child": {"$ref": "#/$defs/Node", "default": {}},
                    "n": {"default": 0},
                },
            }
        },
        "properties": {"root": {"$ref": "#/$defs/Node", "default": {}}},
    }
    filled = with_defaults(tree, {})
    depth = 0
    node = filled["root"]
    while "child" in node:
        node, depth = node["child"], depth + 1
    assert 0 < depth <= 20


def _answer(sent: list[dict[str, Any]]) -> Any:
    async def upstream(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        sent.append(arguments)
        return types.CallToolResult(content=[types.TextContent(text="done")])

    return upstream


def test_a_pre_authorised_call_is_submitted_and_claimed_in_one_round_trip() -> None:
    client = _Client(Status.ACTIVE)
    sent: list[dict[str, Any]] = []
    gate = Gate(client, TOOLS, 5)  # type: ignore[arg-type]
    arguments = {"database": "orders", "table": "t"}
    result = anyio.run(gate.call, "drop_with", arguments, _answer(sent), None)
    assert not result.is_error
    assert client.submitted[1]["claim"] is True
    assert client.calls == ["submit", ("complete", "succeeded")]
    assert sent == [{**arguments, "auth": "tok"}]


def test_a_replayed_submit_that_lost_the_token_is_aborted_and_submitted_again() -> None:
    client = _Client(Status.ACTIVE, Status.APPROVED, token_lost=True)
    sent: list[dict[str, Any]] = []
    gate = Gate(client, TOOLS, 5)  # type: ignore[arg-type]
    arguments = {"database": "orders", "table": "t"}
    result = anyio.run(gate.call, "drop_with", arguments, _answer(sent), None)
    assert not result.is_error
    assert client.submitted[1]["claim"] is False  # the second submit claims apart
    assert client.calls == [
        "submit",
        ("complete", "aborted"),
        "submit",
        "claim",
        ("complete", "succeeded"),
    ]
    assert sent == [{**arguments, "auth": "tok"}]
