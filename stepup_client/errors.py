"""One error family for the client: catch ``StepupClientError`` to catch them all.

Constructors only store what they are given: no logging, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stepup_client.models import Request


class StepupClientError(Exception):
    """Base class of every error the client raises on purpose."""


class ApiError(StepupClientError):
    """The server answered with an RFC 9457 problem (or another error response)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        type: str = "about:blank",  # the RFC 9457 member name
        body: dict[str, Any] | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.body = body or {}
        self.attempts = attempts  # how many times the call was sent

    @property
    def current_status(self) -> str | None:
        """On a 409 for an illegal transition, the request's status at the time."""
        value = self.body.get("current_status")
        return value if isinstance(value, str) else None


class ConnectionFailed(StepupClientError):
    """The server could not be reached (or kept failing) after the retries."""


class ProtocolError(StepupClientError):
    """The server answered something this client cannot read."""


class ParametersMismatch(StepupClientError):
    """The server's request does not carry the digest of the parameters that were sent.

    The approval would not be bound to the arguments the agent is about to use, so the client
    refuses to go on.
    """

    def __init__(self, request_id: str, *, expected: str, received: str) -> None:
        super().__init__(
            f"request {request_id} carries parameters_digest {received}, expected {expected}"
        )
        self.request_id = request_id
        self.expected = expected
        self.received = received


class ParametersNotSerializable(StepupClientError, TypeError):
    """The parameters are not plain JSON (objects, arrays, strings, numbers, booleans, null)."""


class WaitTimeout(StepupClientError):
    """The request was still pending when the client stopped waiting."""

    def __init__(self, request: Request, waited_seconds: float) -> None:
        super().__init__(f"request {request.id} still {request.status} after {waited_seconds:.0f}s")
        self.request = request
        self.waited_seconds = waited_seconds


class RequestNotGranted(StepupClientError):
    """The request ended without a usable approval; ``request`` is its last state."""

    def __init__(self, request: Request) -> None:
        why = request.status_reason or "; ".join(request.reasons)
        text = f"request {request.id} is {request.status}"
        super().__init__(f"{text}: {why}" if why else text)
        self.request = request


class RequestDenied(RequestNotGranted):
    """The policy or an approver said no."""


class RequestExpired(RequestNotGranted):
    """Nobody decided before the approval deadline, or the claim window passed."""


class RequestCancelled(RequestNotGranted):
    """The agent withdrew the request."""


class RequestRevoked(RequestNotGranted):
    """An approver or admin cut the request off, or its credential's TTL ran out."""


class NotDpopBound(StepupClientError, ValueError):
    """A DPoP proof was asked of a credential that is not bound to a key (a ``Bearer`` token,
    from a server without DPoP or a client made with ``dpop=False``)."""
