"""The engine: one object that wires the use cases to their parts and answers for them.

Each use case is a small class of its own (``core/usecases/``) given the same ``Parts``; this
facade is what the edges hold. Every state change goes through
``core/usecases/transition.py``; see ``docs/architecture.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from core.credentials import CredentialIssuer, revocation_is_the_list
from core.dpop import ProofOfPossession
from core.identity.presented import Presented, present
from core.identity.workload import WorkloadVerifier
from core.keys import KeyRing
from core.model import AgentIdentity, Approver, Intent, SessionOutcome, Vote
from core.notices import NoticeKind
from core.policy import PolicyHolder
from core.snapshots import RequestSnapshot
from core.storage import identity_repo
from core.storage.database import Database
from core.storage.sql_store import SqlStore
from core.store import Store
from core.usecases.breakglass import BreakGlass
from core.usecases.deciding import Deciding, VoteResult
from core.usecases.delegating import Delegating
from core.usecases.escalating import Escalating
from core.usecases.exchanging import Exchanging
from core.usecases.expiry import Expiry, ExpiryResult
from core.usecases.limits import SubmitLimits
from core.usecases.parts import ChangeListener, Parts
from core.usecases.reading import Reading
from core.usecases.revoking import Revoking
from core.usecases.sessions import Caller, Claimed, Sessions
from core.usecases.submit_claim import SubmitClaim
from core.usecases.submitting import BeforeCommit, Submitting, intent_fields, terms_from

__all__ = ["ChangeListener", "ExpiryResult", "Stepup", "VoteResult", "intent_fields", "terms_from"]


class Stepup:
    """The whole engine. Construct with the database, policy holder, key ring and issuer
    (or, in unit tests, with any ``Store`` through ``Stepup.on_store``)."""

    def __init__(
        self,
        db: Database,
        policy: PolicyHolder,
        keyring: KeyRing,
        issuer: CredentialIssuer,
        *,
        issuer_url: str,
        security_channel: str | None = None,
        limits: SubmitLimits | None = None,
        slack: bool = True,
    ) -> None:
        """``slack=False`` when nothing delivers to Slack: no notice is queued."""
        self.db = db
        store = SqlStore(db, slack=slack)
        parts = Parts(store, policy, keyring, issuer, issuer_url, security_channel)
        parts.identity = WorkloadVerifier(identity_repo.trust_source(db))
        if limits is not None:
            parts.limits = limits
        self._wire(parts)

    @classmethod
    def on_store(cls, parts: Parts) -> Stepup:
        """The engine over any store (the in-memory one of the unit tests); no database."""
        engine = cls.__new__(cls)
        engine._wire(parts)
        return engine

    def _wire(self, parts: Parts) -> None:
        self.parts = parts
        self.reading = Reading(parts)
        self.submitting = Submitting(parts)
        self.deciding = Deciding(parts)
        self.sessions = Sessions(parts)
        self.expiry = Expiry(parts)
        self.escalating = Escalating(parts)
        self.breakglass = BreakGlass(parts)
        self.revoking = Revoking(parts)
        self.delegating = Delegating(parts)  # docs/delegation.md
        self.exchanging = Exchanging(parts, self.submitting, self.sessions)  # RFC 8693
        self.submit_claim = SubmitClaim(parts, self.submitting, self.sessions)
        if parts.revoke_soon is None:
            parts.revoke_soon = self.revoking.revoke_soon

    # -- parts -----------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        return self.parts.store

    @property
    def policy(self) -> PolicyHolder:
        return self.parts.policy

    @property
    def keyring(self) -> KeyRing:
        return self.parts.keyring

    @property
    def issuer_url(self) -> str:
        return self.parts.issuer_url

    @property
    def issuer(self) -> CredentialIssuer:
        return self.parts.issuer

    @issuer.setter
    def issuer(self, issuer: CredentialIssuer) -> None:
        self.parts.issuer = issuer

    @property
    def security_channel(self) -> str | None:
        return self.parts.security_channel

    @security_channel.setter
    def security_channel(self, channel: str | None) -> None:
        self.parts.security_channel = channel

    @property
    def expiry_batch(self) -> int:
        return self.expiry.expiry_batch

    @expiry_batch.setter
    def expiry_batch(self, size: int) -> None:
        self.expiry.expiry_batch = size

    def subscribe(self, listener: ChangeListener) -> None:
        """``listener`` hears of every committed change to a request."""
        self.parts.feed.subscribe(listener)

    @property
    def builtin_revocations_settled(self) -> bool:
        """Whether ending a session settles the built-in JWT's revocation in its own
        transaction (nothing for a revocation pass to do; docs/api.md#one-round-trip)."""
        return revocation_is_the_list(self.parts.issuer)

    def on_outbox(self, listener: Callable[[frozenset[str]], None]) -> None:
        """``listener`` hears the kinds of outbox entries each committed transaction of this
        process queued (a delivery worker wakes only when there is something for it). A store
        that cannot tell: every change to a request, with every kind."""
        register = getattr(self.parts.store, "on_outbox", None)
        if callable(register):
            register(listener)
            return
        every = frozenset(kind.value for kind in NoticeKind)
        self.subscribe(lambda _snapshot: listener(every))

    # -- agents ----------------------------------------------------------------------------

    def submit(
        self,
        agent: AgentIdentity,
        intent: Intent,
        *,
        now: datetime,
        idempotency_key: str | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> tuple[RequestSnapshot, bool]:
        return self.submitting.submit(
            agent, intent, now=now, idempotency_key=idempotency_key, before_commit=before_commit
        )

    def submit_by_key(
        self,
        key: str,
        draft: Callable[[str], Intent],
        *,
        now: datetime,
        idempotency_key: str | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> tuple[RequestSnapshot, bool]:
        return self.submitting.submit_by_key(
            key, draft, now=now, idempotency_key=idempotency_key, before_commit=before_commit
        )

    def submit_and_claim(
        self,
        key: str,
        draft: Callable[[str], Intent],
        *,
        now: datetime,
        idempotency_key: str | None = None,
        before_commit: BeforeCommit | None = None,
        dpop: ProofOfPossession | None = None,
    ) -> tuple[RequestSnapshot, bool, Claimed | None]:
        return self.submit_claim.submit_and_claim(
            key,
            draft,
            now=now,
            idempotency_key=idempotency_key,
            before_commit=before_commit,
            dpop=dpop,
        )

    def present(self, credential: str, *, now: datetime) -> Presented:
        """What a caller presented (a workload token is verified here); the agent behind it is
        looked up in the transaction of the work it asks for."""
        return present(self.parts.identity, credential, now=now)

    def claim(
        self,
        request_id: str,
        agent: Caller,
        *,
        now: datetime,
        dpop: ProofOfPossession | None = None,
    ) -> Claimed:
        return self.sessions.claim(request_id, agent, now=now, dpop=dpop)

    def complete(
        self,
        request_id: str,
        agent: Caller,
        outcome: SessionOutcome,
        detail: str,
        *,
        now: datetime,
    ) -> RequestSnapshot:
        return self.sessions.complete(request_id, agent, outcome, detail, now=now)

    def cancel(self, request_id: str, agent: Caller, *, now: datetime) -> RequestSnapshot:
        return self.sessions.cancel(request_id, agent, now=now)

    # -- approvers and admins --------------------------------------------------------------

    def vote(
        self,
        request_id: str,
        approver: Approver,
        vote: Vote,
        *,
        now: datetime,
        reason: str | None = None,
        confirmation: str | None = None,
        usergroup_members: Mapping[str, frozenset[str]] | None = None,
    ) -> VoteResult:
        return self.deciding.vote(
            request_id,
            approver,
            vote,
            now=now,
            reason=reason,
            confirmation=confirmation,
            usergroup_members=usergroup_members,
        )

    def request_card_refresh(self, request_id: str, *, now: datetime) -> None:
        self.deciding.request_card_refresh(request_id, now=now)

    def revoke(self, request_id: str, *, by: str, reason: str, now: datetime) -> RequestSnapshot:
        return self.sessions.revoke(request_id, by=by, reason=reason, now=now)

    def revoke_by_person(
        self,
        request_id: str,
        person: Approver,
        *,
        now: datetime,
        reason: str,
        usergroup_members: Mapping[str, frozenset[str]] | None = None,
    ) -> RequestSnapshot:
        return self.sessions.revoke_by_person(
            request_id, person, now=now, reason=reason, usergroup_members=usergroup_members
        )

    def review_break_glass(
        self,
        request_id: str,
        reviewer: Approver,
        *,
        now: datetime,
        usergroup_members: Mapping[str, frozenset[str]] | None = None,
    ) -> RequestSnapshot:
        return self.breakglass.review_break_glass(
            request_id, reviewer, now=now, usergroup_members=usergroup_members
        )

    # -- time ------------------------------------------------------------------------------

    def expire_due(self, *, now: datetime, limit: int = 500) -> list[ExpiryResult]:
        return self.expiry.expire_due(now=now, limit=limit)

    def expire_one(self, request_id: str, *, now: datetime) -> ExpiryResult | None:
        return self.expiry.expire_one(request_id, now=now)

    def next_deadline(self) -> datetime | None:
        return self.expiry.next_deadline()

    def escalate_due(self, *, now: datetime, limit: int = 500) -> list[str]:
        return self.escalating.escalate_due(now=now, limit=limit)

    def escalate_one(self, request_id: str, *, now: datetime) -> bool:
        return self.escalating.escalate_one(request_id, now=now)

    def process_revocations(self, *, now: datetime, limit: int = 200) -> int:
        return self.revoking.process_revocations(now=now, limit=limit)

    def sweep_orphans(self, *, now: datetime) -> int:
        return self.revoking.sweep_orphans(now)

    # -- reads -----------------------------------------------------------------------------

    def get(self, request_id: str, *, agent_id: str | None = None) -> RequestSnapshot:
        return self.reading.get(request_id, agent_id=agent_id)

    def get_as(self, request_id: str, caller: Presented, *, now: datetime) -> RequestSnapshot:
        """The request, for the agent ``caller`` authenticates as (one transaction)."""
        return self.reading.get_as(request_id, caller, now=now)

    def get_for_person(
        self,
        request_id: str,
        person: Approver,
        *,
        now: datetime,
        usergroup_members: Mapping[str, frozenset[str]] | None = None,
    ) -> RequestSnapshot:
        """The request if ``person`` is one of its parties; NotFound (as for no such id) if not."""
        return self.reading.get_for_person(
            request_id, person, now=now, usergroup_members=usergroup_members
        )

    def list_requests(
        self, *, status: list[str] | None = None, agent_id: str | None = None, limit: int = 100
    ) -> list[RequestSnapshot]:
        return self.reading.list_requests(status=status, agent_id=agent_id, limit=limit)

    def dashboard(
        self,
        person: Approver,
        *,
        now: datetime,
        usergroup_members: Mapping[str, frozenset[str]] | None = None,
    ) -> tuple[list[RequestSnapshot], list[RequestSnapshot]]:
        return self.reading.dashboard(person, now=now, usergroup_members=usergroup_members)

    def introspect(
        self, token: str, *, now: datetime, audiences: Collection[str] | None = None
    ) -> dict[str, Any]:
        """Active only for a token meant for ``audiences`` (the caller's; see Reading)."""
        return self.reading.introspect(token, now=now, audiences=audiences)
