"""One gated tool call: submit, wait (with progress), claim, call upstream, complete.

Every refusal becomes a tool result with ``isError: true`` and the reason, never a protocol
error, so the model can adapt. Once a credential is claimed, the request is completed however
the upstream call ends, and completing is what revokes the credential.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import mcp_types as types

from bot.mcp_proxy.mapping import GatedCall, MappingRefused, ToolsFile
from stepup_client import Request, Status, StepupClient, StepupClientError

CallUpstream = Callable[[str, dict[str, Any]], Awaitable[types.CallToolResult]]
Progress = Callable[[float, str], Awaitable[None]]
PROGRESS_EVERY_SECONDS = 10


def refusal(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


def _not_granted(request: Request) -> types.CallToolResult:
    reason = request.status_reason or "; ".join(request.reasons) or "no reason given"
    return refusal(f"stepup: request {request.id} was {request.status.value}: {reason}")


def _error_text(result: types.CallToolResult) -> str:
    texts = [block.text for block in result.content if isinstance(block, types.TextContent)]
    return " ".join(texts)[:500]


@dataclass(frozen=True)
class Gate:
    client: StepupClient
    tools: ToolsFile
    timeout_seconds: float
    progress_every: float = PROGRESS_EVERY_SECONDS

    async def call(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        upstream: CallUpstream,
        progress: Progress | None,
    ) -> types.CallToolResult:
        try:
            gated = self.tools.intent(tool, arguments)
        except MappingRefused as exc:
            return refusal(str(exc))
        try:
            request = await self._submit(gated, arguments)
            if request.status is Status.PENDING:
                request = await self._wait_or_withdraw(request, progress)
                if request.status is Status.PENDING:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(self._cancel_quietly, request.id)
                    return refusal(
                        f"stepup: request {request.id} was still waiting for approval after "
                        f"{self.timeout_seconds:g} s; it was cancelled. Ask again later or "
                        "ask a human to approve it."
                    )
            if request.status is not Status.APPROVED:
                return _not_granted(request)
            credential = await anyio.to_thread.run_sync(self.client.claim, request.id)
        except StepupClientError as exc:
            return refusal(f"stepup: the call was not run: {exc}")
        call_arguments = dict(arguments)
        if gated.credential_argument is not None:
            call_arguments[gated.credential_argument] = credential.token
        try:
            result = await upstream(tool, call_arguments)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._complete(request.id, "failed", f"{type(exc).__name__}: {exc}")
            if isinstance(exc, Exception):
                return refusal(
                    f"stepup: the upstream MCP server failed during request {request.id}: {exc}"
                )
            raise
        # Shielded: a cancel arriving now (the client gave up, or went away) must not stop the
        # report that revokes the credential.
        with anyio.CancelScope(shield=True):
            if result.is_error:
                await self._complete(request.id, "failed", _error_text(result))
            else:
                await self._complete(request.id, "succeeded", "")
        return result

    async def _submit(self, gated: GatedCall, arguments: Mapping[str, Any]) -> Request:
        submit = partial(
            self.client.submit,
            gated.action,
            gated.action_class,
            gated.target,
            gated.environment,
            gated.justification,
            parameters=dict(arguments),
        )
        return await anyio.to_thread.run_sync(submit)

    async def _wait_or_withdraw(self, request: Request, progress: Progress | None) -> Request:
        """``_wait``; if the client abandons the call meanwhile (``notifications/cancelled``,
        or it went away), the request is cancelled: nobody would be there to use an approval."""
        try:
            return await self._wait(request, progress)
        except (anyio.get_cancelled_exc_class(), StepupClientError):
            # Abandoned, or a poll failed: nobody would use an approval; cancel, then go on
            # (a failed poll is reported to the model as "the call was not run").
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._cancel_quietly, request.id)
            raise

    async def _wait(self, request: Request, progress: Progress | None) -> Request:
        """Long-polls until the request leaves ``pending`` or the timeout passes (then it is
        returned still pending); a progress notification before every poll."""
        deadline = time.monotonic() + self.timeout_seconds
        while request.status is Status.PENDING:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return request
            if progress is not None:
                waited = self.timeout_seconds - remaining
                approvals = request.approvals
                await progress(
                    waited,
                    f"stepup: request {request.id} waits for approval "
                    f"({approvals.received}/{approvals.required} approvals)",
                )
            hold = max(1, min(int(self.progress_every), int(remaining + 0.999), 60))
            poll = partial(self.client.poll, request.id, since=Status.PENDING, wait=hold)
            request = await anyio.to_thread.run_sync(poll)
        return request

    async def _complete(self, request_id: str, outcome: str, detail: str) -> None:
        try:
            complete = partial(self.client.complete, request_id, outcome, detail)
            await anyio.to_thread.run_sync(complete)
        except StepupClientError:
            pass  # revoked meanwhile, or the server is unreachable: the credential's TTL ends it

    def _cancel_quietly(self, request_id: str) -> None:
        # Decided meanwhile: then it expires unclaimed.
        with contextlib.suppress(StepupClientError):
            self.client.cancel(request_id)
