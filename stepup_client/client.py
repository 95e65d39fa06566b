"""The synchronous stepup client: submit, wait, claim, complete, cancel."""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import httpx

from stepup_client import gating
from stepup_client.digest import normalise_parameters, parameters_digest
from stepup_client.dpop import DpopKey, process_key
from stepup_client.errors import ApiError, ParametersMismatch, StepupClientError, WaitTimeout
from stepup_client.models import (
    ActionClass,
    Credential,
    Delegation,
    Outcome,
    Request,
    Status,
    settled,
)
from stepup_client.transport import Http, Retry, logger

P = ParamSpec("P")
R = TypeVar("R")

MAX_POLL_SECONDS = 60  # the server's cap on ?wait=
DEFAULT_WAIT_SECONDS = 1800.0  # the default approval timeout of a policy
MAX_DETAIL_CHARS = 4000


class BearerFrom(httpx.Auth):
    """``Authorization: Bearer …`` on every request: a static key, or a function called for
    each request, so a workload token that the platform refreshes (a Kubernetes projected
    service-account token, a SPIFFE JWT-SVID) is always the current one: ``token_file``."""

    def __init__(self, source: str | Callable[[], str]) -> None:
        self._source = source

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._source() if callable(self._source) else self._source
        if not token:
            raise ValueError("the agent's token source returned nothing")
        request.headers["Authorization"] = f"Bearer {token.strip()}"
        yield request


def token_file(path: str | os.PathLike[str]) -> Callable[[], str]:
    """The agent's token, read from ``path`` at each request (the file a platform keeps
    fresh: ``/var/run/secrets/tokens/stepup`` for a projected service-account token)."""
    location = Path(path)

    def read() -> str:
        return location.read_text(encoding="utf-8").strip()

    return read


class StepupClient:
    """A stepup agent client. Use it as a context manager, or call ``close()``.

    ``transport`` lets tests or proxies supply an ``httpx.BaseTransport``. Every claim carries
    a DPoP proof (RFC 9449) made with ``dpop_key`` (default: this process's own key, made on
    first use), so the credential is bound to that key; ``dpop=False`` claims bearer tokens.
    """

    def __init__(
        self,
        base_url: str,
        agent_key: str | Callable[[], str],
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        retries: int = 3,
        backoff: float = 0.25,
        poll_seconds: int = 30,
        dpop: bool = True,
        dpop_key: DpopKey | None = None,
    ) -> None:
        if not agent_key:
            raise ValueError("an agent key (or a function returning the agent's token) is required")
        if not 1 <= poll_seconds <= MAX_POLL_SECONDS:
            raise ValueError(f"poll_seconds must be between 1 and {MAX_POLL_SECONDS}")
        self._timeout = timeout
        self._poll_seconds = poll_seconds
        self._httpx = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"User-Agent": "stepup-client/0.1"},
            auth=BearerFrom(agent_key),
            timeout=timeout,
            transport=transport,
        )
        self._http = Http(self._httpx, retries=retries, backoff=backoff)
        self._dpop = dpop
        self._server_claims: bool | None = None  # False: an older server refused "claim"
        self._dpop_key = dpop_key

    def close(self) -> None:
        self._httpx.close()

    def __enter__(self) -> StepupClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the API -----------------------------------------------------------------------------

    def submit(
        self,
        action: str,
        action_class: ActionClass | str,
        target: str,
        environment: str,
        justification: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        requested_ttl_seconds: int | None = None,
        data_volume_bytes: int | None = None,
        on_behalf_of: str | None = None,
        parent_request_id: str | None = None,
        break_glass: bool = False,
        callback_url: str | None = None,
        claim: bool = False,
        idempotency_key: str | None = None,
    ) -> Request:
        """Submit an intent. Retries reuse one Idempotency-Key, so at most one request exists.
        With ``callback_url`` (a host on the agent's callback allow-list), every status change
        is POSTed there signed (docs/callbacks.md): check each with ``verify_event``.
        With ``claim``, a request the policy pre-authorises comes back ``active`` with its
        credential in ``request.claimed`` (one round trip; docs/api.md). ``claimed`` is None
        when there was nothing to claim (pending, denied), when the claim could not be made in
        the same call (then claim as usual), or when a retry replayed the first answer.

        Raises ``ParametersMismatch`` (after cancelling the request) if the server's record is
        not bound to the parameters sent.
        """
        sent = normalise_parameters(parameters or {})
        body: dict[str, Any] = {
            "action": action,
            "action_class": ActionClass(action_class).value,
            "target": target,
            "environment": environment,
            "justification": justification,
            "parameters": sent,
            "break_glass": break_glass,
        }
        optional = {
            "requested_ttl_seconds": requested_ttl_seconds,
            "data_volume_bytes": data_volume_bytes,
            "on_behalf_of": on_behalf_of,
            "parent_request_id": parent_request_id,
            "callback_url": callback_url,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        key = idempotency_key or str(uuid.uuid4())
        headers = {"Idempotency-Key": key}
        dpop_key = None
        if claim:
            body["claim"] = True
            dpop_key = (self._dpop_key or process_key()) if self._dpop else None
            if dpop_key is not None:
                url = str(self._httpx.build_request("POST", "/v1/requests").url)
                headers["DPoP"] = dpop_key.proof("POST", url)
        if claim and self._server_claims is False:
            body.pop("claim")
            headers.pop("DPoP", None)
        try:
            answer = self._http.call(
                "POST", "/v1/requests", json=body, headers=headers, retry=Retry.SAFE
            )
        except ApiError as err:
            if "claim" not in body or not _refused_field(err, "claim"):
                raise
            # A server from before one-round-trip submits: claim apart, from now on.
            self._server_claims = False
            body.pop("claim")
            headers.pop("DPoP", None)
            answer = self._http.call(
                "POST", "/v1/requests", json=body, headers=headers, retry=Retry.SAFE
            )
        request = Request.from_json(answer.body, dpop_key=dpop_key)
        expected = parameters_digest(sent)
        if request.parameters_digest != expected:
            self._cancel_quietly(request)
            raise ParametersMismatch(
                request.id, expected=expected, received=request.parameters_digest
            )
        return request

    def get(self, request_id: str) -> Request:
        return Request.from_json(self._http.call("GET", _path(request_id), retry=Retry.SAFE).body)

    def wait(self, request_id: str, *, timeout: float = DEFAULT_WAIT_SECONDS) -> Request:
        """Long-poll until the request leaves ``pending``.

        Returns it when ``approved`` (or already ``active``/``completed``); raises
        ``RequestDenied``, ``RequestExpired``, ``RequestCancelled`` or ``RequestRevoked`` when
        it ended otherwise, and ``WaitTimeout`` if it is still pending after ``timeout`` s.
        """
        started = time.monotonic()
        # A plain read first: the server holds a long-poll until the status *changes*, so
        # polling a request that is already decided would stall for the whole wait.
        request = self.get(request_id)
        while request.status is Status.PENDING:
            remaining = timeout - (time.monotonic() - started)
            if remaining <= 0:
                raise WaitTimeout(request, time.monotonic() - started)
            hold = min(self._poll_seconds, max(1, math.ceil(remaining)))
            answer = self._http.call(
                "GET",
                _path(request_id),
                # ``since``: the server answers at once if the status already moved on, even
                # when that happened before the long-poll began (between two polls).
                params={"wait": hold, "since": request.status.value},
                timeout=hold + self._timeout,
                retry=Retry.SAFE,
            )
            request = Request.from_json(answer.body)
        return settled(request)

    def poll(self, request_id: str, *, since: Status | str, wait: int) -> Request:
        """One long-poll: the request as soon as its status is not ``since``, else after
        ``wait`` seconds (1 to 60) as it is then. ``wait`` watches one status step at a time."""
        if not 1 <= wait <= MAX_POLL_SECONDS:
            raise ValueError(f"wait must be between 1 and {MAX_POLL_SECONDS}")
        answer = self._http.call(
            "GET",
            _path(request_id),
            params={"wait": wait, "since": Status(since).value},
            timeout=wait + self._timeout,
            retry=Retry.SAFE,
        )
        return Request.from_json(answer.body)

    def claim(self, request_id: str) -> Credential:
        """Mint the credential of an approved request. It is returned once: keep it."""
        # Never re-sent once it may have reached the server: a second claim cannot return
        # the token the first one minted (nor could its DPoP proof be used twice).
        path = f"{_path(request_id)}/credential"
        key = (self._dpop_key or process_key()) if self._dpop else None
        headers = None
        if key is not None:
            headers = {"DPoP": key.proof("POST", str(self._httpx.build_request("POST", path).url))}
        answer = self._http.call("POST", path, retry=Retry.UNSENT, headers=headers)
        return Credential.from_json(answer.body, dpop_key=key)

    def complete(self, request_id: str, outcome: Outcome | str, detail: str = "") -> Request:
        """Report how it went; the server revokes the credential."""
        body = {"outcome": Outcome(outcome).value, "detail": detail[:MAX_DETAIL_CHARS]}
        return self._transition(request_id, "complete", body, Status.COMPLETED)

    def cancel(self, request_id: str) -> Request:
        """Withdraw a ``pending`` or ``approved`` request."""
        return self._transition(request_id, "cancel", None, Status.CANCELLED)

    def delegate(
        self,
        request_id: str,
        agent: str,
        *,
        actions: Sequence[str],
        targets: Sequence[str],
        max_ttl: str,
    ) -> Delegation:
        """Hand part of an ``active`` request (its rule must say ``delegable: true``) to
        ``agent``, which then submits with ``parent_request_id=request_id``
        (docs/delegation.md). Not re-sent once it may have reached the server."""
        body = {
            "agent": agent,
            "actions": list(actions),
            "targets": list(targets),
            "max_ttl": max_ttl,
        }
        answer = self._http.call(
            "POST", f"{_path(request_id)}/delegations", json=body, retry=Retry.UNSENT
        )
        return Delegation.from_json(answer.body)

    # -- gating helpers (see stepup_client.gating) -------------------------------------------

    def session(
        self,
        request: Request | str,
        *,
        expected_parameters: Mapping[str, Any] | None = None,
        timeout: float = DEFAULT_WAIT_SECONDS,
    ) -> AbstractContextManager[Credential]:
        """Wait for an existing request, claim its credential, report the outcome at the end."""
        return gating.session(
            self, request, expected_parameters=expected_parameters, timeout=timeout
        )

    def gated(
        self,
        action: str,
        action_class: ActionClass | str,
        target: str,
        environment: str,
        justification: str,
        *,
        timeout: float = DEFAULT_WAIT_SECONDS,
        **options: Any,
    ) -> AbstractContextManager[Credential]:
        """Submit, wait, claim, then report the outcome: ``with client.gated(...) as cred:``.

        ``options`` are ``submit``'s keyword arguments: ``parameters``, ``on_behalf_of``...
        """
        return gating.gated(
            self,
            action,
            action_class,
            target,
            environment,
            justification,
            timeout=timeout,
            **options,
        )

    def requires_approval(
        self,
        *,
        action: gating.Field,
        action_class: ActionClass | str,
        target: gating.Field,
        environment: gating.Field,
        justification: gating.Field,
        exclude: tuple[str, ...] = (),
        timeout: float = DEFAULT_WAIT_SECONDS,
        **options: Any,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Gate a tool function on an approval bound to the arguments of each call."""
        return gating.requires_approval(
            self,
            gating.Template(action, ActionClass(action_class), target, environment, justification),
            exclude=exclude,
            timeout=timeout,
            options=options,
        )

    # -- internals ---------------------------------------------------------------------------

    def _transition(
        self, request_id: str, verb: str, body: dict[str, Any] | None, target: Status
    ) -> Request:
        try:
            answer = self._http.call(
                "POST", f"{_path(request_id)}/{verb}", json=body, retry=Retry.SAFE
            )
        except ApiError as err:
            # A retry whose first attempt did land (its answer was lost) finds the request
            # already in the target status: that is success, not a conflict.
            if err.attempts > 1 and err.status == 409 and err.current_status == target.value:
                logger.info("stepup %s: %s had already been applied", request_id, verb)
                return self.get(request_id)
            raise
        return Request.from_json(answer.body)

    def _cancel_quietly(self, request: Request) -> None:
        """Withdraw a request the client will not use: cancelled if it is pending or approved,
        completed as aborted (which revokes its credential) if a submit with claim made it
        active."""
        if request.status in (Status.PENDING, Status.APPROVED):
            gating.cancel_quietly(self, request.id)
        elif request.status is Status.ACTIVE:
            try:
                self.complete(request.id, Outcome.ABORTED, "parameters digest mismatch")
            except StepupClientError as err:
                logger.warning("stepup could not withdraw %s: %s", request.id, err)


def _refused_field(err: ApiError, name: str) -> bool:
    """A 422 naming ``name`` among its bad fields (an older server that forbids it)."""
    if err.status != 422:
        return False
    errors = err.body.get("errors")
    return isinstance(errors, list) and any(
        isinstance(item, dict) and str(item.get("field", "")).split(".")[-1] == name
        for item in errors
    )


def _path(request_id: str) -> str:
    if not request_id or "/" in request_id or request_id in (".", ".."):
        raise ValueError(f"not a request id: {request_id!r}")
    return f"/v1/requests/{request_id}"
