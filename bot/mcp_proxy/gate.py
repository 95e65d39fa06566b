"""One gated tool call: submit, wait (with progress), claim, call upstream, complete.

Every refusal becomes a tool result with ``isError: true`` and the reason, never a protocol
error, so the model can adapt. Once a credential is claimed, the request is completed however
the upstream call ends, and completing is what revokes the credential.

A call that succeeded is reported while its result goes back to the client (``Reports``): the
credential is revoked moments after the client has the result, not one HTTP round trip before
it, and the proxy sends every report still in flight before it exits (unless it is killed
first: docs/mcp.md). Every other ending (an upstream error result, a failure, a timeout, a
cancel) is reported before the client hears of it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.abc
import mcp_types as types

from bot.mcp_proxy.defaults import with_defaults
from bot.mcp_proxy.mapping import GatedCall, MappingRefused, ToolsFile
from stepup_client import Credential, Request, Status, StepupClient, StepupClientError
from stepup_client.gating import submit_claiming

T = TypeVar("T")
logger = logging.getLogger("stepup.mcp_proxy")

CallUpstream = Callable[[str, dict[str, Any]], Awaitable[types.CallToolResult]]
Progress = Callable[[float, str], Awaitable[None]]
PROGRESS_EVERY_SECONDS = 10
CALL_TIMEOUT_SECONDS = 600.0
_ABANDONED = "not run to the end: the MCP client cancelled the call, or the proxy stopped"


def refusal(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


def _not_granted(request: Request) -> types.CallToolResult:
    reason = request.status_reason or "; ".join(request.reasons) or "no reason given"
    return refusal(f"stepup: request {request.id} was {request.status.value}: {reason}")


async def _unlost(call: Callable[[], T]) -> T:
    """``call`` in a worker thread, shielded: a cancel waits for its answer instead of losing it
    (a request it made, a credential it minted) and is delivered at the next checkpoint.
    Abandoned already: ``call`` is not made."""
    await anyio.lowlevel.checkpoint_if_cancelled()
    with anyio.CancelScope(shield=True):
        answer = await anyio.to_thread.run_sync(call)
    return answer  # noqa: RET504 - a return inside the scope: mypy sees a missing return


def _error_text(result: types.CallToolResult) -> str:
    texts = [block.text for block in result.content if isinstance(block, types.TextContent)]
    return " ".join(texts)[:500]


class Reports:
    """Outcome reports sent in the background while ``open``: leaving ``open`` waits for every
    report started, and a cancel (SIGTERM) does not stop one (each is shielded; the client's
    timeout and retries bound it). Outside ``open`` nothing is started in the background."""

    def __init__(self) -> None:
        self._group: anyio.abc.TaskGroup | None = None

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield
            finally:
                self._group = None

    def start(self, report: Callable[[], Awaitable[None]]) -> bool:
        """Send ``report`` in the background; False (nothing started) when not open."""
        if self._group is None:
            return False
        self._group.start_soon(_shielded, report)
        return True


async def _shielded(report: Callable[[], Awaitable[None]]) -> None:
    """One report, whatever happens around it; one that fails unexpectedly is logged (to
    stderr) instead of ending the proxy's other calls with it."""
    with anyio.CancelScope(shield=True):
        try:
            await report()
        except Exception:
            logger.exception("stepup mcp-proxy: an outcome report failed")


@dataclass(frozen=True)
class Gate:
    client: StepupClient
    tools: ToolsFile
    timeout_seconds: float
    call_timeout_seconds: float = CALL_TIMEOUT_SECONDS
    progress_every: float = PROGRESS_EVERY_SECONDS
    reports: Reports = field(default_factory=Reports)

    async def call(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        upstream: CallUpstream,
        progress: Progress | None,
        input_schema: Mapping[str, Any] | None = None,
    ) -> types.CallToolResult:
        """``input_schema`` is the upstream tool's: its defaults are filled into the arguments
        before anything else, so approvers see, and the upstream runs, the same arguments."""
        rule = self.tools.rule_for(tool)
        # Never the credential argument: a model supplying it is refused by the mapping.
        filled = with_defaults(
            input_schema, arguments, skip=None if rule is None else rule.credential_argument
        )
        try:
            gated = self.tools.intent(tool, filled)
        except MappingRefused as exc:
            return refusal(str(exc))
        granted = await self._grant(gated, filled, progress)
        if isinstance(granted, types.CallToolResult):
            return granted
        request, credential = granted
        call_arguments = dict(filled)
        if gated.credential_argument is not None:
            call_arguments[gated.credential_argument] = credential.token
        return await self._run(tool, request.id, call_arguments, upstream)

    async def _grant(
        self, gated: GatedCall, parameters: dict[str, Any], progress: Progress | None
    ) -> tuple[Request, Credential] | types.CallToolResult:
        """Submit (claiming at once if the policy pre-authorises), wait while pending, claim:
        the request and its credential, or the refusal.

        A cancel (the client abandoned the call, or the proxy stops) or a failure at any point
        withdraws the request: nobody would be there to use an approval. Submit and claim are
        shielded so their answer is never lost to a cancel: the request they made is known, and
        a credential they minted is reported (as aborted, which revokes it)."""
        request: Request | None = None
        credential: Credential | None = None
        claiming = False  # a claim was sent: it may have minted a credential although it failed
        try:
            # One round trip when the policy pre-authorises: the submit claims as well (an
            # answer replayed without its credential: reported aborted, submitted again).
            request = await _unlost(self._submit(gated, parameters))
            if request.status is Status.ACTIVE:
                credential = request.claimed
            if credential is None:
                if request.status is Status.PENDING:
                    request = await self._wait(request, progress)
                    if request.status is Status.PENDING:
                        await self._withdraw(request.id, claimed=False, claiming=False)
                        return refusal(
                            f"stepup: request {request.id} was still waiting for approval after "
                            f"{self.timeout_seconds:g} s; it was cancelled. Ask again later or "
                            "ask a human to approve it."
                        )
                if request.status is not Status.APPROVED:
                    return _not_granted(request)
                claiming = True
                credential = await _unlost(partial(self.client.claim, request.id))
        except StepupClientError as exc:
            if request is not None:  # a poll or the claim failed
                await self._withdraw(request.id, claimed=credential is not None, claiming=claiming)
            return refusal(f"stepup: the call was not run: {exc}")
        except BaseException:  # cancelled, or anything else (a progress notification failed)
            if request is not None:
                await self._withdraw(request.id, claimed=credential is not None, claiming=claiming)
            raise
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._complete(request.id, "aborted", _ABANDONED)
            raise
        return request, credential

    async def _run(
        self, tool: str, request_id: str, arguments: dict[str, Any], upstream: CallUpstream
    ) -> types.CallToolResult:
        """Calls the upstream (at most ``call_timeout_seconds``) and reports the outcome, which
        revokes the credential, however the call ends."""
        try:
            with anyio.move_on_after(self.call_timeout_seconds) as timer:
                result = await upstream(tool, arguments)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._complete(request_id, "aborted", _ABANDONED)
            raise
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._complete(request_id, "failed", f"{type(exc).__name__}: {exc}")
            if isinstance(exc, Exception):
                return refusal(
                    f"stepup: the upstream MCP server failed during request {request_id}: {exc}"
                )
            raise
        if timer.cancelled_caught:
            text = f"upstream call timed out after {self.call_timeout_seconds:g} s"
            with anyio.CancelScope(shield=True):
                await self._complete(request_id, "failed", text)
            return refusal(f"stepup: the {text} (request {request_id}); it was abandoned")
        # Shielded: a cancel arriving now (the client gave up, or went away) must not stop the
        # report that revokes the credential.
        if result.is_error:
            with anyio.CancelScope(shield=True):
                await self._complete(request_id, "failed", _error_text(result))
            return result
        succeeded = partial(self._complete, request_id, "succeeded", "")
        if not self.reports.start(succeeded):
            with anyio.CancelScope(shield=True):
                await succeeded()
        return result

    async def _withdraw(self, request_id: str, *, claimed: bool, claiming: bool) -> None:
        """Withdraws the request, shielded: a claimed credential is reported as aborted (which
        revokes it); otherwise the request is cancelled, or, if a claim that failed may still
        have minted the credential and the cancel is refused, reported as aborted."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._withdraw_quietly, request_id, claimed, claiming)

    def _withdraw_quietly(self, request_id: str, claimed: bool, claiming: bool) -> None:
        if not claimed:
            try:
                self.client.cancel(request_id)
                return
            except StepupClientError:
                if not claiming:
                    return  # decided meanwhile: then it expires unclaimed
        with contextlib.suppress(StepupClientError):
            self.client.complete(request_id, "aborted", _ABANDONED)

    def _submit(self, gated: GatedCall, parameters: dict[str, Any]) -> Callable[[], Request]:
        return partial(
            submit_claiming,
            self.client,
            gated.action,
            gated.action_class,
            gated.target,
            gated.environment,
            gated.justification,
            parameters=parameters,
        )

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
