"""Gating blocks and tool functions: wait, claim, run, then always report the outcome.

Reporting the outcome is what revokes the credential, so it happens however the block ends:
``succeeded``, ``failed`` (with the exception's text, which is then re-raised) or ``aborted``
(KeyboardInterrupt and other non-``Exception`` exits).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from stepup_client.digest import normalise_parameters, parameters_digest
from stepup_client.errors import ApiError, ParametersMismatch, StepupClientError, WaitTimeout
from stepup_client.models import ActionClass, Credential, Outcome, Request, Status, settled
from stepup_client.transport import logger

if TYPE_CHECKING:
    from stepup_client.client import StepupClient

P = ParamSpec("P")
R = TypeVar("R")

CREDENTIAL_PARAMETER = "credential"
# A text, or a function of the call's bound arguments (name -> value) that returns one.
Field = str | Callable[[Mapping[str, Any]], str]


@contextmanager
def session(
    client: StepupClient,
    request: Request | str,
    *,
    expected_parameters: Mapping[str, Any] | None = None,
    timeout: float,
) -> Iterator[Credential]:
    """Wait for ``request`` if pending, claim its credential, yield it, report the outcome.
    A request submitted with ``claim=True`` that came back with its credential is used as is."""
    current = client.get(request) if isinstance(request, str) else request
    expected = (
        parameters_digest(normalise_parameters(expected_parameters))
        if expected_parameters is not None
        else None
    )
    _check_digest(current, expected)
    if current.claimed is not None and current.status is Status.ACTIVE:
        credential = current.claimed
    else:
        if current.status is Status.PENDING:
            current = client.wait(current.id, timeout=timeout)
        else:
            current = settled(current)
        _check_digest(current, expected)
        credential = client.claim(current.id)
    try:
        yield credential
    except Exception as exc:
        _report(client, current.id, Outcome.FAILED, _describe(exc), pending=exc)
        raise
    except BaseException as exc:
        _report(client, current.id, Outcome.ABORTED, _describe(exc), pending=exc)
        raise
    _report(client, current.id, Outcome.SUCCEEDED, "", pending=None)


@contextmanager
def gated(
    client: StepupClient,
    action: str,
    action_class: ActionClass | str,
    target: str,
    environment: str,
    justification: str,
    *,
    timeout: float,
    **options: Any,
) -> Iterator[Credential]:
    """Submit, then ``session``. A request left pending (timeout, Ctrl-C) is cancelled.

    One round trip when the policy pre-authorises: the submit claims (``claim=True``). If a
    retry replayed an answer whose credential was lost in transit, that request is completed
    as aborted and the intent submitted once more, to be claimed the usual way."""
    fields = (action, action_class, target, environment, justification)
    request = submit_claiming(client, *fields, **options)
    if request.status is Status.PENDING:
        try:
            request = client.wait(request.id, timeout=timeout)
        except (WaitTimeout, KeyboardInterrupt):
            cancel_quietly(client, request.id)
            raise
    sent = options.get("parameters") or {}
    with session(client, request, expected_parameters=sent, timeout=timeout) as credential:
        yield credential


def submit_claiming(client: StepupClient, *fields: Any, **options: Any) -> Request:
    """``client.submit(*fields, claim=True, **options)``, made whole: when a retry replayed an
    answer whose credential was lost in transit (``active``, nothing in ``claimed``), that
    session is completed as aborted (which revokes the credential nobody holds) and the intent
    submitted once more, under a fresh Idempotency-Key, to be claimed the usual way."""
    request = client.submit(*fields, claim=True, **options)
    if request.status is not Status.ACTIVE or request.claimed is not None:
        return request
    _report(client, request.id, Outcome.ABORTED, "claimed credential lost in transit", pending=None)
    fresh = {name: value for name, value in options.items() if name != "idempotency_key"}
    return client.submit(*fields, claim=False, **fresh)


@dataclass(frozen=True, slots=True)
class Template:
    """What a gated function asks for; text fields may depend on the call's arguments."""

    action: Field
    action_class: ActionClass
    target: Field
    environment: Field
    justification: Field

    def render(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        def text(value: Field) -> str:
            return value(arguments) if callable(value) else value

        return {
            "action": text(self.action),
            "action_class": self.action_class,
            "target": text(self.target),
            "environment": text(self.environment),
            "justification": text(self.justification),
        }


def requires_approval(
    client: StepupClient,
    template: Template,
    *,
    exclude: tuple[str, ...],
    timeout: float,
    options: Mapping[str, Any],
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Each call submits its bound arguments as ``parameters``, so the approval and the
    credential (``args_digest``) are bound to exactly what the function receives.

    A ``credential`` keyword parameter, if the function has one, receives the credential and
    is left out of ``parameters``; names in ``exclude`` (``self``...) are left out too.
    """
    forbidden = {"parameters", "idempotency_key"} & set(options)
    if forbidden:
        raise TypeError(f"requires_approval sets {', '.join(sorted(forbidden))} itself")

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(func):
            raise TypeError("requires_approval gates synchronous functions only")
        signature = inspect.signature(func)
        wants_credential = _accepts_credential(signature)
        unknown = set(exclude) - set(signature.parameters)
        if unknown:
            raise TypeError(f"exclude names no parameter of {func.__qualname__}: {sorted(unknown)}")
        visible = signature.replace(
            parameters=[p for p in signature.parameters.values() if p.name != CREDENTIAL_PARAMETER]
        )

        @functools.wraps(func)
        def gate(*args: P.args, **kwargs: P.kwargs) -> R:
            if wants_credential and kwargs.pop(CREDENTIAL_PARAMETER, None) is not None:
                raise TypeError("the credential is supplied by stepup; do not pass one")
            bound = visible.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            parameters = {k: v for k, v in arguments.items() if k not in exclude}
            fields = template.render(arguments)
            with gated(
                client, **fields, timeout=timeout, parameters=parameters, **options
            ) as credential:
                if not wants_credential:
                    return func(*bound.args, **bound.kwargs)
                # Rebind on the full signature so `credential` lands in its own slot.
                full = signature.bind_partial()
                full.arguments = {
                    name: credential if name == CREDENTIAL_PARAMETER else arguments[name]
                    for name in signature.parameters
                    if name == CREDENTIAL_PARAMETER or name in arguments
                }
                return func(*full.args, **full.kwargs)

        return gate

    return decorate


def _accepts_credential(signature: inspect.Signature) -> bool:
    """Whether the function takes the credential, which callers then never pass.

    It must not shift the positions of other arguments: keyword-only, or the last positional.
    """
    names = list(signature.parameters)
    if CREDENTIAL_PARAMETER not in names:
        return False
    parameter = signature.parameters[CREDENTIAL_PARAMETER]
    positional = (
        parameter.POSITIONAL_ONLY,
        parameter.POSITIONAL_OR_KEYWORD,
        parameter.VAR_POSITIONAL,
    )
    after = [signature.parameters[n] for n in names[names.index(CREDENTIAL_PARAMETER) + 1 :]]
    if parameter.kind is parameter.KEYWORD_ONLY or (
        parameter.kind is parameter.POSITIONAL_OR_KEYWORD
        and not any(p.kind in positional for p in after)
    ):
        return True
    raise TypeError("make `credential` keyword-only (after `*`) or the last positional parameter")


def _check_digest(request: Request, expected: str | None) -> None:
    if expected is not None and request.parameters_digest != expected:
        raise ParametersMismatch(request.id, expected=expected, received=request.parameters_digest)


def _report(
    client: StepupClient,
    request_id: str,
    outcome: Outcome,
    detail: str,
    *,
    pending: BaseException | None,
) -> None:
    """Complete the request. While the block's own exception propagates, never mask it."""
    try:
        client.complete(request_id, outcome, detail)
    except StepupClientError as err:
        if (
            isinstance(err, ApiError)
            and err.status == 409
            and err.current_status in (Status.REVOKED.value, Status.EXPIRED.value)
        ):
            # Cut off meanwhile (by an approver, or its TTL): the credential is already dead.
            logger.warning("stepup %s was %s before it completed", request_id, err.current_status)
            return
        if pending is None:
            raise
        logger.error("stepup could not report %s for %s: %s", outcome.value, request_id, err)
        pending.add_note(f"stepup: reporting {outcome.value} for {request_id} failed: {err}")


def cancel_quietly(client: StepupClient, request_id: str) -> None:
    """Best effort: a failure is logged, never raised (another error is on its way)."""
    try:
        client.cancel(request_id)
    except StepupClientError as err:
        logger.warning("stepup could not cancel %s: %s", request_id, err)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
