"""What a caller presented: an agent key (``stpa_…``) or a workload token (a JWT).

A workload token is verified before any transaction (its keys may need fetching); the binding
of its subject to an agent, like an agent key, is looked up in the transaction of the work.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from core.identity.workload import VerifiedWorkload, WorkloadVerifier, looks_like_jwt
from core.model import AgentIdentity


class Authenticates(Protocol):
    """The lookups a transaction offers (``core.store.StoreTx``)."""

    def authenticate_agent(self, key: str, *, now: datetime) -> AgentIdentity: ...

    def authenticate_workload(self, trust_name: str, subject: str) -> AgentIdentity: ...


@dataclass(frozen=True, slots=True)
class Presented:
    key: str | None = None
    workload: VerifiedWorkload | None = None

    def authenticate(self, tx: Authenticates, *, now: datetime) -> AgentIdentity:
        """The agent; Unauthenticated (the same for a key and a token) if there is none."""
        if self.workload is None:
            return tx.authenticate_agent(str(self.key), now=now)
        agent = tx.authenticate_workload(self.workload.trust, self.workload.subject)
        return replace(agent, sponsors=self.workload.sponsors)


def present(verifier: WorkloadVerifier, credential: str, *, now: datetime) -> Presented:
    """A JWT is verified now (Unauthenticated if it fails); anything else is an agent key."""
    if looks_like_jwt(credential):
        return Presented(workload=verifier.verify(credential, now=now))
    return Presented(key=credential)
