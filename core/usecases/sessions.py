"""The agent's session: claim the credential, complete, cancel; revocation by people."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from core.approvals import approver_emails, check_party
from core.credentials import CredentialGrant, IssuedCredential
from core.dpop import InvalidDpopProof, ProofOfPossession, VerifiedProof, verify_proof
from core.errors import Conflict, StepupError, Unauthenticated
from core.identity.presented import Presented
from core.issuers.base import Issued
from core.issuers.catalog import issuer_type
from core.lifecycle import Event
from core.model import AgentIdentity, Approver, SessionOutcome, Status
from core.snapshots import RequestSnapshot
from core.store import NewCredential, StoreTx
from core.usecases.delegating import claim_ttl
from core.usecases.minting import Minted, Minting
from core.usecases.parts import Parts
from core.usecases.transition import Step, UnitOfWork, changing

Caller = AgentIdentity | Presented
"""The agent, or what it presented: then it is authenticated in the transaction of the work
(one transaction per call, not two)."""


def _agent(tx: StoreTx, caller: Caller, now: datetime) -> AgentIdentity:
    return caller if isinstance(caller, AgentIdentity) else caller.authenticate(tx, now=now)


def verified(dpop: ProofOfPossession | None, now: datetime) -> VerifiedProof | None:
    """The proof checked (signature, method, URL, time: no database); InvalidDpopProof if not."""
    if dpop is None:
        return None
    return verify_proof(dpop.proof, method=dpop.method, url=dpop.urls, now=now)


def _spend(tx: StoreTx, proof: VerifiedProof | None, now: datetime) -> str | None:
    """The proof's key thumbprint, once the proof is recorded as used in ``tx`` (a replay:
    InvalidDpopProof, and the transaction is rolled back with everything else)."""
    if proof is None:
        return None
    try:
        tx.spend_dpop_proof(proof.replay_key, until=proof.spent_until, now=now)
    except Conflict:
        raise InvalidDpopProof("this DPoP proof was already used (make one per call)") from None
    return proof.jkt


@dataclass(frozen=True)
class Claimed:
    """A claim's outcome: the request, stepup's JWT (the proof of approval) and, for a rule
    with an issuer, what that issuer minted (its secret is in no log and no table)."""

    request: RequestSnapshot
    credential: IssuedCredential
    minted: Issued | None = None

    # Read as the pair it used to be: ``request, credential = claim(...)``, ``claim(...)[1]``.
    def __iter__(self) -> Iterator[Any]:
        return iter((self.request, self.credential))

    def __getitem__(self, index: int) -> Any:
        return (self.request, self.credential)[index]


def credential_ttl(snap: RequestSnapshot) -> timedelta:
    """The lifetime a claim gets: the rule's max TTL, shortened to what the agent asked, never
    below what the rule's issuer can mint (AWS STS: 15 minutes; the policy check guarantees
    the max TTL is not below that)."""
    terms = snap.terms
    ttl = terms.max_ttl
    if snap.requested_ttl_seconds:
        ttl = min(ttl, timedelta(seconds=snap.requested_ttl_seconds))
    if terms.issuer_type is not None:
        ttl = min(max(ttl, issuer_type(terms.issuer_type).min_ttl), terms.max_ttl)
    return ttl


def _whole_seconds(at: datetime) -> datetime:
    """The JWT's ``exp`` is a whole second, rounded down: the issuer is given the same."""
    return datetime.fromtimestamp(int(at.timestamp()), UTC)


class _IssuerBacked(Exception):
    """The request's rule has an issuer: the claim leaves its transaction to mint first."""

    def __init__(self, snapshot: RequestSnapshot, ttl: timedelta, agent: AgentIdentity) -> None:
        super().__init__(snapshot.id)
        self.snapshot = snapshot
        self.ttl = ttl  # the credential's lifetime (a delegated request's capped)
        self.agent = agent


class Sessions:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.minting = Minting(parts)

    def claim(
        self,
        request_id: str,
        caller: Caller,
        *,
        now: datetime,
        dpop: ProofOfPossession | None = None,
    ) -> Claimed:
        """Mint the credential of an approved request, once.

        With ``dpop`` (docs/dpop.md) the proof is verified and spent (a replay is refused) before
        anything else, and the credential is bound to its key (``cnf.jkt``); a rule with
        ``require_dpop`` refuses a claim without one. Either refusal claims nothing.

        A rule with an issuer (docs/issuers.md) has that issuer mint the real credential first,
        outside any transaction (a slow issuer must hold no lock); the claim is then recorded
        only if the request is still claimable, else the new credential is revoked at once. A
        failed issue records nothing but an audit entry: the request stays approved.

        The built-in JWT alone (no issuer, no proof) is one transaction, the caller's
        authentication included."""
        return self.claim_verified(request_id, caller, now=now, proof=verified(dpop, now))

    def claim_verified(
        self, request_id: str, caller: Caller, *, now: datetime, proof: VerifiedProof | None
    ) -> Claimed:
        """claim() with its DPoP proof, if any, already verified (``verified``): the proof is
        spent in the transaction that records the claim, so a replay claims nothing. A claim
        refused for any other reason spends it on its own (a proof is good for one try),
        unless the caller's key did not work."""
        try:
            return self._claim_verified(request_id, caller, now, proof)
        except Unauthenticated:
            raise
        except StepupError:
            if proof is not None:
                self._spend_alone(proof, now)
            raise

    def _claim_verified(
        self, request_id: str, caller: Caller, now: datetime, proof: VerifiedProof | None
    ) -> Claimed:
        try:
            return self._record_claim(request_id, caller, now, None, proof)
        except _IssuerBacked as backed:
            snap, ttl, agent = backed.snapshot, backed.ttl, backed.agent
        expires_at = _whole_seconds(now + ttl)
        minted = self.minting.mint(snap, agent, expires_at, now)
        try:
            return self._record_claim(request_id, agent, now, minted, proof)
        except BaseException:
            self.minting.discard(snap, minted, now)  # lost a race, or the write failed
            raise

    def _spend_alone(self, proof: VerifiedProof, now: datetime) -> None:
        """Record a proof whose claim was refused as used (already recorded: nothing to do)."""
        with contextlib.suppress(InvalidDpopProof), self.parts.store.write() as tx:
            _spend(tx, proof, now)

    def claim_new(
        self,
        tx: StoreTx,
        snap: RequestSnapshot,
        agent: AgentIdentity,
        now: datetime,
        proof: VerifiedProof | None,
    ) -> Claimed | None:
        """Claim a request in the transaction that has just recorded it (submit with
        ``claim``): recorded exactly as a separate claim would be. None when that takes more
        than this transaction: the request is not approved, its rule has an issuer (which
        mints outside any transaction), or it requires a DPoP proof that was not given."""
        if snap.status is not Status.APPROVED or snap.terms.issuer is not None:
            return None
        if snap.terms.require_dpop and proof is None:
            return None
        jkt = _spend(tx, proof, now)
        return self._claim_in(UnitOfWork(self.parts, tx, now), snap, agent, None, jkt)

    def _record_claim(
        self,
        request_id: str,
        caller: Caller,
        now: datetime,
        minted: Minted | None,
        proof: VerifiedProof | None,
    ) -> Claimed:
        with changing(self.parts, now) as unit:
            agent = _agent(unit.tx, caller, now)  # only a caller whose key works spends a proof
            jkt = _spend(unit.tx, proof, now)
            snap = unit.load(request_id, agent_id=agent.id)
            return self._claim_in(unit, snap, agent, minted, jkt)

    def _claim_in(
        self,
        unit: UnitOfWork,
        snap: RequestSnapshot,
        agent: AgentIdentity,
        minted: Minted | None,
        jkt: str | None,
    ) -> Claimed:
        now = unit.now
        unit.check(Step(snap, Event.CLAIM, agent.id))  # refuse before minting anything
        if snap.terms.require_dpop and jkt is None:
            raise InvalidDpopProof(
                "this request's rule requires a DPoP proof (RFC 9449) on the claim"
            )
        # A delegated request: capped by its parent, its chain in the token.
        ttl, line = claim_ttl(unit.tx, snap, credential_ttl(snap), now)
        if minted is None and snap.terms.issuer is not None:
            raise _IssuerBacked(snap, ttl, agent)  # rolled back: the issuer mints first
        issued = self.parts.issuer.issue(
            CredentialGrant(
                request_id=snap.id,
                agent=line.root_agent if line else snap.agent_id,
                audience=snap.target,
                scope=snap.action,
                args_digest=snap.parameters_digest,
                environment=snap.environment,
                approvers=approver_emails(snap.votes),
                on_behalf_of=snap.on_behalf_of,
                ttl=ttl,
                jkt=jkt,
                actors=line.actors if line else (),
                parent_request_id=snap.parent_request_id,
            ),
            now,
        )
        credential = NewCredential(
            request_id=snap.id,
            agent_id=snap.agent_id,
            jti=issued.handle,
            scope=issued.scope,
            audience=snap.target,
            issued_at=now,
            expires_at=issued.expires_at,
            issuer=minted.config.name if minted else None,
            handle=minted.issued.handle if minted else None,
            issuer_config=minted.config.record() if minted else None,
            jkt=jkt,
        )
        unit.tx.add_credential(credential)
        recorded: dict[str, Any] = {
            "jti": issued.handle,
            "expires_at": issued.expires_at.isoformat(),
            "scope": issued.scope,
            "aud": snap.target,
            "ttl_seconds": int(ttl.total_seconds()),
        }
        if jkt is not None:
            recorded["cnf"] = {"jkt": jkt}
        if minted is not None:
            recorded.update(
                credential_type=minted.config.type,
                issuer=minted.config.name,
                handle=minted.issued.handle,
                issuer_expires_at=minted.issued.expires_at.isoformat(),
            )
        (claimed,) = unit.apply(
            Step(
                snap,
                Event.CLAIM,
                agent.id,
                {"credential": credential.info, "expires_at": None},
                detail={"credential": recorded},
            )
        )
        return Claimed(claimed, issued, minted.issued if minted else None)

    def complete(
        self,
        request_id: str,
        caller: Caller,
        outcome: SessionOutcome,
        detail: str,
        *,
        now: datetime,
    ) -> RequestSnapshot:
        """The agent reports its outcome; the credential is revoked with it."""
        with changing(self.parts, now) as unit:
            agent = _agent(unit.tx, caller, now)
            snap = unit.load(request_id, agent_id=agent.id)
            (done,) = unit.apply(
                Step(
                    snap,
                    Event.COMPLETE,
                    agent.id,
                    {"outcome": outcome.value, "outcome_detail": detail},
                    reason=f"completed: {outcome.value}",
                    detail={"outcome": outcome.value, "detail": detail},
                )
            )
        return done

    def cancel(self, request_id: str, caller: Caller, *, now: datetime) -> RequestSnapshot:
        with changing(self.parts, now) as unit:
            agent = _agent(unit.tx, caller, now)
            snap = unit.load(request_id, agent_id=agent.id)
            (cancelled,) = unit.apply(
                Step(
                    snap,
                    Event.CANCEL,
                    agent.id,
                    {"expires_at": None, "status_reason": "cancelled by agent"},
                )
            )
        return cancelled

    def revoke(self, request_id: str, *, by: str, reason: str, now: datetime) -> RequestSnapshot:
        """An approver or admin cuts off an approved or active request."""
        with changing(self.parts, now) as unit:
            snap = unit.load(request_id)
            (revoked,) = unit.apply(
                Step(
                    snap,
                    Event.REVOKE,
                    by,
                    {"expires_at": None, "status_reason": reason},
                    reason=reason,
                )
            )
        return revoked

    def revoke_by_person(
        self,
        request_id: str,
        person: Approver,
        *,
        now: datetime,
        reason: str,
        usergroup_members: Mapping[str, frozenset[str]] | None = None,
    ) -> RequestSnapshot:
        """A person revokes: the request's approvers, its sponsor and the agent's owner may."""
        with self.parts.store.read() as tx:
            snap = tx.load(request_id)
        check_party(
            person,
            snap,
            groups=self.parts.policy.current.groups,
            now=now,
            usergroup_members=usergroup_members,
        )
        who = person.email or person.slack_user_id
        return self.revoke(request_id, by=who, reason=reason, now=now)
