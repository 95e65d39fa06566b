"""The store the use cases work against: a Protocol, so they run on SQL in production and on
an in-memory store in unit tests (``tests/unit/usecases/memory_store.py``).

A use case opens one transaction (``Store.write()`` or ``read()``) and gets a ``StoreTx``:
requests come out of it as plain ``RequestSnapshot`` values, never live rows, and go back in
as changes applied with a compare-and-set on the request's version. The audit log and the
outbox of that transaction commit or roll back with the change they record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from core.audit.events import AuditLog
from core.delegation import Delegation
from core.model import AgentIdentity, Status
from core.snapshots import CredentialInfo, RequestSnapshot, VoteInfo

# The fields of a request that change after submission; everything else is the intent and
# the policy's decision, fixed once recorded.
CHANGEABLE = frozenset(
    {
        "status",
        "expires_at",
        "decided_at",
        "status_reason",
        "outcome",
        "outcome_detail",
        "credential",
        "escalation_stage",
        "next_escalation_at",
        "break_glass_reviewed_at",
        "break_glass_reviewed_by",
    }
)


def advance(
    snapshot: RequestSnapshot, changes: Mapping[str, Any], now: datetime
) -> RequestSnapshot:
    """The request after ``changes`` were applied at ``now`` (one version later)."""
    unknown = set(changes) - CHANGEABLE
    if unknown:
        raise ValueError(f"not a changeable field of a request: {sorted(unknown)}")
    values = dict(changes)
    if "status" in values:
        values["status"] = Status(values["status"])
    return dataclasses.replace(snapshot, version=snapshot.version + 1, updated_at=now, **values)


@dataclass(frozen=True, slots=True)
class NewVote:
    """One approver's click as it is stored: who, what, and the signed decision record."""

    vote: VoteInfo
    signature: str  # the decision record as a JWS


@dataclass(frozen=True, slots=True)
class LiveCredential:
    """A credential as the database holds it, for introspection to hold a token's claims to:
    a token signed with a leaked key cannot borrow a live jti for another audience or scope."""

    agent_id: str
    scope: str
    audience: str
    expires_at: datetime
    jkt: str | None = None  # the DPoP key it is bound to (cnf.jkt), None for a bearer token


@dataclass(frozen=True, slots=True)
class NewCredential:
    request_id: str
    agent_id: str
    jti: str
    scope: str
    audience: str
    issued_at: datetime
    expires_at: datetime
    issuer: str | None = None  # None: the built-in JWT
    handle: str | None = None  # the issuer's handle (a role name, a lease id)
    issuer_config: str | None = None  # the issuer's settings record it was minted under
    jkt: str | None = None  # RFC 9449: the thumbprint of the DPoP key it is bound to

    @property
    def info(self) -> CredentialInfo:
        return CredentialInfo(self.jti, self.expires_at, None, None)


@dataclass(frozen=True, slots=True)
class LeasedRevocation:
    """An issuer-side revocation taken by this worker until its lease runs out."""

    jti: str
    request_id: str
    attempts: int
    issuer: str | None = None  # None: the built-in JWT (nothing to call)
    handle: str | None = None
    issuer_config: str | None = None  # revoke with these settings (IssuerConfig.record)


class OutboxSink(Protocol):
    """Where the notices of a transaction go (the outbox table, or a list in tests)."""

    def add(
        self, kind: str, request_id: str | None, payload: dict[str, Any], now: datetime
    ) -> None: ...


class StoreTx(Protocol):
    """One transaction. Reads return snapshots; writes are compare-and-set on versions."""

    @property
    def audit(self) -> AuditLog: ...

    @property
    def outbox(self) -> OutboxSink: ...

    # -- requests --------------------------------------------------------------------------

    def load(
        self, request_id: str, *, agent_id: str | None = None, lock: bool = False
    ) -> RequestSnapshot:
        """The request; NotFound when absent or another agent's (the two look alike)."""
        ...

    def load_many(self, request_ids: Sequence[str], *, lock: bool = False) -> list[RequestSnapshot]:
        """Those of ``request_ids`` that exist, in the order given (locked in id order)."""
        ...

    def find_by_idempotency_key(
        self, agent_id: str, key: str
    ) -> tuple[RequestSnapshot, str] | None:
        """The request an agent submitted with ``key``, and the digest of that body."""
        ...

    def insert(self, values: Mapping[str, Any]) -> RequestSnapshot:
        """A new request from its column values; Conflict on a reused idempotency key."""
        ...

    def save(
        self, changes: Sequence[tuple[RequestSnapshot, Mapping[str, Any]]], now: datetime
    ) -> None:
        """Apply each change only if its request is still at the snapshot's version; else
        Conflict (and the caller's transaction must be dropped)."""
        ...

    def list_requests(
        self,
        *,
        status: Sequence[str] | None = None,
        agent_id: str | None = None,
        limit: int = 100,
    ) -> list[RequestSnapshot]: ...

    def due(self, now: datetime, *, limit: int) -> list[str]:
        """Ids of live requests whose deadline (approval, claim window, TTL) has passed."""
        ...

    def due_escalations(self, now: datetime, *, limit: int) -> list[str]: ...

    def next_deadline(self) -> datetime | None: ...

    # -- votes and credentials -------------------------------------------------------------

    def add_vote(self, request_id: str, vote: NewVote) -> None:
        """Conflict if this Slack user already voted on the request (a racing double click)."""
        ...

    def add_credential(self, credential: NewCredential) -> None: ...

    def live_credential(self, jti: str) -> LiveCredential | None:
        """What stepup issued as ``jti``, if it is not on the revocation list."""
        ...

    def spend_dpop_proof(self, key: str, *, until: datetime, now: datetime) -> None:
        """Remember a DPoP proof (its ``VerifiedProof.replay_key``) until ``until``; Conflict
        if it was seen before and is still remembered. Forgets proofs past their time."""
        ...

    def revoke_credentials(
        self,
        credentials: Sequence[tuple[str, str]],
        *,
        reason: str,
        now: datetime,
        builtin_settled: bool = False,
    ) -> set[str]:
        """Put (request id, jti) credentials on the revocation list and queue the call to
        their issuer; returns the jtis that were not on the list yet. ``builtin_settled``:
        the built-in JWTs' revocation is the list alone, so theirs is recorded done (one
        attempt) instead of queued."""
        ...

    # -- issuer-side revocations -----------------------------------------------------------

    def lease_revocations(
        self, now: datetime, *, limit: int, until: datetime, jtis: Sequence[str] | None = None
    ) -> list[LeasedRevocation]:
        """Take due issuer revocations (no other worker takes them before ``until``); only
        those of ``jtis`` when given."""
        ...

    def logged_terms(self, request_id: str) -> dict[str, Any] | None:
        """The terms the audit log recorded for the request when the policy decided it."""
        ...

    def queue_revocation(
        self, request_id: str, issuer: str, handle: str, issuer_config: str, now: datetime
    ) -> str:
        """Queue the revocation of a credential an issuer minted but no claim recorded (a
        lost race); returns the id it is queued under."""
        ...

    def revocations_done(self, jtis: Sequence[str], now: datetime) -> dict[str, datetime | None]:
        """Mark them done; returns, for those not done before, when an alert was raised."""
        ...

    def revocation_failed(
        self, jti: str, *, error: str, retry_at: datetime, alert: bool, now: datetime
    ) -> bool | None:
        """Record a failed attempt; None if already done, else whether this call raised the
        alert (``alert`` asks for it; it is raised once)."""
        ...

    # -- agents ----------------------------------------------------------------------------

    def pending_count(self, agent_id: str) -> int:
        """Requests of ``agent_id`` pending; locks the agent against concurrent submissions
        until the transaction ends (the pending cap holds across replicas)."""
        ...

    def authenticate_workload(self, trust_name: str, subject: str) -> AgentIdentity:
        """The agent bound to a verified workload token's (trust, subject); Unauthenticated
        if none is, or it is disabled (docs/identity.md)."""
        ...

    def authenticate_agent(self, key: str, *, now: datetime) -> AgentIdentity:
        """Unauthenticated for an unknown or disabled key, or one whose end (a rotation's
        grace period) is not after ``now``."""
        ...

    # -- delegations (docs/delegation.md) --------------------------------------------------

    def add_delegation(self, delegation: Delegation) -> None: ...

    def delegation(self, delegation_id: str) -> Delegation | None: ...

    def delegations_of(self, request_id: str, *, agent_id: str | None = None) -> list[Delegation]:
        """The delegations of a request (to ``agent_id`` only, when given), oldest first."""
        ...

    def live_children(self, request_ids: Sequence[str]) -> list[str]:
        """Ids of the pending, approved or active requests whose parent is in ``request_ids``."""
        ...

    def callback_hosts(self, agent_id: str) -> frozenset[str]:
        """The hosts ``agent_id`` may name in a ``callback_url`` (docs/callbacks.md)."""
        ...

    def agent_enabled(self, agent_id: str) -> bool:
        """Whether ``agent_id`` is a registered agent that is not disabled."""
        ...


class Store(Protocol):
    def write(self) -> AbstractContextManager[StoreTx]:
        """A write transaction: commits when the block ends, rolls back on any exception."""
        ...

    def read(self) -> AbstractContextManager[StoreTx]: ...
