"""The proxy's gate and mapping against stand-ins of the stepup client (review findings): a
cancel landing as the upstream answers still reports the outcome (the credential is revoked),
a failed poll withdraws the request, a template value cannot step out of a path or differ from
what the upstream gets, and --init-tools does not trust an upstream's hints or names."""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
import pytest

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


class _Request:
    def __init__(self, status: Status) -> None:
        self.id, self.status, self.status_reason, self.reasons = "req_1", status, None, []
        self.approvals = _Approvals()


class _Credential:
    token = "tok"


class _Client:
    def __init__(self, status: Status) -> None:
        self.status = status
        self.calls: list[Any] = []

    def submit(self, *args: Any, **kwargs: Any) -> _Request:
        self.calls.append("submit")
        return _Request(self.status)

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
