"""One round trip when nothing needs a human: submit with ``claim`` (docs/api.md).

A request the policy pre-authorises is claimed in the transaction that records it: the same
rows, audit entries and facts as a separate claim, one commit. Its rule's issuer, if any, mints
outside any transaction, so such a request is committed first and claimed right after, in the
same call. A request that is pending or denied is answered as a plain submit; so is one whose
claim cannot be made now (an issuer that fails, a rule requiring a DPoP proof that was not
sent): the request stays approved and the agent claims it as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from core.dpop import ProofOfPossession
from core.errors import StepupError
from core.model import AgentIdentity, Intent, Status
from core.snapshots import RequestSnapshot
from core.store import StoreTx
from core.usecases.parts import Parts
from core.usecases.sessions import Claimed, Sessions, verified
from core.usecases.submitting import BeforeCommit, Submitting

logger = logging.getLogger(__name__)


class SubmitClaim:
    def __init__(self, parts: Parts, submitting: Submitting, sessions: Sessions) -> None:
        self.parts = parts
        self.submitting = submitting
        self.sessions = sessions

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
        """submit_by_key(), then the claim of the new request if the policy pre-authorised it.
        Returns (request, created, claimed). A replayed Idempotency-Key claims nothing: the
        credential was returned once, by the first answer."""
        proof = verified(dpop, now)  # spent with the claim, in its transaction
        seen: list[AgentIdentity] = []
        claimed: list[Claimed] = []

        def claim_inline(
            tx: StoreTx, agent: AgentIdentity, created: RequestSnapshot
        ) -> RequestSnapshot:
            seen.append(agent)
            done = self.sessions.claim_new(tx, created, agent, now, proof)
            if done is None:
                return created
            claimed.append(done)
            return done.request

        snapshot, created = self.submitting.submit_by_key(
            key,
            draft,
            now=now,
            idempotency_key=idempotency_key,
            before_commit=before_commit,
            after_insert=claim_inline,
        )
        if claimed:
            return snapshot, created, claimed[0]
        if created and _claimable_after_commit(snapshot, proof is not None):
            try:
                late = self.sessions.claim_verified(snapshot.id, seen[0], now=now, proof=proof)
            except StepupError as exc:  # the request stays approved: the agent claims it
                logger.info("%s: submitted, not claimed in the same call: %s", snapshot.id, exc)
            else:
                return late.request, created, late
        return snapshot, created, None


def _claimable_after_commit(snapshot: RequestSnapshot, has_proof: bool) -> bool:
    """A pre-authorised request whose rule's issuer mints outside any transaction."""
    terms = snapshot.terms
    return (
        snapshot.status is Status.APPROVED
        and terms.issuer is not None
        and not (terms.require_dpop and not has_proof)
    )
