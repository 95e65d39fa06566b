"""One error family for the engine. The edges map these to problem details or Slack text.

Constructors only store what they are given: no logging, no I/O.
"""

from __future__ import annotations


class StepupError(Exception):
    """Base class: ``title`` is a short stable summary, ``detail`` the human explanation."""

    title = "stepup error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class PolicyError(StepupError):
    """The policy file is malformed or inconsistent. ``location`` names rule and field."""

    title = "Invalid policy"

    def __init__(self, detail: str, *, location: str = "") -> None:
        super().__init__(f"{location}: {detail}" if location else detail)
        self.location = location


class ValidationFailed(StepupError):
    """Input that cannot be accepted as given (wrong shape, out of range)."""

    title = "Invalid input"


class NotFound(StepupError):
    """The object does not exist, or is not visible to the caller (the two look the same)."""

    title = "Not found"


class IllegalTransition(StepupError):
    """The requested lifecycle event is not allowed in the request's current status."""

    title = "Illegal transition"

    def __init__(self, detail: str, *, status: str = "", event: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.event = event


class Conflict(StepupError):
    """The operation lost a race or contradicts an earlier one (idempotency key reuse)."""

    title = "Conflict"


class LostRace(Conflict):
    """The database aborted the transaction to let a concurrent one through (a deadlock, a
    serialisation conflict). Nothing was written; the same call again succeeds."""


class DuplicateVote(Conflict):
    """The same person's click was already recorded (a racing double click)."""


class DuplicateIdempotencyKey(Conflict):
    """Another submission with the same Idempotency-Key committed first."""


class NotEligible(StepupError):
    """The person may not decide on this request (not an approver, sponsor, agent owner)."""

    title = "Not eligible to decide"

    def __init__(self, detail: str, *, why: str) -> None:
        super().__init__(detail)
        self.why = why  # "ineligible" | "sponsor" | "owner" | "already_decided"


class IssuerFailed(StepupError):
    """A credential issuer (PostgreSQL, Vault, AWS...) could not mint the credential. Nothing
    was claimed: the request is still approved and the claim can be retried."""

    title = "Credential issuer unavailable"


class Unauthenticated(StepupError):
    """A key or token was missing, unknown, disabled or malformed. Deliberately vague."""

    title = "Unauthenticated"

    def __init__(self, detail: str = "invalid or missing credentials") -> None:
        super().__init__(detail)


class InvalidToken(StepupError):
    """A credential failed verification. One opaque error for every reason, on purpose."""

    title = "Invalid token"

    def __init__(self, detail: str = "invalid token") -> None:
        super().__init__(detail)


class ConfigError(StepupError):
    """The service configuration is unusable (placeholder secret, unreadable key...)."""

    title = "Invalid configuration"


class AuditChainBroken(StepupError):
    """The audit chain failed verification; ``seq`` is the first bad entry."""

    title = "Audit chain broken"

    def __init__(self, detail: str, *, seq: int) -> None:
        super().__init__(f"entry {seq}: {detail}")
        self.seq = seq


class TooManyRequests(StepupError):
    """An agent is over one of its limits (``reason``: "pending" or "rate"); nothing was
    written. ``retry_after`` is a hint in whole seconds."""

    title = "Too many requests"

    def __init__(self, detail: str, *, reason: str, retry_after: int) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retry_after = max(1, retry_after)
