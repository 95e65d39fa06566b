"""The agent's session: claim the credential, complete, cancel; revocation by people."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from core.approvals import approver_emails, check_party
from core.credentials import CredentialGrant, IssuedCredential
from core.dpop import InvalidDpopProof, ProofOfPossession, verify_proof
from core.errors import Conflict
from core.issuers.base import Issued
from core.issuers.catalog import issuer_type
from core.lifecycle import Event
from core.model import AgentIdentity, Approver, SessionOutcome
from core.snapshots import RequestSnapshot
from core.store import NewCredential
from core.usecases.delegating import claim_ttl
from core.usecases.minting import Minted, Minting
from core.usecases.parts import Parts
from core.usecases.transition import Step, changing


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

    def __init__(self, snapshot: RequestSnapshot, ttl: timedelta) -> None:
        super().__init__(snapshot.id)
        self.snapshot = snapshot
        self.ttl = ttl  # the credential's lifetime (a delegated request's capped)


class Sessions:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.minting = Minting(parts)

    def claim(
        self,
        request_id: str,
        agent: AgentIdentity,
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
        failed issue records nothing but an audit entry: the request stays approved."""
        jkt = None if dpop is None else self._spend_proof(dpop, now)
        try:
            return self._record_claim(request_id, agent, now, None, jkt)  # the built-in JWT alone
        except _IssuerBacked as backed:
            snap, ttl = backed.snapshot, backed.ttl
        expires_at = _whole_seconds(now + ttl)
        minted = self.minting.mint(snap, agent, expires_at, now)
        try:
            return self._record_claim(request_id, agent, now, minted, jkt)
        except BaseException:
            self.minting.discard(snap, minted, now)  # lost a race, or the write failed
            raise

    def _spend_proof(self, dpop: ProofOfPossession, now: datetime) -> str:
        """The proof's key thumbprint, once the proof verified and was recorded as used."""
        proof = verify_proof(dpop.proof, method=dpop.method, url=dpop.urls, now=now)
        try:
            with self.parts.store.write() as tx:
                tx.spend_dpop_proof(proof.replay_key, until=proof.spent_until, now=now)
        except Conflict:
            raise InvalidDpopProof("this DPoP proof was already used (make one per call)") from None
        return proof.jkt

    def _record_claim(
        self,
        request_id: str,
        agent: AgentIdentity,
        now: datetime,
        minted: Minted | None,
        jkt: str | None = None,
    ) -> Claimed:
        with changing(self.parts, now) as unit:
            snap = unit.load(request_id, agent_id=agent.id)
            unit.check(Step(snap, Event.CLAIM, agent.id))  # refuse before minting anything
            if snap.terms.require_dpop and jkt is None:
                raise InvalidDpopProof(
                    "this request's rule requires a DPoP proof (RFC 9449) on the claim"
                )
            # A delegated request: capped by its parent, its chain in the token.
            ttl, line = claim_ttl(unit.tx, snap, credential_ttl(snap), now)
            if minted is None and snap.terms.issuer is not None:
                raise _IssuerBacked(snap, ttl)  # rolled back: its issuer mints first, unlocked
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
        agent: AgentIdentity,
        outcome: SessionOutcome,
        detail: str,
        *,
        now: datetime,
    ) -> RequestSnapshot:
        """The agent reports its outcome; the credential is revoked with it."""
        with changing(self.parts, now) as unit:
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

    def cancel(self, request_id: str, agent: AgentIdentity, *, now: datetime) -> RequestSnapshot:
        with changing(self.parts, now) as unit:
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
